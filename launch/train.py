r"""Trains a semi-supervised classifier with periodic evaluation and resume.

  python launch/train.py --flagfile=launch/configs/sesemi_fmnist_quickstart.cfg \
      --data_dir=DATA --model_dir=runs/sesemi
  bazel run //launch:train -- --flagfile=... (relative paths are resolved
      against the directory bazel was run from)

Hyperparameters: algorithm defaults < --flagfile < explicit flags (see
runner/params.py). The resolved params go to MODEL_DIR/params.json; running
again with the same MODEL_DIR resumes from the newest checkpoint, and refuses
params that would change the graph.

Faults (README "What happens when..."): every flag and the data's
description are checked before any work (exit 2); one process at a time
holds MODEL_DIR/.lock (runner/model_dir.py); a NaN or Inf loss stops
training before the bad state is checkpointed (hooks.FiniteGuardHook,
exit 1); a write the file system refuses (full disk, file-size limit) stops
with the file named and the previous checkpoint intact (exit 1); a damaged
shard found while training is named after re-checking the data (exit 1).

With --distribution_strategy (runner/distribute.py, docs/distributed.md)
training runs through tf.estimator.train_and_evaluate on the cluster of
TF_CONFIG; the chief alone takes the lock, cleans MODEL_DIR, checks the data
and writes params.json; --batch_size is per replica.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import dataset_info
from input_pipeline import inputs
from input_pipeline import preprocessing
from input_pipeline import records
from input_pipeline import sources
from input_pipeline import splits as splits_lib
from input_pipeline import writer
from input_pipeline.errors import DataError
from model_fns import core
from model_fns import registry
from runner import cli
from runner import devices
from runner import distribute
from runner import hooks
from runner import model_dir as model_dir_lib
from runner import params as params_lib

FLAGS = flags.FLAGS

# The labeled part is checked record by record before training when it holds
# at most this many images (a second or two): one_hot turns a label out of
# range into a silent all-zero target instead of an error.
LABELED_CHECK_MAX = 20000
# Test images stored in MODEL_DIR for the export check (export --verify_images).
EXPORT_CHECK_IMAGES = 64


def define_flags():
  flags.DEFINE_string('data_dir', None, 'Prepared data (launch/prepare_data.py).')
  flags.DEFINE_string('dataset', None,
                      'Split name NAME.SEED@LABELS-VALID[.TAG], or a dataset '
                      'name (with --labels: NAME.SEED@LABELS-VALID).')
  flags.DEFINE_string('model_dir', None, 'Checkpoints, events, params.json.')
  flags.DEFINE_string('result', None, 'Alias of --model_dir (SESEMI seed).')
  flags.DEFINE_integer('labels', None, 'With a bare --dataset name: labeled '
                       'images of the split (SESEMI seed flag).')
  flags.DEFINE_integer('valid', 0, 'With --labels: validation images.')
  flags.DEFINE_integer('eval_batch_size', 256, 'Batch size of evaluation.')
  flags.DEFINE_bool('verify_data', False, 'Before training, check every shard '
                    'read (sha256, then every record: CRC, image shape, label '
                    'range). Without it only the labeled part is checked so '
                    '(when it holds at most %d images).' % LABELED_CHECK_MAX)
  params_lib.define_flags()
  devices.define_flags()
  distribute.define_flags()


def dataset_name(flag_values):
  """The split to train on, from --dataset (and the seed's --labels)."""
  name = flag_values.dataset
  if not name:
    raise cli.UsageError('--dataset is required (e.g. fashion_mnist.1@1000-5000)')
  if flag_values.labels is not None:
    if '@' in name:
      raise cli.UsageError('--labels conflicts with the split in --dataset=%s'
                           % name)
    seed = flag_values.seed if flag_values.seed is not None else 1
    name = '%s.%d@%d-%d' % (name, seed, flag_values.labels, flag_values.valid)
  return name


def check_options(opts, flag_values):
  """UsageError for run options that cannot work (before any work)."""
  for key in ('save_checkpoints_steps', 'log_every_steps',
              'iterations_per_loop'):
    if opts[key] is None or opts[key] < 1:
      raise cli.UsageError('--%s must be positive, got %r' % (key, opts[key]))
  if opts['keep_checkpoint_max'] < 0:  # 0 keeps every checkpoint.
    raise cli.UsageError('--keep_checkpoint_max must not be negative, got %r'
                         % opts['keep_checkpoint_max'])
  if flag_values.eval_batch_size < 1:
    raise cli.UsageError('--eval_batch_size must be positive, got %r'
                         % flag_values.eval_batch_size)


def check_dataset(data_dir, name):
  """UsageError for a dataset that was never prepared or a split that cannot
  be drawn from it; a split that can but was not created yet is left to
  sources.resolve (DataError giving the command that creates it)."""
  if not os.path.isdir(data_dir):
    raise cli.UsageError('--data_dir %s does not exist' % data_dir)
  parsed = splits_lib.parse_split_name(name) if '@' in name else None
  if parsed is None:
    writer.check_name(name)  # ValueError (exit 2) for '../x' and the like.
  base = parsed.name if parsed else name
  if not os.path.isfile(os.path.join(data_dir, base, dataset_info.INFO_FILE)):
    prepared = dataset_info.prepared_datasets(data_dir)
    raise cli.UsageError('--dataset=%s: unknown dataset %r, not prepared in '
                         '%s (prepared: %s)' % (name, base, data_dir,
                                                ', '.join(prepared) or 'none'))
  if parsed is None:
    return
  _, info = dataset_info.load_named(data_dir, base)
  split_file = os.path.join(data_dir, base, splits_lib.SPLITS_DIR, name,
                            splits_lib.SPLIT_FILE)
  if os.path.isfile(split_file):
    return
  count = info['splits']['train']['count']
  classes = info['num_classes']
  if parsed.labels > count:
    raise cli.UsageError('--dataset=%s: %d labels, more than the %d training '
                         'images of %s' % (name, parsed.labels, count, base))
  if not parsed.tag and (parsed.labels < classes or
                         parsed.labels % classes):
    raise cli.UsageError('--dataset=%s: %d labels cannot be split evenly over '
                         'the %d classes (use a positive multiple of %d)'
                         % (name, parsed.labels, classes, classes))
  if parsed.labels + parsed.valid > count:
    raise cli.UsageError('--dataset=%s: a validation set of %d is too large: '
                         '%d labels + %d valid > %d training images'
                         % (name, parsed.valid, parsed.labels, parsed.valid,
                            count))


def check_memory(params, needs, eval_batch_size, memory=None):
  """UsageError for a batch whose tensors cannot fit in this machine's RAM
  (params.check_batch_memory), before any work. A batch larger than the
  labeled set is fine (the labeled stream repeats)."""
  params_lib.check_batch_memory('batch_size', params['batch_size'],
                                needs.images_per_step,
                                params['image_shape'], memory)
  params_lib.check_batch_memory('eval_batch_size', eval_batch_size,
                                eval_batch_size, params['image_shape'], memory)


def check_steps(params, opts):
  """UsageError when iterations_per_loop does not divide the step counts."""
  loop = opts['iterations_per_loop']
  for key, value in (('train_steps', params['train_steps']),
                     ('save_checkpoints_steps', opts['save_checkpoints_steps'])):
    if value % loop:
      raise cli.UsageError('--iterations_per_loop=%d does not divide '
                           '--%s=%d' % (loop, key, value))


def run(flag_values, printer=print):
  """Trains (or resumes) and returns the last evaluation's metrics."""
  opts = devices.options_from_flags(flag_values)
  check_options(opts, flag_values)
  strategy = flag_values.distribution_strategy
  cluster = distribute.resolve(strategy, flag_values.cpu_replicas)
  device = devices.resolve_device(opts['device'])  # Early without npu_bridge.
  distribute.check_device(strategy, device)
  note = devices.precision_note(opts, device)
  if note:
    printer(note)
  # Ascend ranks: (RANK_SIZE, RANK_ID), checked here before any work.
  shard = devices.input_shard(opts) if strategy == 'off' else None
  data_dir = cli.resolve_path(flag_values.data_dir)
  if not data_dir:
    raise cli.UsageError('--data_dir is required')
  model_dir = flag_values.model_dir or flag_values.result
  if not model_dir:
    raise cli.UsageError('--model_dir is required')
  name = dataset_name(flag_values)
  check_dataset(data_dir, name)
  with sources.reading(data_dir, name):
    return _run(flag_values, printer, opts, strategy, cluster, shard, data_dir,
                model_dir, name)


def _run(flag_values, printer, opts, strategy, cluster, shard, data_dir,
         model_dir, name):
  """`run` holding the data's shared locks (sources.reading)."""
  model_dir = cli.resolve_path(model_dir)
  model_dir_lib.check_writable(model_dir)
  source = sources.resolve(data_dir, name)
  params = params_lib.resolve(
      flag_values, params_lib.data_facts(source, data_dir, name))
  algorithm = registry.get(params['algorithm'])
  try:
    params['train_steps'] = registry.default_train_steps(params, source.counts)
  except ValueError as e:
    raise cli.UsageError(str(e))
  params_lib.scale_schedules(params, params_lib.explicit_keys(flag_values))
  try:
    needs = algorithm.input_needs(params)
  except ValueError as e:
    raise cli.UsageError(str(e))
  params_lib.add_data_params(params, needs, source)
  check_steps(params, opts)
  check_memory(params, needs, flag_values.eval_batch_size)
  # Every flag is checked: only now is MODEL_DIR created. A start that
  # fails before anything is saved removes the directory it created.
  created = not os.path.exists(model_dir)
  model_dir_lib.prepare(model_dir)
  try:
    if cluster is None or cluster.is_chief:
      model_dir_lib.lock(model_dir)
      model_dir_lib.remove_partial_writes(model_dir)
      if flag_values.verify_data:
        sources.verify(source, deep=True)
      elif source.counts['labeled'] <= LABELED_CHECK_MAX:
        sources.verify(source, deep=True, parts=('labeled',))
      params_lib.save_or_check(model_dir, params)
      store_for_export(model_dir, source, params)
      resume_from = model_dir_lib.latest_checkpoint(model_dir)
      if resume_from:
        model_dir_lib.check_checkpoint(resume_from)
  except BaseException:
    if created:
      model_dir_lib.unlock(model_dir)
      model_dir_lib.remove_if_unused(model_dir)
    raise
  try:
    if strategy != 'off':
      return _train_distributed(params, opts, source, needs, model_dir, name,
                                flag_values.eval_batch_size, printer,
                                strategy, cluster, flag_values.cpu_replicas)
    return _train(params, opts, source, needs, model_dir, name,
                  flag_values.eval_batch_size, printer, shard)
  except (OSError, tf.errors.OpError) as e:
    failure = explain_failure(e, source, model_dir)
    if failure is e:
      raise
    raise failure from None


def store_for_export(model_dir, source, params):
  """Makes MODEL_DIR self-contained for eval and export.

  Stores the normalisation (preprocessing.save_norm: mean/std or GCN
  constants, ZCA as raw float32 files) and up to EXPORT_CHECK_IMAGES test
  images (model_dir.save_check_images) the export is checked on, so
  export.py and the SavedModel need nothing from the data directory. A
  resumed run keeps what the run started with.
  """
  if not preprocessing.has_saved_norm(model_dir):
    preprocessing.save_norm(
        preprocessing.norm_spec(source.info, params['normalization'],
                                source.dataset_dir), model_dir)
  if not model_dir_lib.has_check_images(model_dir) and source.files['test']:
    images = []
    for path in source.files['test']:
      for image, _, _ in records.read_examples(path):
        images.append(image)
        if len(images) == EXPORT_CHECK_IMAGES:
          break
      if len(images) == EXPORT_CHECK_IMAGES:
        break
    model_dir_lib.save_check_images(model_dir, np.stack(images))


def explain_failure(error, source, model_dir):
  """The one-line error for a failure during training, or `error` itself.

  A write the file system refused becomes cli.RunError naming the file and
  the checkpoint that stays; a record that does not read or decode makes
  the data be re-checked record by record, and the DataError naming the
  shard is returned. Anything else is returned unchanged (a bug).
  """
  reason = model_dir_lib.write_failure(error)
  if reason:
    model_dir_lib.remove_partial_writes(model_dir)
    checkpoint = model_dir_lib.latest_checkpoint(model_dir)
    kept = ('the last checkpoint, %s, is intact' % os.path.basename(checkpoint)
            if checkpoint else 'no checkpoint was saved')
    return cli.RunError('cannot write %s (disk full or file-size limit?); %s'
                        % (reason, kept))
  if isinstance(error, (tf.errors.DataLossError,
                        tf.errors.InvalidArgumentError)):
    try:
      sources.verify(source, deep=True)
    except DataError as e:
      return e
  return error


def _start(params, opts, source, needs, model_dir, name, where, printer,
           per=''):
  """What both training paths start with: prints the run (and resume) line.

  Returns:
    (the part evaluated, the step training resumes from, the checkpoint and
    evaluation interval in steps).
  """
  printer('training %s/%s on %s (%s), %d steps, %d labeled + %d total images '
          'a step%s, model_dir %s' % (
              params['algorithm'], params['network'], name, where,
              params['train_steps'], needs.batch_size, needs.images_per_step,
              per, model_dir))
  checkpoint = model_dir_lib.latest_checkpoint(model_dir)
  step = model_dir_lib.checkpoint_step(checkpoint) if checkpoint else 0
  if step:
    printer('resuming from %s (step %d)' % (checkpoint, step))
  eval_part = 'valid' if source.counts.get('valid') else 'test'
  return eval_part, step, max(1, opts['save_checkpoints_steps'])


def _train(params, opts, source, needs, model_dir, name, eval_batch_size,
           printer, shard=(1, 0)):
  """The train / evaluate loop of `run`; returns the last metrics.

  `shard`: (num_shards, shard_index) of this process's input
  (devices.input_shard).
  """
  estimator, device = devices.make_estimator(model_dir, params, opts)
  eval_part, step, every = _start(params, opts, source, needs, model_dir,
                                  name, device, printer)
  last = params['train_steps']
  labeled, total = needs.batch_size, needs.images_per_step
  num_shards, shard_index = shard
  norm = preprocessing.stored_norm(model_dir)
  metrics = {}
  while step < last:
    target = min(last, (step // every + 1) * every)
    train_fn = inputs.train_input_fn(source, needs, params,
                                     seed=input_seed(params),
                                     num_shards=num_shards,
                                     shard_index=shard_index,
                                     start_step=step, norm=norm)
    progress = hooks.ProgressHook(opts['log_every_steps'], labeled, total,
                                  last, printer=printer)
    estimator.train(train_fn, max_steps=target,
                    hooks=hooks.guarded_saver(model_dir, every, target) +
                    [progress])
    step = target
    metrics = evaluate(estimator, source, eval_part, params, eval_batch_size,
                       norm)
    printer('step %d: %s' % (step, format_metrics(metrics, eval_part)))
  if not metrics:
    metrics = evaluate(estimator, source, eval_part, params, eval_batch_size,
                       norm)
    printer('step %d: %s' % (step, format_metrics(metrics, eval_part)))
  return metrics


def _train_distributed(params, opts, source, needs, model_dir, name,
                       eval_batch_size, printer, strategy_name, cluster,
                       cpu_replicas):
  """`_train` under a tf.distribute strategy, via train_and_evaluate.

  Every training task (chief, workers) reads its own input shard; the chief
  saves the checkpoints; evaluation runs on the chief (`mirrored`) or the
  evaluator task after each checkpoint, and the chief of a cluster without
  an evaluator evaluates once at the end. Returns that evaluation's metrics
  ({} on the other tasks).
  """
  strategy = distribute.make_strategy(strategy_name, cpu_replicas)
  estimator = distribute.make_estimator(core.model_fn, model_dir, params,
                                        opts, strategy, cpu_replicas)
  replicas = distribute.replicas_per_step(strategy_name, strategy)
  where = '%s, task %s, %d replica(s) a step' % (
      strategy_name, cluster.task if cluster else 'local', replicas)
  eval_part, step, every = _start(params, opts, source, needs, model_dir,
                                  name, where, printer, ' per replica')
  last = params['train_steps']
  labeled, total = needs.batch_size, needs.images_per_step
  if strategy_name != 'multi_worker_mirrored' and (cluster is None or
                                                   cluster.is_chief):
    train_hooks = hooks.guarded_saver(model_dir, every, last)
  else:
    # multi_worker_mirrored: MonitoredTrainingSession appends the savers
    # itself, after these hooks (the guard still runs first), on every
    # worker: the chief's into model_dir, the others' into
    # model_dir/tmp_worker_<i> (TensorFlow's collective save protocol).
    train_hooks = [hooks.FiniteGuardHook(model_dir, every, last)]
  train_hooks.append(hooks.ProgressHook(opts['log_every_steps'],
                                        labeled * replicas, total * replicas,
                                        last, printer=printer))
  train_spec = tf.estimator.TrainSpec(
      distribute.train_input_fn(source, needs, params,
                                seed=input_seed(params), start_step=step),
      max_steps=last, hooks=train_hooks)

  def line(metrics):
    return 'step %d: %s' % (metrics['global_step'],
                            format_metrics(metrics, eval_part))

  eval_spec = tf.estimator.EvalSpec(
      inputs.eval_input_fn(source, eval_part, eval_batch_size, params),
      steps=None, name=eval_part, start_delay_secs=0, throttle_secs=0,
      exporters=[distribute.MetricsPrinter(line, printer)])
  result = tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
  distribute.release_server()
  if result and result[0]:
    return result[0]
  if cluster is None or not cluster.is_chief or 'evaluator' in cluster.spec:
    return {}
  with distribute.without_tf_config():
    local, _ = devices.make_estimator(model_dir, params, opts)
    metrics = evaluate(local, source, eval_part, params, eval_batch_size)
  printer(line(metrics))
  return metrics


def input_seed(params):
  """Seed of the training input pipeline: the same --seed gives the same
  batches. Every train call (evaluation chunk, resume) uses it with its
  starting step, so the streams continue instead of restarting."""
  return params['seed'] * 1000003


def evaluate(estimator, source, part, params, batch_size, norm=None):
  eval_fn = inputs.eval_input_fn(source, part, batch_size, params, norm)
  return estimator.evaluate(eval_fn, name=part)


def format_metrics(metrics, part):
  keys = sorted(k for k in metrics if 'accuracy' in k)
  return '  '.join('%s %s %.2f%%' % (part, k, 100 * metrics[k]) for k in keys)


def main(argv):
  del argv
  run(FLAGS)


if __name__ == '__main__':
  define_flags()
  cli.run(main, argv=params_lib.reorder_flagfiles(sys.argv))
