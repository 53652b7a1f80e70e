r"""Evaluates a trained model: the table of the reference implementations.

  python launch/eval.py --model_dir=runs/sesemi [--tta] [--checkpoint=...]

Rows raw / ema / tuned_raw / tuned_ema, columns labeled / valid / test
(accuracy in %). "tuned" re-estimates the batch-norm statistics from
training-mode forward passes over training images (labeled and unlabeled
parts) before evaluating: the mean of the batch means and the pooled
variance over `--tune_images` images, instead of the moving averages
accumulated during training. Data and params come from MODEL_DIR/params.json;
--data_dir and --dataset override them. The table is printed and written to
MODEL_DIR/eval_results.json.

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
from launch import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import inputs
from input_pipeline import preprocessing
from input_pipeline import sources
from launch import cli
from launch import model_dir as model_dir_lib
from launch import params as params_lib
from model_fns import base
from model_fns import spec as spec_lib
from model_fns.networks import layers

FLAGS = flags.FLAGS
RESULTS_FILE = 'eval_results.json'
ROWS = ('raw', 'ema', 'tuned_raw', 'tuned_ema')
COLUMNS = ('labeled', 'valid', 'test')


def define_flags():
  flags.DEFINE_string('model_dir', None, 'Model directory made by train.py.')
  flags.DEFINE_string('checkpoint', None, 'Checkpoint (default: the newest).')
  flags.DEFINE_string('data_dir', None, 'Overrides params.json\'s data_dir.')
  flags.DEFINE_string('dataset', None, 'Overrides params.json\'s dataset.')
  flags.DEFINE_integer('batch_size', 256, 'Evaluation batch size.')
  flags.DEFINE_integer('tune_images', 16384,
                       'Training images used to re-estimate batch norm.')
  flags.DEFINE_bool('tta', False, 'Also report SESEMI test-time oversampling.')
  flags.DEFINE_bool('no_tune', False, 'Skip the tuned rows.')


class _Graph(object):
  """Raw and EMA classifiers on one image placeholder, plus BN tuning."""

  def __init__(self, params):
    shape = [None] + list(params['image_shape'])
    self.images = tf.placeholder(tf.float32, shape, name='images')
    model = base.Model(params)
    self.logits = {'raw': model.logits(self.images, training=False)}
    self.has_ema = params.get('ema_decay', 0) > 0
    getter = None
    if self.has_ema:
      # Same construction as the spec builder's, so the shadow variables
      # have the checkpoint's names.
      ema = tf.train.ExponentialMovingAverage(params['ema_decay'])
      ema.apply(tf.trainable_variables())
      getter = spec_lib.ema_getter(ema)
      with tf.variable_scope(tf.get_variable_scope(), custom_getter=getter,
                             reuse=True):
        self.logits['ema'] = model.logits(self.images, training=False)
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


def evaluate(params, checkpoint, batch_size=256, tune_images=16384, tta=False,
             tune=True, printer=print, norm=None):
  """Returns the results dict (rows × columns, accuracy in %).

  `norm`: the model directory's stored normalisation (None: the dataset's).
  """
  source = sources.resolve(params['data_dir'], params['dataset'])
  columns = [c for c in COLUMNS if source.counts.get(c)]
  results = collections.OrderedDict()
  start = time.time()
  with tf.Graph().as_default():
    graph = _Graph(params)
    saver = tf.train.Saver(tf.global_variables())
    with tf.Session() as sess:
      saver.restore(sess, checkpoint)
      trained_stats = sess.run(graph.stat_vars)
      for row in graph.logits:
        results[row] = collections.OrderedDict(
            (c, _accuracy(sess, graph, row,
                          _batches(source, c, batch_size, params, norm=norm),
                          params))
            for c in columns)
      if tune:
        for row in list(graph.logits):
          stats = _tuned_stats(sess, graph, row, source, params, batch_size,
                               tune_images, norm)
          if stats is None:
            continue
          sess.run(graph.assign_stats, dict(zip(graph.stat_values, stats)))
          results['tuned_' + row] = collections.OrderedDict(
              (c, _accuracy(sess, graph, row,
                            _batches(source, c, batch_size, params, norm=norm),
                            params))
              for c in columns)
          sess.run(graph.assign_stats,
                   dict(zip(graph.stat_values, trained_stats)))
      if tta:
        row = 'ema' if graph.has_ema else 'raw'
        results['tta_' + row] = collections.OrderedDict(
            (c, _accuracy(sess, graph, row,
                          _batches(source, c, batch_size, params, norm=norm),
                          params, tta=True))
            for c in columns)
  return {
      'checkpoint': checkpoint,
      'step': model_dir_lib.checkpoint_step(checkpoint),
      'dataset': params['dataset'],
      'algorithm': params['algorithm'],
      'network': params['network'],
      'metric': 'accuracy_percent',
      'counts': {c: source.counts[c] for c in columns},
      'results': results,
      'seconds': round(time.time() - start, 1),
  }


def format_table(results):
  """The reference implementations' table as text."""
  rows = results['results']
  columns = [c for c in COLUMNS if c in results['counts']]
  lines = ['%16s' % '' + ''.join('%10s' % c for c in columns)]
  for row in list(ROWS) + [r for r in rows if r not in ROWS]:
    values = rows.get(row)
    cells = ''.join('%10s' % ('-' if not values or values.get(c) is None
                              else '%.2f' % values[c]) for c in columns)
    lines.append('%16s%s' % (row, cells))
  return '\n'.join(lines)


def run(model_dir, checkpoint=None, data_dir=None, dataset=None,
        batch_size=256, tune_images=16384, tta=False, tune=True,
        printer=print):
  params = params_lib.load(model_dir)
  if data_dir:
    params['data_dir'] = data_dir
  if dataset:
    params['dataset'] = dataset
  checkpoint = checkpoint or model_dir_lib.latest_checkpoint(model_dir)
  if not checkpoint:
    raise cli.UsageError('no checkpoint in %s: train first' % model_dir)
  results = evaluate(params, checkpoint, batch_size, tune_images, tta, tune,
                     printer, norm=preprocessing.stored_norm(model_dir))
  printer('%s at step %d (%s, %s):' % (params['algorithm'], results['step'],
                                       params['network'], params['dataset']))
  printer(format_table(results))
  path = os.path.join(model_dir, RESULTS_FILE)
  model_dir_lib.write_atomic(path, json.dumps(results, indent=2) + '\n')
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
      FLAGS.tune_images, FLAGS.tta, not FLAGS.no_tune)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
