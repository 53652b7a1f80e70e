r"""Evaluates a trained model: the table of the reference implementations.

  python launch/eval.py --model_dir=runs/sesemi [--tta] [--checkpoint=...]

Rows raw / ema / tuned_raw / tuned_ema, columns labeled / valid / test
(accuracy in %). The headline figure is the test accuracy of the EMA model
where the run keeps one, else of the raw model, untuned; it is printed under
the table and stored as `headline` in eval_results.json.

"tuned" rows re-estimate the batch-norm moving statistics before evaluating
(`--tune`, recorded as `tune` in eval_results.json):

  stream (default; libml's `tune`): ordinary batch-norm moving-average
    updates (momentum `bn_momentum`) from the algorithm's own training-mode
    forward passes over its own training stream, augmented as in training,
    for `--tune_images` // (labeled batch) steps (16384 // 64 = 256 steps
    for the libml family). Only the batch-norm updates the algorithm keeps
    in training run (MixMatch's first interleaved batch, SESEMI's supervised
    branch); supervised training therefore tunes on labeled images only.
    Each tuned row re-estimates with its own weights' forward pass (libml
    runs the raw model's and gives its statistics to the EMA model too,
    which misfits wherever the raw weights swing far from their average,
    e.g. ReMixMatch's constant-rate Adam); both rows replay the same stream.
  exact: the population mean and pooled variance of every batch-norm layer
    over `--tune_images` un-augmented training images (labeled and
    unlabeled parts), computed per row (raw, EMA).

--no_tune skips the tuned rows. Data and params come from
MODEL_DIR/params.json; --data_dir and --dataset override them. The table is
printed and written to MODEL_DIR/eval_results.json.

--tta adds SESEMI's test-time oversampling: each image, one random ±1/±2
pixel shift of it (reflect fill) and Gaussian-noised copies of both (σ =
aug_noise_std), plus their horizontal flips when the run flips; softmax
averaged over the views.
"""

import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import fileio
from input_pipeline import inputs
from input_pipeline import preprocessing
from input_pipeline import sources
from model_fns import base
from model_fns import registry
from model_fns import spec as spec_lib
from model_fns.networks import layers
from runner import cli
from runner import model_dir as model_dir_lib
from runner import params as params_lib
from runner import results as results_lib

FLAGS = flags.FLAGS
TUNE_MODES = ('stream', 'exact')
# Seed offset of the tuning stream (a stream of its own, not training's).
TUNE_SEED_SALT = 7919


def define_flags():
  flags.DEFINE_string('model_dir', None, 'Model directory made by train.py.')
  flags.DEFINE_string('checkpoint', None, 'Checkpoint (default: the newest).')
  flags.DEFINE_string('data_dir', None, 'Overrides params.json\'s data_dir.')
  flags.DEFINE_string('dataset', None, 'Overrides params.json\'s dataset.')
  flags.DEFINE_integer('batch_size', 256, 'Evaluation batch size.')
  flags.DEFINE_integer('tune_images', 16384,
                       'Labeled training images (stream: steps x labeled '
                       'batch) used to re-estimate batch norm.')
  flags.DEFINE_enum('tune', 'stream', TUNE_MODES,
                    'How the tuned rows re-estimate batch norm: "stream" '
                    '(libml: BN moving-average updates on the algorithm\'s '
                    'own training stream) or "exact" (population statistics '
                    'over un-augmented labeled and unlabeled images).')
  flags.DEFINE_bool('tta', False, 'Also report SESEMI test-time oversampling.')
  flags.DEFINE_bool('no_tune', False, 'Skip the tuned rows.')


