r"""Runs benchmarks/throughput.py for every algorithm and TensorFlow flavour.

  python benchmarks/throughput_table.py \
      --flavors=stock=.venv/bin/python,intel=.venv-intel/bin/python \
      [--algorithms=realmix,fixmatch,sesemi,...] [--ceiling_for=realmix,...] \
      [--steps=5] [--warmup=2] [--steps_for=fixmatch:3] \
      [--results=benchmarks/results/throughput.jsonl] \
      [--output=docs/throughput_table.md] [--extra=--images=2000]

Flavours, resuming and the table: docs/benchmarks.md.
"""

import collections
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags

from input_pipeline import fileio
from model_fns import registry
from runner import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS

# MKL-DNN's OpenMP runtime: as many threads as cores, no spinning after a
# parallel region (TensorFlow's own pools run between MKL calls). Not
# KMP_AFFINITY=...compact: it pins the thread that starts OpenMP to one core,
# and every TensorFlow pool thread created after it inherits that mask (on 2
# cores RealMix then ran at 18 s/step instead of 4.6; docs/benchmarks.md).
INTEL_ENV = {'OMP_NUM_THREADS': str(os.cpu_count() or 1),
             'KMP_BLOCKTIME': '0'}

def define_flags():
  """Defines main()'s flags (only when run as a script: other benchmarks
  import the helpers below and define their own)."""
  flags.DEFINE_list('flavors', ['stock=' + os.path.join('.venv', 'bin',
                                                        'python')],
                    'NAME=PYTHON pairs: the TensorFlow flavours to measure.')
  flags.DEFINE_list('algorithms', list(registry.NAMES), 'Algorithms to run.')
  flags.DEFINE_list('ceiling_for', ['realmix', 'fixmatch', 'sesemi'],
                    'Algorithms also measured against the in-graph ceiling.')
  flags.DEFINE_integer('steps', 5, 'Timed steps per phase.')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps per phase.')
  flags.DEFINE_list('steps_for', [], 'ALGORITHM:STEPS overrides of --steps.')
  flags.DEFINE_string('results', os.path.join('benchmarks', 'results',
                                              'throughput.jsonl'),
                      'JSON lines, one per finished run (appended).')
  flags.DEFINE_string('output', os.path.join('docs', 'throughput_table.md'),
                      'The Markdown table of every result.')
  flags.DEFINE_list('extra', [], 'Flags passed to every throughput.py run.')
  flags.DEFINE_bool('rerun', False, 'Run pairs already in --results again.')
  flags.DEFINE_integer('rounds', 1, 'Runs of every pair, alternated: each '
                       'round runs every algorithm once per flavour, the '
                       'flavours in turn (reversed every other round), so '
                       'that drift falls on all of them alike. The table '
                       'shows the median round.', lower_bound=1)


def parse_pairs(values, flag, convert=str):
  """['a=b', ...] or ['a:b', ...] into an ordered list of (a, convert(b))."""
  pairs = []
  for value in values:
    sep = '=' if '=' in value else ':'
    name, _, rest = value.partition(sep)
    if not name or not rest:
      raise cli.UsageError('--%s: expected NAME%sVALUE, got %r'
                           % (flag, sep, value))
    try:
      pairs.append((name, convert(rest)))
    except ValueError:
      raise cli.UsageError('--%s: bad value in %r' % (flag, value))
  return pairs


