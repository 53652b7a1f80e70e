r"""Training throughput: real steps, and the in-graph ceiling of the same step.

  python benchmarks/throughput.py --algorithm=realmix --network=resnet \
      --batch_size=64 --steps=20 [--warmup=5] [--ceiling] \
      [--data=synthetic_tfrecords] [--flagfile=launch/configs/X.cfg] \
      [--intra_op_threads=N] [--inter_op_threads=N] [--xla]

The two phases and every figure: docs/benchmarks.md.
"""

import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import inputs
from input_pipeline import sources
from input_pipeline import splits
from input_pipeline import writer
from model_fns import core
from model_fns import registry
from runner import cli
from runner import devices
from runner import params as params_lib

FLAGS = flags.FLAGS
DATA_MODES = ('synthetic_tfrecords', 'prepared')
SYNTHETIC_NAME = 'synthetic'
SYNTHETIC_SHAPE = (32, 32, 3)
SYNTHETIC_CLASSES = 10
SYNTHETIC_TEST_IMAGES = 100


def define_flags():
  flags.DEFINE_integer('steps', 20, 'Timed training steps per phase.')
  flags.DEFINE_integer('warmup', 5, 'Untimed steps first (at least 1).')
  flags.DEFINE_bool('ceiling', False, 'Also measure the in-graph ceiling.')
  flags.DEFINE_enum('data', 'synthetic_tfrecords', DATA_MODES,
                    'Random CIFAR-shaped TFRecords, or --data_dir/--dataset.')
  flags.DEFINE_integer('images', 5000, 'synthetic_tfrecords: images written.')
  flags.DEFINE_integer('labeled_images', 1000,
                       'synthetic_tfrecords: labeled images of the split '
                       '(a multiple of 10); the rest are unlabeled.')
  flags.DEFINE_string('data_dir', None, 'prepared: the DATA directory.')
  flags.DEFINE_string('dataset', None, 'prepared: the split to read.')
  params_lib.define_flags()
  devices.define_flags()


def write_synthetic(directory, images, labeled_images, zca, seed=0):
  """Writes random CIFAR-shaped data and its split; returns the DataSource."""
  if labeled_images % SYNTHETIC_CLASSES or not (
      0 < labeled_images < images):
    raise cli.UsageError('--labeled_images must be a positive multiple of %d '
                         'below --images=%d, got %d'
                         % (SYNTHETIC_CLASSES, images, labeled_images))
  rng = np.random.RandomState(seed)

  def part(count):
    pixels = rng.randint(0, 256, (count,) + SYNTHETIC_SHAPE).astype(np.uint8)
    labels = rng.permutation(np.arange(count) % SYNTHETIC_CLASSES)
    return pixels, labels.astype(np.int64)

  writer.write_dataset(
      directory, SYNTHETIC_NAME,
      {'train': part(images), 'test': part(SYNTHETIC_TEST_IMAGES)},
      ['class%d' % c for c in range(SYNTHETIC_CLASSES)], 'random', zca=zca)
  name = splits.format_split_name(SYNTHETIC_NAME, 1, labeled_images, 0, None)
  splits.create_split(directory, name)
  return sources.resolve(directory, name)


class _StepTimes(tf.train.SessionRunHook):
  """Records the wall and process CPU time at the end of every step."""

  def __init__(self):
    self.times = []
    self.cpu = []

  def after_run(self, run_context, run_values):
    del run_context, run_values
    self.times.append(time.time())
    self.cpu.append(time.process_time())


def _figures(seconds, cpu_seconds, labeled, total, build):
  """A phase's figures; `cpu_seconds` is the process's CPU time a step."""
  return {'s_per_step': round(seconds, 6),
          'labeled_img_s': round(labeled / seconds, 2),
          'total_img_s': round(total / seconds, 2),
          'cpu_s_per_step': round(cpu_seconds, 4),
          'cores_busy': round(cpu_seconds / seconds, 3),
          'peak_rss_mb': round(peak_rss_mb(), 1),
          'build_and_warmup_s': round(build, 1)}


