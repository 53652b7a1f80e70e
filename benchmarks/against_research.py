r"""The product's training rate against the research code's, on this machine.

  python benchmarks/against_research.py \
      --yardstick=.venv/bin/python --flavors=intel=.venv-intel/bin/python \
      [--rounds=3] [--algorithms=realmix,sesemi] [--steps_for=sesemi:3] \
      [--results=benchmarks/results/against_research.jsonl] \
      [--output=docs/against_research.md]

How a round rescales the research figures: docs/benchmarks.md.
"""

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags

from benchmarks import throughput_table
from runner import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS

# The measurements of the research code, and of bare_step.py with the
# stock wheel on the same machine.
REFERENCE_BARE_IMG_S = 56.0
RESEARCH = {
    # libml, WRN-28-2, 64 labeled + 2 x 64 unlabeled a step.
    'realmix': {'labeled_img_s': 16.7, 'peak_rss_mb': 3000.},
    # Keras, convnet, batch 16 (96 + 96 images), 7.6 s/step.
    'sesemi': {'labeled_img_s': 96 / 7.6, 'peak_rss_mb': 5100.},
}

flags.DEFINE_string('yardstick', os.path.join('.venv', 'bin', 'python'),
                    'Python of the stock tensorflow 1.15.0 environment, for '
                    'bare_step.py.')
flags.DEFINE_list('flavors', ['intel=' + os.path.join('.venv-intel', 'bin',
                                                      'python')],
                  'NAME=PYTHON pairs: the flavours of the product to time.')
flags.DEFINE_list('algorithms', sorted(RESEARCH), 'Algorithms to compare.')
flags.DEFINE_integer('rounds', 3, 'Rounds in the results file when done.')
flags.DEFINE_integer('steps', 4, 'Timed throughput.py steps.')
flags.DEFINE_integer('warmup', 2, 'Untimed throughput.py steps.')
flags.DEFINE_list('steps_for', [], 'ALGORITHM:STEPS overrides of --steps.')
flags.DEFINE_list('extra', [], 'Flags passed to every throughput.py run.')
flags.DEFINE_list('yardstick_extra', [], 'Flags passed to bare_step.py (the '
                  'reference figure is its defaults).')
flags.DEFINE_string('results', os.path.join(
    'benchmarks', 'results', 'against_research.jsonl'),
                    'JSON lines, one per round (appended).')
flags.DEFINE_string('output', os.path.join('docs', 'against_research.md'),
                    'The Markdown table.')


def yardstick(python, extra):
  """bare_step.py's JSON with `python` (the stock wheel)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  args = [python, os.path.join(ROOT, 'benchmarks', 'bare_step.py')] + extra
  print('yardstick: %s' % ' '.join(args[1:]), flush=True)
  lines = throughput_table.run_benchmark(args, env, 'bare_step.py')
  result = json.loads(lines[-1])
  if result['tensorflow'] != '1.15.0':
    raise cli.UsageError('--yardstick must be the stock tensorflow 1.15.0 '
                         'environment (the reference figure is that wheel\'s); '
                         '%s has %s' % (python, result['tensorflow']))
  print('  %.1f img/s' % result['img_s'], flush=True)
  return result


def compare(round_result):
  """{(flavor, algorithm): figures} of one round, rescaled."""
  scale = round_result['yardstick']['img_s'] / REFERENCE_BARE_IMG_S
  rows = {}
  for run in round_result['runs']:
    research = RESEARCH[run['algorithm']]
    here = research['labeled_img_s'] * scale
    rows[(run['flavor'], run['algorithm'])] = {
        'ours': run['real']['labeled_img_s'],
        'ours_rss_mb': run['real']['peak_rss_mb'],
        'research_here': here,
        'ratio': run['real']['labeled_img_s'] / here,
    }
  return scale, rows


def markdown(rounds):
  """Per-round rows and the median of each (flavour, algorithm)."""
  lines = ['| round | yardstick img/s | machine vs the issue\'s | flavour | '
           'algorithm | research code, rescaled (labeled img/s) | ours '
           '(labeled img/s) | ours ÷ research | peak RSS MB, research → '
           'ours |', '| --- ' * 9 + '|']
  collected = {}
  for number, round_result in enumerate(rounds, 1):
    scale, rows = compare(round_result)
    for (flavor, algorithm), row in sorted(rows.items()):
      collected.setdefault((flavor, algorithm), []).append(row['ratio'])
      lines.append('| %d | %.1f | %.2f | %s | %s | %.2f | %.2f | %.2fx | '
                   '%.0f → %.0f |' % (
                       number, round_result['yardstick']['img_s'], scale,
                       flavor, algorithm, row['research_here'], row['ours'],
                       row['ratio'], RESEARCH[algorithm]['peak_rss_mb'],
                       row['ours_rss_mb']))
  lines += ['', '| flavour | algorithm | rounds | ours ÷ research, median '
            '| min | max |', '| --- ' * 6 + '|']
  for (flavor, algorithm), ratios in sorted(collected.items()):
    lines.append('| %s | %s | %d | **%.2fx** | %.2fx | %.2fx |' % (
        flavor, algorithm, len(ratios), statistics.median(ratios),
        min(ratios), max(ratios)))
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  flavors = throughput_table.parse_pairs(FLAGS.flavors, 'flavors')
  steps_for = dict(throughput_table.parse_pairs(FLAGS.steps_for, 'steps_for',
                                                int))
  unknown = sorted(set(FLAGS.algorithms) - set(RESEARCH))
  if unknown:
    raise cli.UsageError('--algorithms: no research figure for %s (known: '
                         '%s)' % (', '.join(unknown), ', '.join(RESEARCH)))
  for name, python in flavors + [('yardstick', FLAGS.yardstick)]:
    if not os.access(python, os.X_OK):
      raise cli.UsageError('%s: %s is not an executable Python (make it with '
                           'setup.sh)' % (name, python))
  results_path = cli.resolve_path(FLAGS.results)
  os.makedirs(os.path.dirname(os.path.abspath(results_path)), exist_ok=True)
  rounds = throughput_table.load_results(results_path)
  while len(rounds) < FLAGS.rounds:
    print('round %d of %d' % (len(rounds) + 1, FLAGS.rounds), flush=True)
    round_result = {'yardstick': yardstick(FLAGS.yardstick,
                                           FLAGS.yardstick_extra),
                    'runs': []}
    for name, python in flavors:
      for algorithm in FLAGS.algorithms:
        round_result['runs'].append(throughput_table.run_one(
            python, name, algorithm, steps_for.get(algorithm, FLAGS.steps),
            FLAGS.warmup, False, FLAGS.extra))
    with open(results_path, 'a') as f:
      f.write(json.dumps(round_result, sort_keys=True) + '\n')
    rounds.append(round_result)
  table = markdown(rounds)
  throughput_table.write_table(cli.resolve_path(FLAGS.output), table)
  print(table)


if __name__ == '__main__':
  cli.run(main)