def load_results(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_one(python, flavor, algorithm, steps, warmup, ceiling, extra):
  """One throughput.py process; returns its JSON (with 'flavor') or exits."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  if flavor == 'intel':
    for key, value in INTEL_ENV.items():
      env.setdefault(key, value)
  args = [python, os.path.join(ROOT, 'benchmarks', 'throughput.py'),
          '--algorithm=' + algorithm, '--steps=%d' % steps,
          '--warmup=%d' % warmup] + (['--ceiling'] if ceiling else []) + extra
  print('%s %s: %s' % (flavor, algorithm, ' '.join(args[1:])), flush=True)
  lines = run_benchmark(args, env, '%s %s' % (flavor, algorithm))
  for line in lines[:-1]:
    print('  ' + line, flush=True)
  result = json.loads(lines[-1])
  result['flavor'] = flavor
  return result


def run_benchmark(args, env, what):
  """Runs a benchmark process; returns its stdout lines (the last one is its
  JSON), or raises RunError naming `what` with the last line of stderr."""
  process = subprocess.run(args, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True,
                           env=env, check=False)
  lines = process.stdout.strip().splitlines()
  if process.returncode or not lines:
    tail = (process.stderr.strip().splitlines() or ['(no output)'])[-1]
    raise cli.RunError('%s failed (exit %d): %s'
                       % (what, process.returncode, tail))
  return lines


def median_rounds(results, rounds):
  """Per (flavour, algorithm): the median by labeled img/s of its last
  `rounds` results, with 'rounds' (how many) and 'peak_rss_mb_max'."""
  by_pair = collections.OrderedDict()
  for r in results:
    by_pair.setdefault((r['flavor'], r['algorithm']), []).append(r)
  chosen = []
  for runs in by_pair.values():
    runs = runs[-rounds:]
    ranked = sorted(runs, key=lambda r: r['real']['labeled_img_s'])
    median = dict(ranked[(len(ranked) - 1) // 2], rounds=len(runs))
    median['peak_rss_mb_max'] = max(r['real']['peak_rss_mb'] for r in runs)
    chosen.append(median)
  return chosen


def _cell(figures, key, fmt):
  return fmt % figures[key] if figures else '-'


def _busy(figures):
  """Cores busy of a phase; '-' for results from before it was measured."""
  return '%.2f' % figures['cores_busy'] if figures and (
      'cores_busy' in figures) else '-'


def markdown(results):
  """The table of `results`, one row per (algorithm, flavour)."""
  header = ('| algorithm | network | batch | flavour | TF | labeled img/s | '
            'img/s | s/step | peak RSS MB | ceiling labeled img/s | '
            'efficiency | cores busy (real / ceiling) |\n' + '| --- ' * 12 +
            '|')
  rows = [header]
  order = {name: i for i, name in enumerate(registry.NAMES)}
  for r in sorted(results, key=lambda r: (order.get(r['algorithm'], 99),
                                          r['flavor'])):
    real, ceiling = r['real'], r.get('ceiling')
    rss = max(r.get('peak_rss_mb_max', real['peak_rss_mb']),
              ceiling['peak_rss_mb'] if ceiling else 0)
    flavor = r['flavor'] + (' (median of %d)' % r['rounds']
                            if r.get('rounds', 1) > 1 else '')
    busy = '%s / %s' % (_busy(real), _busy(ceiling))
    rows.append('| %s | %s | %d | %s | %s%s | %.2f | %.1f | %.2f | %.0f | %s '
                '| %s | %s |' % (
                    r['algorithm'], r['network'], r['batch_size'],
                    flavor, r['environment']['tensorflow'],
                    ' (MKL)' if r['environment']['mkl'] else '',
                    real['labeled_img_s'], real['total_img_s'],
                    real['s_per_step'], rss,
                    _cell(ceiling, 'labeled_img_s', '%.2f'),
                    '%.3f' % r['efficiency'] if 'efficiency' in r else '-',
                    busy))
  return '\n'.join(rows) + '\n'


def write_table(path, text):
  """Writes `text` to `path` (fileio.write_atomic), making its directory."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fileio.write_atomic(path, text)


def main(argv):
  del argv
  flavors = parse_pairs(FLAGS.flavors, 'flavors')
  steps_for = dict(parse_pairs(FLAGS.steps_for, 'steps_for', int))
  unknown = sorted(set(FLAGS.algorithms) - set(registry.NAMES))
  if unknown:
    raise cli.UsageError('--algorithms: unknown %s (known: %s)'
                         % (', '.join(unknown), ', '.join(registry.NAMES)))
  for name, python in flavors:
    if not os.access(python, os.X_OK):
      raise cli.UsageError('--flavors: %s: %s is not an executable Python '
                           '(make it with setup.sh)' % (name, python))
  results_path = cli.resolve_path(FLAGS.results)
  os.makedirs(os.path.dirname(os.path.abspath(results_path)), exist_ok=True)
  done = collections.Counter(
      (r['flavor'], r['algorithm']) for r in load_results(results_path))
  for round_ in range(FLAGS.rounds):
    for algorithm in FLAGS.algorithms:
      order = flavors if round_ % 2 == 0 else flavors[::-1]
      for name, python in order:
        if done[(name, algorithm)] > round_ and not FLAGS.rerun:
          continue
        result = run_one(python, name, algorithm,
                         steps_for.get(algorithm, FLAGS.steps), FLAGS.warmup,
                         algorithm in FLAGS.ceiling_for, FLAGS.extra)
        result['round'] = round_
        with open(results_path, 'a') as f:
          f.write(json.dumps(result, sort_keys=True) + '\n')
  latest = median_rounds(load_results(results_path), FLAGS.rounds)
  table = markdown(latest)
  write_table(cli.resolve_path(FLAGS.output), table)
  print(table)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
