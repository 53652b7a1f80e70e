r"""Compares algorithms at an equal number of steps on one split.

  python benchmarks/compare.py --data_dir=DATA --dataset=fashion_mnist.1@1000-5000 \
      --train_steps=500 --work_dir=runs/compare [--algorithms=supervised,sesemi,...]

Its figures: docs/benchmarks.md.
"""

import json
import os
import re
import subprocess
import sys

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS

flags.DEFINE_string('data_dir', None, 'Prepared data.')
flags.DEFINE_string('dataset', 'fashion_mnist.1@1000-5000', 'Split.')
flags.DEFINE_string('work_dir', None, 'One model directory per algorithm.')
flags.DEFINE_list('algorithms', ['supervised', 'sesemi', 'mixmatch', 'realmix',
                                 'fixmatch'], 'Algorithms to compare.')
flags.DEFINE_integer('train_steps', 500, 'Steps of every run.')
flags.DEFINE_list('extra', [], 'Flags added to every run, e.g. '
                  '--network=resnet,--filters=16')

_RATE = re.compile(r'^step \d+/\d+\s+([\d.]+) labeled img/s\s+([\d.]+) img/s')


def run(args, log_path):
  """Runs a command, teeing its output to log_path; returns the output."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  with open(log_path, 'a') as log:
    process = subprocess.run(args, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT,
                             universal_newlines=True, env=env, check=False)
    log.write(process.stdout)
  if process.returncode:
    sys.exit('%s failed (exit %d); see %s' % (' '.join(args[:2]),
                                              process.returncode, log_path))
  return process.stdout


def compare_one(algorithm):
  model_dir = os.path.join(FLAGS.work_dir, algorithm)
  os.makedirs(model_dir, exist_ok=True)
  log_path = os.path.join(model_dir, 'compare.log')
  results_path = os.path.join(model_dir, 'eval_results.json')
  if os.path.exists(results_path):
    with open(results_path) as f:
      results = json.load(f)
    if results['step'] == FLAGS.train_steps:
      return _summary(algorithm, results, log_path)
  python = sys.executable
  run([python, os.path.join(ROOT, 'launch', 'train.py'),
       '--flagfile=%s' % os.path.join(ROOT, 'launch', 'configs',
                                      'fmnist_%s.cfg' % algorithm),
       '--data_dir=' + FLAGS.data_dir, '--dataset=' + FLAGS.dataset,
       '--model_dir=' + model_dir, '--train_steps=%d' % FLAGS.train_steps,
       '--save_checkpoints_steps=%d' % FLAGS.train_steps,
       '--log_every_steps=%d' % max(1, FLAGS.train_steps // 10)]
      + FLAGS.extra, log_path)
  run([python, os.path.join(ROOT, 'launch', 'eval.py'),
       '--model_dir=' + model_dir], log_path)
  with open(results_path) as f:
    return _summary(algorithm, json.load(f), log_path)


def _summary(algorithm, results, log_path):
  rates = []
  with open(log_path) as f:
    for line in f:
      match = _RATE.match(line)
      if match:
        rates.append((float(match.group(1)), float(match.group(2))))
  steady = rates[1:] or rates
  rows = results['results']
  # The headline (launch/eval.py): the EMA model where kept, else raw,
  # untuned; "tuned" is the same model after eval.py's re-estimation.
  top = 'ema' if 'ema' in rows else 'raw'
  return {
      'algorithm': algorithm,
      'step': results['step'],
      'test': rows[top]['test'],
      'test_tuned': rows.get('tuned_' + top, {}).get('test'),
      'test_raw': rows['raw']['test'],
      'test_ema': rows.get('ema', {}).get('test'),
      'test_tuned_ema': rows.get('tuned_ema', {}).get('test'),
      'labeled_img_per_s': (round(sum(r[0] for r in steady) / len(steady), 1)
                            if steady else None),
      'img_per_s': (round(sum(r[1] for r in steady) / len(steady), 1)
                    if steady else None),
  }


def main(argv):
  del argv
  if not FLAGS.data_dir or not FLAGS.work_dir:
    sys.exit('--data_dir and --work_dir are required')
  summaries = [compare_one(a) for a in FLAGS.algorithms]
  print('| algorithm | steps | test % | test tuned % | test raw % | '
        'test EMA % | tuned EMA % | labeled img/s | img/s |')
  print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')

  def cell(value):
    return '-' if value is None else '%.2f' % value if isinstance(
        value, float) else str(value)

  for s in summaries:
    print('| %s | %d | %s | %s | %s | %s | %s | %s | %s |' % (
        s['algorithm'], s['step'], cell(s['test']), cell(s['test_tuned']),
        cell(s['test_raw']), cell(s['test_ema']),
        cell(s['test_tuned_ema']), cell(s['labeled_img_per_s']),
        cell(s['img_per_s'])))
  print(json.dumps({'dataset': FLAGS.dataset, 'train_steps': FLAGS.train_steps,
                    'runs': summaries}))


if __name__ == '__main__':
  app.run(main)
