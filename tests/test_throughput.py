"""benchmarks/throughput.py in a small way: tiny configs, a few steps.

No timing assertions: only that both phases run real training steps and
report consistent, positive figures in the last-line JSON.
"""

import json
import os
import sys
import unittest

import tensorflow.compat.v1 as tf

from input_pipeline import runtime
import tests
from tests import data_fixtures

TINY_NET = data_fixtures.TINY_NET


def run_benchmark(*args):
  return data_fixtures.run_entry('benchmarks/throughput', *args)


class ThroughputTest(tf.test.TestCase):

  def last_json(self, result):
    self.assertEqual(result.returncode, 0, 'stdout:\n%s\nstderr:\n%s'
                     % (result.stdout, result.stderr[-3000:]))
    return json.loads(result.stdout.strip().splitlines()[-1])

  def assertConsistent(self, figures, labeled, total):
    self.assertGreater(figures['s_per_step'], 0.)
    self.assertAllClose(figures['labeled_img_s'],
                        labeled / figures['s_per_step'], rtol=2e-3)
    self.assertAllClose(figures['total_img_s'],
                        total / figures['s_per_step'], rtol=2e-3)
    self.assertBetween(figures['peak_rss_mb'], 50., 64 * 1024.)
    # A step does work, and no more than every core of the machine.
    self.assertGreater(figures['cpu_s_per_step'], 0.)
    self.assertAllClose(figures['cores_busy'], figures['cpu_s_per_step'] /
                        figures['s_per_step'], rtol=2e-2, atol=2e-3)
    self.assertLessEqual(figures['cores_busy'], os.cpu_count() + 0.1)

  def test_synthetic_tfrecords_with_ceiling(self):
    result = run_benchmark('--algorithm=supervised', '--batch_size=4',
                           '--steps=3', '--warmup=1', '--images=200',
                           '--labeled_images=50', '--ceiling', *TINY_NET)
    figures = self.last_json(result)
    self.assertEqual(figures['benchmark'], 'throughput')
    self.assertEqual(figures['data'], 'synthetic_tfrecords')
    self.assertEqual(figures['dataset'], 'synthetic.1@50-0')
    self.assertEqual((figures['algorithm'], figures['network']),
                     ('supervised', 'resnet'))
    self.assertEqual((figures['steps'], figures['warmup']), (3, 1))
    # Supervised: the labeled batch is every image of the step.
    self.assertEqual(figures['labeled_per_step'], 4)
    self.assertEqual(figures['images_per_step'], 4)
    for phase in ('real', 'ceiling'):
      self.assertConsistent(figures[phase], 4, 4)
    self.assertAllClose(figures['efficiency'],
                        figures['real']['labeled_img_s'] /
                        figures['ceiling']['labeled_img_s'], atol=1e-3)
    self.assertEqual(figures['environment']['tensorflow'], tf.__version__)
    self.assertEqual(figures['environment']['cpus'], os.cpu_count())
    self.assertIn('pipeline efficiency', result.stdout)

  def test_prepared_data_counts_sesemi_images(self):
    data_dir = self.get_temp_dir()
    data_fixtures.prepare_tiny_dataset(data_dir, n_train=64, n_test=16)
    split = data_fixtures.make_tiny_split(data_dir)
    result = run_benchmark('--data=prepared', '--data_dir=' + data_dir,
                           '--dataset=' + split, '--algorithm=sesemi',
                           '--batch_size=2', '--steps=2', '--warmup=1',
                           *TINY_NET)
    figures = self.last_json(result)
    self.assertEqual(figures['dataset'], split)
    self.assertNotIn('ceiling', figures)
    # SESEMI: 6 x batch_size labeled images, batch_size proxy sources x 6.
    self.assertEqual(figures['labeled_per_step'], 12)
    self.assertEqual(figures['images_per_step'], 24)
    self.assertConsistent(figures['real'], 12, 24)

  def test_bad_flags_one_line(self):
    for args, needle in ((['--steps=0'], '--steps'),
                         (['--data=prepared'], '--data_dir'),
                         (['--images=100', '--labeled_images=15'],
                          '--labeled_images')):
      result = run_benchmark(*args)
      self.assertEqual(result.returncode, 2, result.stderr)
      lines = [l for l in result.stderr.splitlines()
               if l.startswith('error:')]
      self.assertLen(lines, 1, result.stderr)
      self.assertIn(needle, lines[0])