class _Graph(object):
  """Raw and EMA classifiers on one image placeholder, plus BN tuning."""

  def __init__(self, params):
    shape = [None] + list(params['image_shape'])
    self.images = tf.placeholder(tf.float32, shape, name='images')
    self.global_step = tf.train.get_or_create_global_step()
    model = base.Model(params)
    self.model = model
    self.has_ema = params.get('ema_decay', 0) > 0
    # The spec builder's raw and EMA models; the EMA (`model.ema`) is shared
    # with the losses of a stream tuning pass.
    raw, ema = spec_lib.inference_logits(model, self.images, self.has_ema)
    self.logits = {'raw': raw}
    getter = None
    if self.has_ema:
      self.logits['ema'] = ema
      getter = spec_lib.ema_getter(model.ema)
    # Training-mode passes whose batch moments re-estimate the statistics.
    self.moments = {}
    for row in self.logits:
      before = len(layers.get_moments())
      with tf.variable_scope(tf.get_variable_scope(),
                             custom_getter=getter if row == 'ema' else None,
                             reuse=True):
        model.embed(self.images, training=True)
      self.moments[row] = layers.get_moments()[before:]
    stats = []
    for m in self.moments['raw']:
      stats += [m.moving_mean, m.moving_variance]
    self.stat_vars = stats
    self.stat_values = [tf.placeholder(v.dtype.base_dtype, v.shape)
                        for v in stats]
    self.assign_stats = tf.group(*[v.assign(p) for v, p in
                                   zip(stats, self.stat_values)])
    self.probabilities = {k: tf.nn.softmax(v) for k, v in self.logits.items()}
    self.tune_ops = None
    self.tune_init = None
    self.tune_batch = None

  def add_stream_tuning(self, params, source, norm=None):
    """Builds the algorithm's training forward pass on its training stream.

    `self.tune_ops[row]` runs, for one batch of the stream and without any
    optimizer step, the batch-norm updates that training keeps
    (`LossResult.update_ops`, default every update op the losses created),
    with that row's weights (raw, or the EMA's shadows; the moving
    statistics are shared). `self.tune_init` restarts the stream;
    `self.tune_batch` is the labeled images per run of a tune op.
    """
    algorithm = registry.get(params['algorithm'])
    needs = algorithm.input_needs(params)
    seed = params.get('seed', 0) * 1000003 + TUNE_SEED_SALT
    dataset = inputs.train_input_fn(source, needs, params, seed=seed,
                                    norm=norm)()
    iterator = tf.data.make_initializable_iterator(dataset)
    self.tune_init = iterator.initializer
    features, labels = iterator.get_next()
    self.tune_ops = {}
    for row in self.logits:
      getter = spec_lib.ema_getter(self.model.ema) if row == 'ema' else None
      with tf.variable_scope(tf.get_variable_scope(), custom_getter=getter,
                             reuse=tf.AUTO_REUSE if getter else None):
        losses, created = base.ops_created_by(
            algorithm.train_losses, features, labels, params, self.model)
      update_ops = created if losses.update_ops is None else losses.update_ops
      self.tune_ops[row] = tf.group(*update_ops)
    self.tune_batch = needs.batch_size

  def stream_tune(self, sess, row, steps, start_stats):
    """Sets the moving statistics to `start_stats`, then runs `steps`
    batch-norm updates of `row`'s forward pass from the stream's start."""
    sess.run(self.assign_stats, dict(zip(self.stat_values, start_stats)))
    sess.run(self.tune_init)
    for _ in range(steps):
      sess.run(self.tune_ops[row])


def _batches(source, part, batch_size, params, limit=None, norm=None):
  """Yields (images, labels, mask) numpy batches of an eval stream.

  `norm`: the model directory's stored normalisation (None: the dataset's).
  """
  with tf.Graph().as_default():
    dataset = inputs.eval_input_fn(source, part, batch_size, params, norm)()
    element = tf.data.make_one_shot_iterator(dataset).get_next()
    if isinstance(element, tuple):
      element = element[0]
    seen = 0
    with tf.Session() as sess:
      while limit is None or seen < limit:
        try:
          batch = sess.run(element)
        except tf.errors.OutOfRangeError:
          return
        seen += int(batch['mask'].sum())
        yield batch['image'], batch['label'], batch['mask']


def _tta_views(images, params, rng):
  """SESEMI's oversampled views of a normalised batch [N,H,W,C]."""
  n, h, w, _ = images.shape
  shift = max(1, min(2, params.get('aug_shift', 2)))
  padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)),
                  mode='reflect')
  shifted = np.empty_like(images)
  for i in range(n):
    dy, dx = rng.randint(-shift, shift + 1, size=2)
    shifted[i] = padded[i, shift + dy:shift + dy + h, shift + dx:shift + dx + w]
  sigma = params.get('aug_noise_std', 0.15)
  views = [images, shifted,
           images + rng.normal(0, sigma, images.shape).astype(np.float32),
           shifted + rng.normal(0, sigma, images.shape).astype(np.float32)]
  if params.get('aug_flip', False):
    views += [v[:, :, ::-1] for v in views]
  return views


