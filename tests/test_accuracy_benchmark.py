"""benchmarks/accuracy.py end to end on a tiny prepared dataset (a tiny
10-class fashion_mnist, so no real Fashion-MNIST is read), and its
aggregation over seeds in-process.
"""

import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image
import tensorflow.compat.v1 as tf

from tests import data_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 4
BUDGET = 50
LABELS = 10
VALID = 10
N_TEST = 20
PER_STEP = {'supervised': BATCH, 'sesemi': 6 * BATCH}
EXTRA = ('--extra=--network=resnet,--filters=4,--repeat=1,--scales=1,'
         '--batch_size=%d,--ema_decay=0.5' % BATCH)
# The runs keep an EMA (--ema_decay=0.5): the headline is the EMA model's.
ACCURACY_COLUMNS = (('test', 'ema', 'test'), ('test tuned', 'tuned_ema', 'test'),
                    ('valid', 'ema', 'valid'),
                    ('valid tuned', 'tuned_ema', 'valid'),
                    ('test raw', 'raw', 'test'), ('test EMA', 'ema', 'test'))
HEADING = '## %d labels (`fashion_mnist.1@%d-%d`)' % (LABELS, LABELS, VALID)
CEILING_HEADING = ('## Ceiling: supervised on all 60 training labels '
                   '(`fashion_mnist`)')


