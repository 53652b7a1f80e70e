r"""Trains a semi-supervised classifier with periodic evaluation and resume.

  python launch/train.py --flagfile=launch/configs/sesemi_fmnist_quickstart.cfg \
      --data_dir=DATA --model_dir=runs/sesemi
  bazel run //launch:train -- --flagfile=... (relative paths are resolved
      against the directory bazel was run from)

Hyperparameters: algorithm defaults < --flagfile < explicit flags (see
launch/params.py). The resolved params go to MODEL_DIR/params.json; running
again with the same MODEL_DIR resumes from the newest checkpoint, and refuses
params that would change the graph.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
import tensorflow.compat.v1 as tf

from input_pipeline import inputs
from input_pipeline import sources
from launch import cli
from launch import devices
from launch import hooks
from launch import model_dir as model_dir_lib
from launch import params as params_lib
from model_fns import base
from model_fns import core
from model_fns import registry

FLAGS = flags.FLAGS


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
  params_lib.define_flags()
  devices.define_flags()


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


def images_per_step(needs):
  """(labeled images, images through the network) per training step."""
  total = needs.batch_size + needs.num_unlabeled * len(needs.unlabeled_views)
  if needs.proxy:
    total += needs.proxy_batch * 6
  return needs.batch_size, total


def run(flag_values, printer=print):
  """Trains (or resumes) and returns the last evaluation's metrics."""
  opts = devices.options_from_flags(flag_values)
  devices.resolve_device(opts['device'])  # Fails early without npu_bridge.
  data_dir = cli.resolve_path(flag_values.data_dir)
  if not data_dir:
    raise cli.UsageError('--data_dir is required')
  model_dir = flag_values.model_dir or flag_values.result
  if not model_dir:
    raise cli.UsageError('--model_dir is required')
  model_dir = model_dir_lib.prepare(cli.resolve_path(model_dir))
  name = dataset_name(flag_values)
  source = sources.resolve(data_dir, name)
  facts = {'num_classes': int(source.info['num_classes']),
           'image_shape': list(source.info['image_shape']),
           'dataset': name, 'data_dir': data_dir}
  params = params_lib.resolve(flag_values, facts)
  algorithm = registry.get(params['algorithm'])
  try:
    params['train_steps'] = base.default_train_steps(params, source.counts)
  except ValueError as e:
    raise cli.UsageError(str(e))
  try:
    needs = algorithm.input_needs(params)
  except ValueError as e:
    raise cli.UsageError(str(e))
  params_lib.save_or_check(model_dir, params)
  estimator, device = devices.make_estimator(core.model_fn, model_dir, params,
                                             opts)
  eval_part = 'valid' if source.counts.get('valid') else 'test'
  last = params['train_steps']
  labeled, total = images_per_step(needs)
  printer('training %s/%s on %s (%s), %d steps, %d labeled + %d total images '
          'a step, model_dir %s' % (params['algorithm'], params['network'],
                                    name, device, last, labeled, total,
                                    model_dir))
  checkpoint = model_dir_lib.latest_checkpoint(model_dir)
  step = model_dir_lib.checkpoint_step(checkpoint) if checkpoint else 0
  if step:
    printer('resuming from %s (step %d)' % (checkpoint, step))
  every = max(1, opts['save_checkpoints_steps'])
  metrics = {}
  while step < last:
    target = min(last, (step // every + 1) * every)
    train_fn = inputs.train_input_fn(source, needs, params,
                                     seed=params['seed'] * 1000003 + step)
    progress = hooks.ProgressHook(opts['log_every_steps'], labeled, total,
                                  last, printer=printer)
    estimator.train(train_fn, max_steps=target, hooks=[progress])
    step = target
    metrics = evaluate(estimator, source, eval_part, params,
                       flag_values.eval_batch_size)
    printer('step %d: %s' % (step, format_metrics(metrics, eval_part)))
  if not metrics:
    metrics = evaluate(estimator, source, eval_part, params,
                       flag_values.eval_batch_size)
    printer('step %d: %s' % (step, format_metrics(metrics, eval_part)))
  return metrics


def evaluate(estimator, source, part, params, batch_size):
  eval_fn = inputs.eval_input_fn(source, part, batch_size, params)
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