class ThroughputTableTest(tf.test.TestCase):
  """benchmarks/throughput_table.py: one tiny real run, then a resume."""

  def run_table(self, *args):
    return data_fixtures.run_entry('benchmarks/throughput_table', *args)

  def test_runs_resumes_and_tabulates(self):
    work = self.get_temp_dir()
    results = os.path.join(work, 'results.jsonl')
    output = os.path.join(work, 'table.md')
    args = ['--flavors=stock=' + sys.executable, '--algorithms=supervised',
            '--ceiling_for=supervised', '--steps=2', '--warmup=1',
            '--results=' + results, '--output=' + output,
            '--extra=' + ','.join(['--batch_size=4', '--images=200',
                                   '--labeled_images=50'] + TINY_NET)]
    first = self.run_table(*args)
    self.assertEqual(first.returncode, 0, first.stderr[-3000:])
    with open(results) as f:
      lines = f.read().splitlines()
    self.assertLen(lines, 1)
    record = json.loads(lines[0])
    self.assertEqual((record['flavor'], record['algorithm'], record['steps']),
                     ('stock', 'supervised', 2))
    with open(output) as f:
      table = f.read().splitlines()
    self.assertLen(table, 3)  # header, rule, one row
    cells = [c.strip() for c in table[2].strip('|').split('|')]
    self.assertEqual(cells[:4], ['supervised', 'resnet', '4', 'stock'])
    self.assertEqual(float(cells[5]), record['real']['labeled_img_s'])
    self.assertEqual(float(cells[9]), record['ceiling']['labeled_img_s'])
    self.assertEqual(float(cells[10]), record['efficiency'])
    self.assertEqual(cells[11], '%.2f / %.2f' % (
        record['real']['cores_busy'], record['ceiling']['cores_busy']))
    # A second run finds the pair done: nothing is measured again.
    second = self.run_table(*args)
    self.assertEqual(second.returncode, 0, second.stderr[-3000:])
    self.assertNotIn('throughput.py', second.stdout)
    with open(results) as f:
      self.assertEqual(f.read().splitlines(), lines)

  def test_rounds_take_the_median_and_the_largest_rss(self):
    from benchmarks import throughput_table  # pylint: disable=g-import-not-at-top
    def result(flavor, img_s, rss):
      return {'flavor': flavor, 'algorithm': 'sesemi',
              'real': {'labeled_img_s': img_s, 'peak_rss_mb': rss}}
    results = [result('stock', 1.0, 900.), result('tf2', 5.0, 800.),
               result('tf2', 3.0, 950.), result('stock', 3.0, 700.),
               result('stock', 2.0, 800.), result('tf2', 4.0, 850.)]
    chosen = {r['flavor']: r for r in
              throughput_table.median_rounds(results, rounds=3)}
    self.assertEqual(chosen['stock']['real']['labeled_img_s'], 2.0)
    self.assertEqual(chosen['tf2']['real']['labeled_img_s'], 4.0)
    self.assertEqual((chosen['stock']['peak_rss_mb_max'],
                      chosen['tf2']['peak_rss_mb_max']), (900., 950.))
    self.assertEqual(chosen['tf2']['rounds'], 3)
    # Only the last `rounds` results of a pair count.
    last = {r['flavor']: r for r in
            throughput_table.median_rounds(results, rounds=1)}
    self.assertEqual(last['stock']['real']['labeled_img_s'], 2.0)
    self.assertEqual(last['stock']['peak_rss_mb_max'], 800.)

  def test_missing_interpreter_is_one_line(self):
    result = self.run_table('--flavors=intel=/nonexistent/python',
                            '--output=' + os.path.join(self.get_temp_dir(),
                                                       't.md'))
    self.assertEqual(result.returncode, 2)
    self.assertEqual(result.stderr.strip().splitlines(),
                     ['error: --flavors: intel: /nonexistent/python is not an '
                      'executable Python (make it with setup.sh)'])


class BareStepTest(tf.test.TestCase):
  """benchmarks/bare_step.py runs real steps and reports consistent figures."""

  def test_tiny_bare_step(self):
    result = data_fixtures.run_entry(
        'benchmarks/bare_step', '--batch_size=2', '--steps=2', '--warmup=1',
        '--filters=4', timeout=300)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    self.assertEqual((figures['batch_size'], figures['filters']), (2, 4))
    self.assertGreater(figures['s_per_step'], 0.)
    self.assertAllClose(figures['img_s'], 2 / figures['s_per_step'],
                        rtol=2e-3)
    self.assertEqual(figures['tensorflow'], tf.__version__)