def _accuracy(sess, graph, row, batches, params, tta=False):
  correct = total = 0.
  rng = np.random.RandomState(params.get('seed', 0))
  prob = graph.probabilities[row]
  for images, labels, mask in batches:
    if tta:
      p = np.mean([sess.run(prob, {graph.images: v})
                   for v in _tta_views(images, params, rng)], axis=0)
    else:
      p = sess.run(prob, {graph.images: images})
    correct += float(np.sum((p.argmax(1) == labels) * mask))
    total += float(np.sum(mask))
  return 100. * correct / total if total else None


def _tuned_stats(sess, graph, row, source, params, batch_size, tune_images,
                 norm=None):
  """Population mean/variance of every BN layer over training images."""
  moments = graph.moments[row]
  fetch = [(m.batch_mean, m.batch_variance) for m in moments]
  sums = None
  count = 0
  for part in ('labeled', 'unlabeled'):
    if not source.counts.get(part):
      continue
    limit = tune_images // 2 if part == 'labeled' else tune_images - count
    for images, _, mask in _batches(source, part, batch_size, params, limit,
                                    norm):
      if mask.min() < 1:  # A padded batch would bias the moments.
        images = images[mask > 0]
        if len(images) < 2:
          continue
      values = sess.run(fetch, {graph.images: images})
      n = len(images)
      # Accumulate E[x] and E[x^2] per layer, weighted by images.
      if sums is None:
        sums = [[np.zeros_like(m), np.zeros_like(m)] for m, _ in values]
      for acc, (mean, var) in zip(sums, values):
        acc[0] += n * mean
        acc[1] += n * (var + mean ** 2)
      count += n
  if not count:
    return None
  stats = []
  for first, second in sums:
    mean = first / count
    stats += [mean, np.maximum(second / count - mean ** 2, 0.)]
  return stats


def _table_of(sess, graph, row, source, columns, batch_size, params,
              norm=None):
  return collections.OrderedDict(
      (c, _accuracy(sess, graph, row,
                    _batches(source, c, batch_size, params, norm=norm),
                    params))
      for c in columns)