def peak_rss_mb():
  """The process's peak resident set so far, in MB (Linux: KB units)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.


def measure_real(source, needs, params, opts, model_dir, steps, warmup):
  """Trains warmup + steps through the Estimator; returns the figures."""
  labeled, total = needs.batch_size, needs.images_per_step
  estimator, _ = devices.make_estimator(model_dir, params, opts)
  hook = _StepTimes()
  start = time.time()
  estimator.train(inputs.train_input_fn(source, needs, params,
                                        seed=params['seed']),
                  max_steps=warmup + steps, hooks=[hook])
  if len(hook.times) != warmup + steps:
    raise RuntimeError('expected %d steps, ran %d' % (warmup + steps,
                                                      len(hook.times)))
  seconds = (hook.times[-1] - hook.times[warmup - 1]) / steps
  cpu_seconds = (hook.cpu[-1] - hook.cpu[warmup - 1]) / steps
  return _figures(seconds, cpu_seconds, labeled, total,
                  hook.times[warmup - 1] - start)


def first_batch(source, needs, params):
  """One element of the real training pipeline, as numpy (features dict)."""
  with tf.Graph().as_default():
    dataset = inputs.train_input_fn(source, needs, params,
                                    seed=params['seed'])()
    features, _ = tf.data.make_one_shot_iterator(dataset).get_next()
    with tf.Session() as sess:
      return sess.run(features)


def measure_ceiling(batch, needs, params, opts, steps, warmup):
  """The same training step on fixed in-graph inputs; returns the figures."""
  labeled, total = needs.batch_size, needs.images_per_step
  start = time.time()
  with tf.Graph().as_default():
    tf.set_random_seed(params['seed'])
    feeds = {}
    features = {}
    for key, value in batch.items():
      placeholder = tf.placeholder(tf.as_dtype(value.dtype), value.shape)
      feeds[placeholder] = value
      features[key] = tf.Variable(
          placeholder, trainable=False, name='fixed_' + key,
          collections=[tf.GraphKeys.LOCAL_VARIABLES]).read_value()
    spec = core.model_fn(features, features['label'],
                         tf.estimator.ModeKeys.TRAIN, params)
    init = [tf.global_variables_initializer(),
            tf.local_variables_initializer()]
    with tf.Session(config=devices.session_config(opts)) as sess:
      sess.run(init, feeds)
      for _ in range(warmup):
        sess.run(spec.train_op)
      mark, cpu_mark = time.time(), time.process_time()
      for _ in range(steps):
        sess.run(spec.train_op)
      seconds = (time.time() - mark) / steps
      cpu_seconds = (time.process_time() - cpu_mark) / steps
  return _figures(seconds, cpu_seconds, labeled, total, mark - start)


def _cpu_model():
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except (IOError, OSError):
    pass
  return platform.processor() or platform.machine()


def _print_phase(name, figures, printer):
  printer('%-8s %8.3f s/step  %8.1f labeled img/s  %8.1f img/s  %.2f cores '
          'busy  peak RSS %.0f MB  (build + warm-up %.1f s)'
          % (name, figures['s_per_step'], figures['labeled_img_s'],
             figures['total_img_s'], figures['cores_busy'],
             figures['peak_rss_mb'], figures['build_and_warmup_s']))


def benchmark(flag_values, work_dir, printer=print):
  """Runs the phases the flags ask for; returns the JSON dict."""
  steps, warmup = flag_values.steps, flag_values.warmup
  if steps < 1 or warmup < 1:
    raise cli.UsageError('--steps and --warmup must be at least 1, got %d '
                         'and %d' % (steps, warmup))
  opts = devices.options_from_flags(flag_values)
  if devices.resolve_device(opts['device']) == 'npu':
    raise cli.UsageError('--device=npu: this benchmark measures CPU/GPU '
                         'sessions; use --device=cpu')
  opts['device'] = 'cpu'
  if flag_values.data == 'prepared':
    data_dir = cli.resolve_path(flag_values.data_dir)
    if not data_dir or not flag_values.dataset:
      raise cli.UsageError('--data=prepared needs --data_dir and --dataset')
    source = sources.resolve(data_dir, flag_values.dataset)
    params = params_lib.resolve(
        flag_values, params_lib.data_facts(source, data_dir, source.name))
  else:
    data_dir = os.path.join(work_dir, 'data')
    facts = {'num_classes': SYNTHETIC_CLASSES,
             'image_shape': list(SYNTHETIC_SHAPE), 'dataset': SYNTHETIC_NAME,
             'data_dir': data_dir}
    params = params_lib.resolve(flag_values, facts)
    source = write_synthetic(data_dir, flag_values.images,
                             flag_values.labeled_images,
                             zca=params['normalization'] == 'gcn_zca')
    params['dataset'] = source.name
    printer('%s: %d random %s images (%d labeled, %d unlabeled) in %s'
            % (flag_values.data, flag_values.images,
               'x'.join(map(str, SYNTHETIC_SHAPE)), source.counts['labeled'],
               source.counts['unlabeled'], data_dir))
  try:
    params['train_steps'] = registry.default_train_steps(params, source.counts)
    needs = registry.get(params['algorithm']).input_needs(params)
  except ValueError as e:
    raise cli.UsageError(str(e))
  params_lib.add_data_params(params, needs, source)
  labeled, total = needs.batch_size, needs.images_per_step
  config = devices.session_config(opts)  # 0 = TensorFlow's choice.
  environment = {
      'tensorflow': tf.__version__, 'mkl': devices.mkl_enabled(),
      'cpus': os.cpu_count(), 'cpu_model': _cpu_model(),
      'intra_op_threads': config.intra_op_parallelism_threads,
      'inter_op_threads': config.inter_op_parallelism_threads,
      'xla': opts['xla'],
      'omp_num_threads': os.environ.get('OMP_NUM_THREADS'),
      'kmp_blocktime': os.environ.get('KMP_BLOCKTIME'),
  }
  printer('%s/%s batch_size %d: %d labeled + %d total images a step; '
          'TensorFlow %s (MKL %s), %d CPUs; %d warm-up + %d timed steps'
          % (params['algorithm'], params['network'], params['batch_size'],
             labeled, total, tf.__version__,
             'on' if environment['mkl'] else 'off', os.cpu_count(), warmup,
             steps))
  result = {
      'benchmark': 'throughput', 'data': flag_values.data,
      'dataset': params['dataset'], 'algorithm': params['algorithm'],
      'network': params['network'], 'batch_size': params['batch_size'],
      'normalization': params['normalization'],
      'labeled_per_step': labeled, 'images_per_step': total,
      'steps': steps, 'warmup': warmup, 'environment': environment,
  }
  result['real'] = measure_real(source, needs, params, opts,
                                os.path.join(work_dir, 'model'), steps,
                                warmup)
  _print_phase('real', result['real'], printer)
  if flag_values.ceiling:
    batch = first_batch(source, needs, params)
    result['ceiling'] = measure_ceiling(batch, needs, params, opts, steps,
                                        warmup)
    _print_phase('ceiling', result['ceiling'], printer)
    result['efficiency'] = round(result['real']['labeled_img_s'] /
                                 result['ceiling']['labeled_img_s'], 3)
    printer('pipeline efficiency (real / ceiling): %.3f'
            % result['efficiency'])
  return result


def main(argv):
  del argv
  work_dir = tempfile.mkdtemp(prefix='throughput-')
  try:
    result = benchmark(FLAGS, work_dir)
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)
  print(json.dumps(result, sort_keys=True))


if __name__ == '__main__':
  define_flags()
  cli.run(main, argv=params_lib.reorder_flagfiles(sys.argv))