class AgainstResearchTest(tf.test.TestCase):
  """benchmarks/against_research.py: a tiny real round, the table, a resume."""

  @unittest.skipIf(runtime.TF2, tests.RESEARCH_YARDSTICK_TF1_ONLY)
  def test_one_round_rescaled_and_resumed(self):
    work = self.get_temp_dir()
    results = os.path.join(work, 'rounds.jsonl')
    output = os.path.join(work, 'against.md')
    args = ['--yardstick=' + sys.executable,
            '--flavors=stock=' + sys.executable, '--algorithms=realmix',
            '--rounds=1', '--steps=1', '--warmup=1',
            '--results=' + results, '--output=' + output,
            '--yardstick_extra=--batch_size=2,--steps=1,--warmup=1,'
            '--filters=4',
            '--extra=' + ','.join(['--batch_size=2', '--images=200',
                                   '--labeled_images=50'] + TINY_NET)]
    first = data_fixtures.run_entry('benchmarks/against_research', *args)
    self.assertEqual(first.returncode, 0, first.stderr[-3000:])
    with open(results) as f:
      lines = f.read().splitlines()
    self.assertLen(lines, 1)
    record = json.loads(lines[0])
    bare = record['yardstick']['img_s']
    (run,) = record['runs']
    self.assertEqual((run['flavor'], run['algorithm'], run['batch_size']),
                     ('stock', 'realmix', 2))
    # The research rate (16.7 labeled img/s where the yardstick ran at 56)
    # rescaled by this round's yardstick, and our rate over it.
    research_here = 16.7 * bare / 56.
    with open(output) as f:
      table = f.read().splitlines()
    row = [c.strip() for c in table[2].strip('|').split('|')]
    self.assertEqual(row[:5], ['1', '%.1f' % bare, '%.2f' % (bare / 56.),
                               'stock', 'realmix'])
    self.assertEqual(row[5], '%.2f' % research_here)
    self.assertEqual(row[6], '%.2f' % run['real']['labeled_img_s'])
    ratio = '%.2fx' % (run['real']['labeled_img_s'] / research_here)
    self.assertEqual(row[7], ratio)
    self.assertIn('| stock | realmix | 1 | **%s** | %s | %s |'
                  % (ratio, ratio, ratio), table)
    # Done already: a second call measures nothing and rewrites the table.
    second = data_fixtures.run_entry('benchmarks/against_research', *args)
    self.assertEqual(second.returncode, 0, second.stderr[-3000:])
    self.assertNotIn('yardstick:', second.stdout)
    with open(results) as f:
      self.assertEqual(f.read().splitlines(), lines)
    with open(output) as f:
      self.assertEqual(f.read().splitlines(), table)


class ThreadProfileTest(tf.test.TestCase):
  """benchmarks/thread_profile.py around a tiny real throughput.py run."""

  def test_phases_and_threads_add_up(self):
    result = data_fixtures.run_entry(
        'benchmarks/thread_profile', '--interval=0.05', '--min_cpu=0.01',
        '--', *data_fixtures.entry_command(
            'benchmarks/throughput', ['--algorithm=supervised',
                                      '--batch_size=8', '--steps=40',
                                      '--warmup=1', '--images=200',
                                      '--labeled_images=50', '--ceiling'] +
            TINY_NET))
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    lines = result.stdout.strip().splitlines()
    # The command's own output passes through, its JSON included.
    inner = [json.loads(l) for l in lines if l.startswith('{"algorithm"')]
    self.assertLen(inner, 1)
    figures = json.loads(lines[-1])
    self.assertEqual(figures['benchmark'], 'thread_profile')
    self.assertCountEqual(figures['phases'], ['real', 'ceiling'])
    for phase, f in figures['phases'].items():
      self.assertGreater(f['window_s'], 0., phase)
      self.assertGreater(f['cpu_s'], 0., phase)
      self.assertAllClose(sum(f['threads_cpu_s']) + f['other_cpu_s'],
                          f['cpu_s'], atol=0.15)
      self.assertEqual(f['threads_cpu_s'],
                       sorted(f['threads_cpu_s'], reverse=True))
      self.assertLessEqual(f['cores_busy'], os.cpu_count() + 0.5)
    # Each window sits on its own phase: the real phase ends before the
    # ceiling's begins (with buffered output both were placed at the exit).
    phases = figures['phases']
    self.assertLessEqual(phases['real']['to_s'],
                         phases['ceiling']['from_s'] + 0.1)

  def test_no_command_is_one_line(self):
    result = data_fixtures.run_entry('benchmarks/thread_profile',
                                     timeout=120)
    self.assertEqual(result.returncode, 2)
    self.assertEqual(result.stderr.strip().splitlines(),
                     ['error: give the throughput.py command after --'])


if __name__ == '__main__':
  tf.test.main()