def run_script(*args):
  return data_fixtures.run_entry('benchmarks/accuracy', *args)


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

  def model_dir(self, algorithm, labels=str(LABELS)):
    return os.path.join(self.runs, labels, algorithm + '_s1')

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
      self.assertEqual(row['seeds'], '1')
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
      self.assertEqual(json_row['test'], rows['ema']['test'])
      self.assertEqual(json_row['test_tuned'], rows['tuned_ema']['test'])
      self.assertEqual(json_row['test_tuned_ema'], rows['tuned_ema']['test'])
      self.assertEqual(json_row['valid_raw'], rows['raw']['valid'])
      self.assertEqual(json_row['tune'], 'stream')
      self.assertEqual(json_row['runtimes'], [summary['runtime']])
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
    self.assertIn('| supervised | 1 | %d | %d |' % (math.ceil(BUDGET / BATCH),
                                                    BATCH), self.first.stdout)
    self.assertIn('--labeled_images=%d' % BUDGET, self.markdown)
    # The runtime that ran them is recorded.
    self.assertIn('tensorflow %s' % tf.__version__, self.markdown)
    self.assertIn('tensorflow %s' % tf.__version__, summary['runtime'])

  def test_time_to_accuracy_from_the_periodic_evaluations(self):
    table = markdown_table(self.markdown, HEADING)
    for algorithm in PER_STEP:
      with open(os.path.join(self.model_dir(algorithm),
                             'accuracy_timing.json')) as f:
        timing = json.load(f)
      # --evals_per_run=1: one periodic evaluation, at the last step, as
      # train.py printed it.
      self.assertLen(timing['evals'], 1)
      evaluation = timing['evals'][0]
      self.assertEqual(evaluation['step'], math.ceil(BUDGET /
                                                     PER_STEP[algorithm]))
      self.assertEqual(evaluation['part'], 'valid')
      with open(os.path.join(self.model_dir(algorithm), 'accuracy.log')) as f:
        self.assertIn('step %d: valid accuracy %.2f%%  valid ema/accuracy '
                      '%.2f%%' % (evaluation['step'], evaluation['accuracy'],
                                  evaluation['ema_accuracy']), f.read())
      self.assertBetween(evaluation['seconds'], 0., timing['seconds'])
      for threshold in (80, 85):
        expected = ('%.1f' % (evaluation['seconds'] / 60.)
                    if evaluation['ema_accuracy'] >= threshold else '-')
        self.assertEqual(table[algorithm]['min to %d %%' % threshold],
                         expected)

  def test_ceiling_on_all_labels(self):
    table = markdown_table(self.markdown, CEILING_HEADING)
    self.assertEqual(list(table), ['supervised'])
    results = self.results_of(self.model_dir('supervised', 'all'))
    self.assertEqual(results['dataset'], 'fashion_mnist')
    self.assertEqual(results['counts'], {'labeled': 60, 'test': N_TEST})
    self.assertEqual(table['supervised']['test'],
                     '%.2f' % results['results']['ema']['test'])
    self.assertEqual(table['supervised']['valid'], '-')
    self.assertEqual(table['supervised']['steps'],
                     str(math.ceil(BUDGET / BATCH)))
    summary = json.loads(self.first.stdout.strip().splitlines()[-1])
    self.assertEqual(summary['ceiling']['labels'], 60)

  def results_of(self, model_dir):
    with open(os.path.join(model_dir, 'eval_results.json')) as f:
      return json.load(f)

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
    self.assertTrue(any(k.startswith('model.ckpt-') for k in
                        os.listdir(self.model_dir('supervised', 'all'))))
    first = json.loads(self.first.stdout.strip().splitlines()[-1])
    second = json.loads(self.second.stdout.strip().splitlines()[-1])
    self.assertEqual(first, second)

  def test_report_only_trains_nothing_and_leaves_out_what_is_not_done(self):
    # On a copy of the runs (mtimes kept), so the other tests' checks of the
    # shared directory hold in any order.
    runs = os.path.join(self.work, 'runs_report_only')
    shutil.copytree(self.runs, runs)
    before = mtimes(runs)
    docs = os.path.join(self.work, 'docs_report_only')
    args = [a for a in self.args if not a.startswith(
        ('--algorithms=', '--docs_dir=', '--work_dir='))]
    result = run_script(*(args + ['--algorithms=supervised,mixup,sesemi',
                                  '--work_dir=' + runs, '--docs_dir=' + docs,
                                  '--report_only']))
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertNotIn('training', result.stdout)
    self.assertFalse(os.path.exists(os.path.join(runs, str(LABELS),
                                                 'mixup_s1')))
    # The model directories are untouched (the plots' log is rewritten).
    def runs_only(files):
      return {k: v for k, v in files.items() if '_s1' + os.sep in k}
    self.assertEqual(runs_only(mtimes(runs)), runs_only(before))
    with open(os.path.join(docs, 'accuracy.md')) as f:
      table = markdown_table(f.read(), HEADING)
    self.assertEqual(list(table), ['supervised', 'sesemi'])
    self.assertEqual(table['sesemi'], markdown_table(self.markdown,
                                                     HEADING)['sesemi'])

  def test_resume_accepts_runs_with_data_params(self):
    # FlexMatch's params.json holds facts train.py adds from the split
    # (unlabeled_pool_size, unlabeled_index_range): a second invocation and
    # --report_only must compare against them, not refuse the run.
    runs = os.path.join(self.work, 'runs_flexmatch')
    args = [a for a in self.args if not a.startswith(
        ('--algorithms=', '--docs_dir=', '--work_dir='))] + [
            '--algorithms=flexmatch', '--noceiling', '--work_dir=' + runs,
            '--docs_dir=' + os.path.join(self.work, 'docs_flexmatch')]
    first = run_script(*args)
    self.assertEqual(first.returncode, 0, first.stderr[-3000:])
    for extra in ([], ['--report_only']):
      again = run_script(*(args + extra))
      self.assertEqual(again.returncode, 0, again.stderr[-3000:])
      self.assertNotIn('training', again.stdout)

  def test_older_evaluation_is_marked_then_evaluated_again(self):
    # A run evaluated by an eval.py before per-row stream tuning: its tuned
    # cells carry the mark; a second invocation evaluates it again (not
    # trains), outside its timed wall minutes.
    runs = os.path.join(self.work, 'runs_old_eval')
    shutil.copytree(self.runs, runs)
    model_dir = os.path.join(runs, str(LABELS), 'sesemi_s1')
    path = os.path.join(model_dir, 'eval_results.json')
    with open(path) as f:
      results = json.load(f)
    del results['tune']['per_row']
    with open(path, 'w') as f:
      json.dump(results, f)
    with open(os.path.join(model_dir, 'accuracy_timing.json')) as f:
      timing = f.read()
    args = [a for a in self.args if not a.startswith(
        ('--docs_dir=', '--work_dir='))] + ['--work_dir=' + runs]
    docs = os.path.join(self.work, 'docs_old_eval')
    tables = []
    for extra in (['--report_only'], []):
      result = run_script(*(args + extra + ['--docs_dir=' + docs]))
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
      self.assertNotIn('training', result.stdout)
      with open(os.path.join(docs, 'accuracy.md')) as f:
        tables.append(markdown_table(f.read(), HEADING))
    self.assertIn('10 labels, sesemi, seed 1: evaluating again',
                  result.stdout)
    self.assertNotIn('supervised, seed 1: evaluating', result.stdout)
    stale, fresh = tables
    for column in ('test tuned', 'valid tuned'):
      self.assertTrue(stale['sesemi'][column].endswith(' †'))
      self.assertFalse(stale['supervised'][column].endswith('†'))
      self.assertFalse(fresh['sesemi'][column].endswith('†'))
    self.assertEqual(stale['sesemi']['test'], fresh['sesemi']['test'])
    with open(path) as f:
      self.assertTrue(json.load(f)['tune']['per_row'])
    with open(os.path.join(model_dir, 'accuracy_timing.json')) as f:
      self.assertEqual(f.read(), timing)

  def test_bad_flags_are_one_line_errors(self):
    cases = [
        (['--algorithms=supervised,nope'], "unknown algorithm 'nope'"),
        (['--labels=100,15'], '15 is not a positive multiple of 10'),
        (['--extra=--train_steps=5'], '--train_steps=5 is set by the script'),
        (['--extra=--seed=5'], '--seed=5 is set by the script'),
        (['--seeds=1,x'], "--seeds: 'x' is not an integer seed"),
        (['--seeds=1,1'], '--seeds repeats a seed'),
        (['--label_seeds=30:1'], '--label_seeds: 30 is not one of --labels'),
        (['--label_seeds=10'], '--label_seeds (10): no seed'),
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


class AggregationTest(tf.test.TestCase):
  """Mean ± spread over seeds and the time-to-accuracy cells, in-process."""

  def setUp(self):
    super(AggregationTest, self).setUp()
    sys.path.insert(0, ROOT)
    from benchmarks import accuracy  # pylint: disable=g-import-not-at-top
    self.accuracy = accuracy

  def run_row(self, seed, test, tuned, minutes_80, minutes_85):
    row = {'algorithm': 'mixmatch', 'labels': 1000, 'seed': seed,
           'steps': 500, 'labeled_per_step': 32, 'labeled_images': 16000,
           'test': test, 'test_tuned': tuned, 'valid': test - 1.,
           'valid_tuned': tuned - 1., 'minutes_to_80': minutes_80,
           'minutes_to_85': minutes_85, 'labeled_img_per_s': 100. + seed,
           'wall_minutes': 30. + seed, 'runtimes': [], 'tuned_per_row': True}
    for key, _, _ in self.accuracy.ACCURACIES:
      row[key] = test
    return row

  def test_mean_and_spread_over_seeds(self):
    runs = [self.run_row(1, 86., 87., 10., 20.),
            self.run_row(2, 88., 88., 12., None)]
    row = self.accuracy.cell(runs)
    self.assertEqual(row['seeds'], [1, 2])
    self.assertAllClose(row['test'], 87.)
    self.assertAllClose(row['test_spread'], np.std([86., 88.], ddof=1))
    self.assertEqual(row['minutes_to_85_reached'], 1)
    line = self.accuracy.table([row])[2]
    cells = [c.strip() for c in line.strip('|').split('|')]
    header = self.accuracy.TABLE_HEADER
    by_header = dict(zip(header, cells))
    self.assertEqual(by_header['seeds'], '1,2')
    self.assertEqual(by_header['test'], '87.00 ± 1.41')
    self.assertEqual(by_header['test tuned'], '87.50 ± 0.71')
    self.assertEqual(by_header['min to 80 %'], '11.0 ± 1.4')
    self.assertEqual(by_header['min to 85 %'], '20.0 (1/2)')
    # One seed: no spread.
    single = self.accuracy.table([self.accuracy.cell(runs[:1])])[2]
    self.assertIn('| 86.00 | 87.00 |', single)
    # A seed whose tuned rows an older eval.py computed marks the tuned cells.
    runs[1]['tuned_per_row'] = False
    cells = dict(zip(header, [c.strip() for c in self.accuracy.table(
        [self.accuracy.cell(runs)])[2].strip('|').split('|')]))
    self.assertEqual(cells['test tuned'], '87.50 ± 0.71 †')
    self.assertEqual(cells['test'], '87.00 ± 1.41')

  def test_minutes_to_threshold(self):
    evals = [{'step': 20, 'seconds': 600., 'accuracy': 84., 'ema_accuracy':
              86.},
             {'step': 10, 'seconds': 300., 'accuracy': 81., 'ema_accuracy':
              79.},
             {'step': 30, 'seconds': 900., 'accuracy': 90., 'ema_accuracy':
              None}]
    # EMA where reported, else raw; the first evaluation in step order.
    self.assertEqual(self.accuracy.minutes_to(evals, 80), 10.)
    self.assertEqual(self.accuracy.minutes_to(evals, 85), 10.)
    self.assertEqual(self.accuracy.minutes_to(evals, 88), 15.)
    self.assertIsNone(self.accuracy.minutes_to(evals, 95))
    self.assertEqual(self.accuracy.parse_eval_line(
        'step 120: valid accuracy 81.20%  valid ema/accuracy 82.00%\n'),
                     {'step': 120, 'part': 'valid', 'accuracy': 81.2,
                      'ema_accuracy': 82.})
    self.assertIsNone(self.accuracy.parse_eval_line(
        'step 120/500  99.0 labeled img/s'))


if __name__ == '__main__':
  tf.test.main()