def evaluate(params, checkpoint, batch_size=256, tune_images=16384, tta=False,
             tune='stream', printer=print, norm=None):
  """Returns the results dict (rows × columns, accuracy in %).

  `tune`: one of TUNE_MODES, or None / False to skip the tuned rows (True
  means 'stream'). `norm`: the model directory's stored normalisation
  (None: the dataset's).
  """
  if tune is True:
    tune = 'stream'
  if tune and tune not in TUNE_MODES:
    raise ValueError('tune must be one of %s, got %r'
                     % (', '.join(TUNE_MODES), tune))
  source = sources.resolve(params['data_dir'], params['dataset'])
  columns = [c for c in results_lib.COLUMNS if source.counts.get(c)]
  results = collections.OrderedDict()
  tune_record = None
  start = time.time()
  with tf.Graph().as_default():
    graph = _Graph(params)
    if tune == 'stream':
      graph.add_stream_tuning(params, source, norm)
    saver = tf.train.Saver(tf.global_variables())
    with tf.Session() as sess:
      saver.restore(sess, checkpoint)
      trained_stats = sess.run(graph.stat_vars)
      for row in graph.logits:
        results[row] = _table_of(sess, graph, row, source, columns,
                                 batch_size, params, norm)
      if tune == 'stream' and tune_images > 0:
        steps = max(1, tune_images // graph.tune_batch)
        for row in list(graph.logits):
          graph.stream_tune(sess, row, steps, trained_stats)
          results['tuned_' + row] = _table_of(sess, graph, row, source,
                                              columns, batch_size, params, norm)
        sess.run(graph.assign_stats,
                 dict(zip(graph.stat_values, trained_stats)))
        tune_record = {'mode': 'stream', 'steps': steps,
                       'batch': graph.tune_batch,
                       'images': steps * graph.tune_batch, 'per_row': True}
      elif tune == 'exact':
        tune_record = {'mode': 'exact', 'images': tune_images}
        for row in list(graph.logits):
          stats = _tuned_stats(sess, graph, row, source, params, batch_size,
                               tune_images, norm)
          if stats is None:
            continue
          sess.run(graph.assign_stats, dict(zip(graph.stat_values, stats)))
          results['tuned_' + row] = _table_of(sess, graph, row, source,
                                              columns, batch_size, params, norm)
          sess.run(graph.assign_stats,
                   dict(zip(graph.stat_values, trained_stats)))
      if tta:
        row = 'ema' if graph.has_ema else 'raw'
        results['tta_' + row] = collections.OrderedDict(
            (c, _accuracy(sess, graph, row,
                          _batches(source, c, batch_size, params, norm=norm),
                          params, tta=True))
            for c in columns)
  report = {
      'checkpoint': checkpoint,
      'step': model_dir_lib.checkpoint_step(checkpoint),
      'dataset': params['dataset'],
      'algorithm': params['algorithm'],
      'network': params['network'],
      'metric': 'accuracy_percent',
      'counts': {c: source.counts[c] for c in columns},
      'results': results,
      'tune': tune_record,
      'seconds': round(time.time() - start, 1),
  }
  report['headline'] = results_lib.headline(report)
  return report


def describe(results):
  """Lines under the table: the headline and how "tuned" was computed."""
  top = results.get('headline') or results_lib.headline(results)
  value = top['accuracy']
  tuned = (results['results'].get('tuned_' + top['row']) or {}).get(
      top['column'])
  lines = ['headline: %s accuracy of the %s model, untuned: %s%s'
           % (top['column'], 'EMA' if top['row'] == 'ema' else 'raw',
              '-' if value is None else '%.2f%%' % value,
              '' if tuned is None else ' (tuned_%s: %.2f%%)' % (top['row'],
                                                                 tuned))]
  tune = results.get('tune')
  if not tune:
    lines.append('tuned rows: not computed')
  elif tune['mode'] == 'stream':
    lines.append('tuned rows (--tune=stream): %d batch-norm update steps on '
                 'the training stream (%d labeled images a step)%s'
                 % (tune['steps'], tune['batch'],
                    ', each row with its own weights' if tune.get('per_row')
                    else ''))
  else:
    lines.append('tuned rows (--tune=exact): population statistics over up '
                 'to %d un-augmented training images' % tune['images'])
  return lines


def format_table(results):
  """The reference implementations' table as text."""
  rows = results['results']
  columns = [c for c in results_lib.COLUMNS if c in results['counts']]
  lines = ['%16s' % '' + ''.join('%10s' % c for c in columns)]
  for row in list(results_lib.ROWS) + [r for r in rows
                                       if r not in results_lib.ROWS]:
    values = rows.get(row)
    cells = ''.join('%10s' % ('-' if not values or values.get(c) is None
                              else '%.2f' % values[c]) for c in columns)
    lines.append('%16s%s' % (row, cells))
  return '\n'.join(lines)


def run(model_dir, checkpoint=None, data_dir=None, dataset=None,
        batch_size=256, tune_images=16384, tta=False, tune='stream',
        printer=print):
  params = params_lib.load(model_dir)
  if data_dir:
    params['data_dir'] = data_dir
  if dataset:
    params['dataset'] = dataset
  params_lib.check_batch_memory('batch_size', batch_size, batch_size,
                                params['image_shape'])
  if checkpoint:
    model_dir_lib.check_checkpoint(checkpoint, '--checkpoint')
  checkpoint = checkpoint or model_dir_lib.latest_checkpoint(model_dir)
  if not checkpoint:
    raise cli.UsageError('no checkpoint in %s: train first' % model_dir)
  model_dir_lib.check_checkpoint(checkpoint)
  with sources.reading(params['data_dir'], params['dataset']):
    results = evaluate(params, checkpoint, batch_size, tune_images, tta, tune,
                       printer, norm=preprocessing.stored_norm(model_dir))
  printer('%s at step %d (%s, %s):' % (params['algorithm'], results['step'],
                                       params['network'], params['dataset']))
  printer(format_table(results))
  for line in describe(results):
    printer(line)
  path = os.path.join(model_dir, results_lib.RESULTS_FILE)
  fileio.write_atomic(path, json.dumps(results, indent=2) + '\n')
  printer('wrote %s' % path)
  return results


def main(argv):
  del argv
  if not FLAGS.model_dir:
    raise cli.UsageError('--model_dir is required')
  if FLAGS.batch_size <= 0 or FLAGS.tune_images < 0:
    raise cli.UsageError('--batch_size must be positive and --tune_images '
                         'not negative')
  run(cli.resolve_path(FLAGS.model_dir), cli.resolve_path(FLAGS.checkpoint),
      cli.resolve_path(FLAGS.data_dir), FLAGS.dataset, FLAGS.batch_size,
      FLAGS.tune_images, FLAGS.tta, None if FLAGS.no_tune else FLAGS.tune)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
