r"""Training throughput of one worker vs a 2-worker cluster on this machine.

  nice -n 19 python benchmarks/distributed_throughput.py [--steps=30] \
      [--warmup=10] [--batch_size=32] [--workers=1]

What it runs and how the figures are combined: docs/benchmarks.md.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags

from benchmarks import throughput
from input_pipeline import splits
from runner import cli

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = ['--algorithm=supervised', '--network=resnet', '--filters=8',
          '--repeat=1', '--scales=2']
LABELED_IMAGES = 100
PROGRESS_RE = re.compile(r'^step (\d+)/\d+\s+([\d.]+) labeled img/s', re.M)


def define_flags():
  flags.DEFINE_integer('steps', 30, 'Timed steps (after the warm-up).')
  flags.DEFINE_integer('warmup', 10, 'Untimed steps; also the line interval.')
  flags.DEFINE_integer('batch_size', 32, 'Labeled images per replica a step.')
  flags.DEFINE_integer('workers', 1, 'Workers besides the chief.')
  flags.DEFINE_integer('images', 2000, 'Synthetic training images.')


def train_flags(data_dir, dataset, model_dir, steps, warmup, batch_size):
  return ['--data_dir=' + data_dir, '--dataset=' + dataset,
          '--model_dir=' + model_dir, '--batch_size=%d' % batch_size,
          '--train_steps=%d' % (warmup + steps),
          '--save_checkpoints_steps=%d' % (warmup + steps),
          '--log_every_steps=%d' % warmup, '--eval_batch_size=100'] + CONFIG


def rate(log_text, warmup, batch_per_step):
  """(labeled img/s, s/step) over the progress lines after the warm-up.

  Each line's rate covers the steps since the previous line; the rates are
  combined as total images / total seconds.
  """
  lines = [(int(s), float(r)) for s, r in PROGRESS_RE.findall(log_text)]
  timed = [(s, r) for s, r in lines if s > warmup]
  if not timed:
    raise RuntimeError('no progress line after step %d in:\n%s'
                       % (warmup, log_text))
  previous = [warmup] + [s for s, _ in timed[:-1]]
  steps = [s - p for (s, _), p in zip(timed, previous)]
  seconds = sum(n * batch_per_step / r for n, (_, r) in zip(steps, timed))
  images = sum(steps) * batch_per_step
  return images / seconds, seconds / sum(steps)


def run_single(args):
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'launch', 'train.py')] + args,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      universal_newlines=True, env=_env())
  if proc.returncode:
    raise RuntimeError('single-worker run failed:\n' + proc.stdout)
  return proc.stdout


def run_cluster(args, workers, model_dir):
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'launch', 'local_cluster.py'),
       '--workers=%d' % workers, '--'] + args,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      universal_newlines=True, env=_env())
  with open(os.path.join(model_dir, 'logs', 'chief-0.log')) as f:
    chief = f.read()
  if proc.returncode:
    raise RuntimeError('cluster run failed:\n%s\n%s' % (proc.stdout, chief))
  return chief


def _env():
  env = dict(os.environ)
  env.pop('TF_CONFIG', None)
  return env


def benchmark(steps, warmup, batch_size, workers, images, work_dir,
              printer=print):
  """Runs both configurations; returns the figures."""
  data_dir = os.path.join(work_dir, 'data')
  throughput.write_synthetic(data_dir, images, LABELED_IMAGES, zca=False)
  dataset = splits.format_split_name(throughput.SYNTHETIC_NAME, 1,
                                     LABELED_IMAGES, 0, None)
  replicas = 1 + workers
  single_dir = os.path.join(work_dir, 'single')
  single = rate(run_single(train_flags(data_dir, dataset, single_dir, steps,
                                       warmup, batch_size)),
                warmup, batch_size)
  cluster_dir = os.path.join(work_dir, 'cluster')
  cluster = rate(run_cluster(train_flags(data_dir, dataset, cluster_dir,
                                         steps, warmup, batch_size),
                             workers, cluster_dir),
                 warmup, batch_size * replicas)
  result = {
      'config': ' '.join(CONFIG + ['--batch_size=%d' % batch_size]),
      'steps': steps, 'warmup': warmup, 'cpus': os.cpu_count(),
      'single_labeled_img_per_s': round(single[0], 2),
      'single_s_per_step': round(single[1], 4),
      'cluster_replicas': replicas,
      'cluster_labeled_img_per_s': round(cluster[0], 2),
      'cluster_s_per_step': round(cluster[1], 4),
      'speedup': round(cluster[0] / single[0], 3),
      'efficiency_per_replica': round(cluster[0] / single[0] / replicas, 3),
  }
  printer('%s, %d timed steps after %d, %d CPUs'
          % (result['config'], steps, warmup, result['cpus']))
  printer('single worker      : %8.1f labeled img/s  %.3f s/step '
          '(%d images a step)' % (single[0], single[1], batch_size))
  printer('chief + %d worker(s): %8.1f labeled img/s  %.3f s/step '
          '(%d images a step)' % (workers, cluster[0], cluster[1],
                                  batch_size * replicas))
  printer('speed-up %.2fx, %.0f%% per replica'
          % (result['speedup'], 100 * result['efficiency_per_replica']))
  return result


def main(argv):
  del argv
  for name in ('steps', 'warmup', 'batch_size', 'images'):
    if FLAGS[name].value < 1:
      raise cli.UsageError('--%s must be positive' % name)
  if FLAGS.workers < 1:
    raise cli.UsageError('--workers must be at least 1')
  work_dir = tempfile.mkdtemp(prefix='distributed_throughput')
  try:
    result = benchmark(FLAGS.steps, FLAGS.warmup, FLAGS.batch_size,
                       FLAGS.workers, FLAGS.images, work_dir)
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)
  print(json.dumps(result, sort_keys=True))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
