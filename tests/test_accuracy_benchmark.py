"""benchmarks/accuracy.py end to end on a tiny prepared dataset.

A tiny 10-class dataset named fashion_mnist (8x8x1) is prepared in a
temporary DATA, so the script prepares only the split and no real
Fashion-MNIST is read. Two algorithms train on a tiny network for a budget
of 50 labeled images: supervised takes --batch_size=4 labeled images a step
(13 steps, 52 images), SESEMI 6 x 4 = 24 (3 steps, 72 images). The table in
accuracy.md must hold eval_results.json's figures, the report's PNGs must
decode, and a second invocation must train and evaluate nothing.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image
import tensorflow.compat.v1 as tf

from tests import data_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'accuracy.py')
BATCH = 4
BUDGET = 50
LABELS = 10
VALID = 10
N_TEST = 20
PER_STEP = {'supervised': BATCH, 'sesemi': 6 * BATCH}
EXTRA = ('--extra=--network=resnet,--filters=4,--repeat=1,--scales=1,'
         '--batch_size=%d,--ema_decay=0.5' % BATCH)
ACCURACY_COLUMNS = (('test raw', 'raw', 'test'), ('test EMA', 'ema', 'test'),
                    ('test tuned EMA', 'tuned_ema', 'test'),
                    ('valid raw', 'raw', 'valid'),
                    ('valid EMA', 'ema', 'valid'),
                    ('valid tuned EMA', 'tuned_ema', 'valid'))
HEADING = '## %d labels (`fashion_mnist.1@%d-%d`)' % (LABELS, LABELS, VALID)


def run_script(*args):
  return subprocess.run(
      [sys.executable, SCRIPT] + list(args), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, universal_newlines=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'), timeout=600,
      check=False)


def markdown_table(text, heading):
  """{first cell: {header: cell}} of the first table after `heading`."""
  lines = text.splitlines()
  start = lines.index(heading)
  rows = []
  for line in lines[start + 1:]:
    if line.startswith('#'):
      break
    if line.startswith('|'):
      rows.append([c.strip() for c in line.strip().strip('|').split('|')])
    elif rows:
      break
  header = rows[0]
  return {r[0]: dict(zip(header, r)) for r in rows[2:]}


def mtimes(directory):
  """{relative path: mtime} of every file under directory."""
  found = {}
  for parent, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(parent, name)
      found[os.path.relpath(path, directory)] = os.stat(path).st_mtime_ns
  return found


class AccuracyBenchmarkTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super(AccuracyBenchmarkTest, cls).setUpClass()
    cls.work = tempfile.mkdtemp(prefix='accuracy_test')
    cls.data_dir = os.path.join(cls.work, 'data')
    data_fixtures.prepare_tiny_dataset(
        cls.data_dir, name='fashion_mnist', shape=(8, 8, 1), num_classes=10,
        n_train=60, n_test=N_TEST)
    cls.runs = os.path.join(cls.work, 'runs')
    cls.docs = os.path.join(cls.work, 'docs')
    cls.args = ['--data_dir=' + cls.data_dir, '--work_dir=' + cls.runs,
                '--docs_dir=' + cls.docs, '--labels=%d' % LABELS,
                '--valid=%d' % VALID, '--labeled_images=%d' % BUDGET,
                '--algorithms=supervised,sesemi', '--evals_per_run=1', EXTRA]
    cls.first = run_script(*cls.args)
    assert cls.first.returncode == 0, cls.first.stderr[-3000:]
    cls.first_files = mtimes(cls.runs)
    cls.first_docs = mtimes(cls.docs)
    cls.second = run_script(*cls.args)
    assert cls.second.returncode == 0, cls.second.stderr[-3000:]
    with open(os.path.join(cls.docs, 'accuracy.md')) as f:
      cls.markdown = f.read()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.work, ignore_errors=True)
    super(AccuracyBenchmarkTest, cls).tearDownClass()

  def model_dir(self, algorithm):
    return os.path.join(self.runs, str(LABELS), algorithm)

  def results(self, algorithm):
    with open(os.path.join(self.model_dir(algorithm),
                           'eval_results.json')) as f:
      return json.load(f)

  def test_equal_budget_in_labeled_images(self):
    table = markdown_table(self.markdown, HEADING)
    self.assertEqual(list(table), ['supervised', 'sesemi'])
    for algorithm, per_step in PER_STEP.items():
      steps = math.ceil(BUDGET / per_step)
      row = table[algorithm]
      self.assertEqual(int(row['steps']), steps)
      self.assertEqual(int(row['labeled a step']), per_step)
      self.assertEqual(int(row['labeled images']), steps * per_step)
      self.assertGreaterEqual(steps * per_step, BUDGET)
      self.assertLess((steps - 1) * per_step, BUDGET)
      self.assertEqual(self.results(algorithm)['step'], steps)
      # train.py's own count of the labeled images a step agrees.
      with open(os.path.join(self.model_dir(algorithm), 'accuracy.log')) as f:
        self.assertIn(', %d steps, %d labeled + ' % (steps, per_step),
                      f.read())

  def test_tables_hold_eval_results(self):
    table = markdown_table(self.markdown, HEADING)
    summary = json.loads(self.first.stdout.strip().splitlines()[-1])
    by_algorithm = {r['algorithm']: r for r in summary['runs']}
    self.assertEqual(summary['labels'], [LABELS])
    for algorithm in PER_STEP:
      rows = self.results(algorithm)['results']
      self.assertEqual(self.results(algorithm)['counts'],
                       {'labeled': LABELS, 'valid': VALID, 'test': N_TEST})
      for header, row, column in ACCURACY_COLUMNS:
        self.assertEqual(table[algorithm][header],
                         '%.2f' % rows[row][column], (algorithm, header))
      json_row = by_algorithm[algorithm]
      self.assertEqual(json_row['test_tuned_ema'], rows['tuned_ema']['test'])
      self.assertEqual(json_row['valid_raw'], rows['raw']['valid'])
      # Labeled img/s: the median of train.py's progress lines.
      with open(os.path.join(self.model_dir(algorithm), 'accuracy.log')) as f:
        rates = [float(line.split()[2]) for line in f
                 if line.startswith('step ') and 'labeled img/s' in line]
      self.assertNotEmpty(rates)
      self.assertAlmostEqual(float(table[algorithm]['labeled img/s']),
                             np.median(rates), delta=0.051)
      with open(os.path.join(self.model_dir(algorithm),
                             'accuracy_timing.json')) as f:
        seconds = json.load(f)['seconds']
      self.assertGreater(seconds, 0)
      self.assertEqual(table[algorithm]['wall min'], '%.1f' % (seconds / 60))
    # The tables are printed too.
    self.assertIn('| supervised | %d | %d |' % (math.ceil(BUDGET / BATCH),
                                                BATCH), self.first.stdout)
    self.assertIn('--labeled_images=%d' % BUDGET, self.markdown)

  def test_report_pngs_decode_and_are_linked(self):
    out = os.path.join(self.docs, 'accuracy', str(LABELS))
    self.assertIn('](accuracy/%d/report.md)' % LABELS, self.markdown)
    self.assertIn('](accuracy/%d/accuracy.png)' % LABELS, self.markdown)
    with open(os.path.join(out, 'report.md')) as f:
      report = f.read()
    for name in ('losses.png', 'lr.png', 'accuracy.png',
                 'confusion_supervised.png', 'confusion_sesemi.png'):
      image = Image.open(os.path.join(out, name))
      image.load()
      self.assertEqual(image.format, 'PNG')
      pixels = np.asarray(image.convert('L'), np.float32)
      self.assertGreater(pixels.std(), 5., '%s looks blank' % name)
      self.assertIn('(%s)' % name, report)
    # report.md's summary has both runs under their algorithm names.
    self.assertIn('| supervised | supervised |', report)
    self.assertIn('| sesemi | sesemi |', report)

  def test_second_invocation_trains_nothing(self):
    self.assertNotIn('training', self.second.stdout)
    self.assertNotIn('evaluating', self.second.stdout)
    self.assertNotIn('report in', self.second.stdout)
    self.assertEqual(mtimes(self.runs), self.first_files)
    after = mtimes(self.docs)
    self.assertEqual({k: v for k, v in after.items() if k != 'accuracy.md'},
                     {k: v for k, v in self.first_docs.items()
                      if k != 'accuracy.md'})
    self.assertTrue(any(k.startswith('model.ckpt-') for k in
                        os.listdir(self.model_dir('sesemi'))))
    first = json.loads(self.first.stdout.strip().splitlines()[-1])
    second = json.loads(self.second.stdout.strip().splitlines()[-1])
    self.assertEqual(first, second)

  def test_bad_flags_are_one_line_errors(self):
    cases = [
        (['--algorithms=supervised,nope'], "unknown algorithm 'nope'"),
        (['--labels=100,15'], '15 is not a positive multiple of 10'),
        (['--extra=--train_steps=5'], '--train_steps=5 is set by the script'),
        # The finished runs were trained with --filters=4: not reused.
        ([EXTRA.replace('--filters=4', '--filters=8')],
         'trained with other params (filters: 4, now 8)'),
    ]
    for extra_args, needle in cases:
      result = run_script(*(self.args + extra_args))
      self.assertEqual(result.returncode, 2, result.stderr)
      lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
      self.assertLen(lines, 1, result.stderr)
      self.assertIn(needle, lines[0])
      self.assertNotIn('Traceback', result.stderr)


if __name__ == '__main__':
  tf.test.main()
