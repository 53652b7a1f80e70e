"""launch/report.py on tiny real runs (plots, confusion matrix, Markdown
table), and its event reading on known events.
"""

import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
import tensorflow.compat.v1 as tf

from launch import report as report_lib
from runner import cli
from tests import data_fixtures

TINY_NET = data_fixtures.TINY_NET
N_TEST = 16
NUM_CLASSES = 4
LR = 0.01


run_entry = data_fixtures.run_entry


def _markdown_table(text, first_header_cell):
  """Rows (lists of cells) of the Markdown table whose header starts so."""
  lines = text.splitlines()
  for i, line in enumerate(lines):
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if line.startswith('|') and cells[0] == first_header_cell:
      rows = [cells]
      for row in lines[i + 2:]:
        if not row.startswith('|'):
          break
        rows.append([c.strip() for c in row.strip().strip('|').split('|')])
      return rows
  raise AssertionError('no table starting with %r in:\n%s'
                       % (first_header_cell, text))


class ReportTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super(ReportTest, cls).setUpClass()
    cls.work = tempfile.mkdtemp(prefix='report_test')
    cls.data_dir = os.path.join(cls.work, 'data')
    data_fixtures.prepare_tiny_dataset(cls.data_dir, n_train=64, n_test=N_TEST)
    split = data_fixtures.make_tiny_split(cls.data_dir)  # tiny.1@8-8
    common = ['--data_dir=' + cls.data_dir, '--dataset=' + split,
              '--save_checkpoints_steps=3', '--log_every_steps=1',
              '--algorithm=supervised', '--batch_size=4',
              '--lr_schedule=constant', '--warmup_steps=0', '--lr=%g' % LR
             ] + TINY_NET
    cls.ema_dir = os.path.join(cls.work, 'runs', 'with_ema')
    cls.raw_dir = os.path.join(cls.work, 'runs', 'no_ema')
    for args in ([cls.ema_dir, '--ema_decay=0.5', '--train_steps=6'],
                 [cls.raw_dir, '--ema_decay=0', '--train_steps=4']):
      result = run_entry('train', '--model_dir=' + args[0],
                                     *(common + args[1:]))
      assert result.returncode == 0, result.stderr[-3000:]
    result = run_entry('eval', '--model_dir=' + cls.ema_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(cls.ema_dir, 'eval_results.json')) as f:
      cls.results = json.load(f)
    cls.out = os.path.join(cls.work, 'report')
    cls.result = run_entry(
        'report', '--model_dir=' + cls.ema_dir, '--model_dir=' + cls.raw_dir,
        '--output_dir=' + cls.out)
    assert cls.result.returncode == 0, cls.result.stderr[-3000:]
    with open(os.path.join(cls.out, 'report.md')) as f:
      cls.markdown = f.read()
    with open(os.path.join(cls.out, 'report.json')) as f:
      cls.data = json.load(f)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.work, ignore_errors=True)
    super(ReportTest, cls).tearDownClass()

  def test_files_exist_and_pngs_decode(self):
    names = ['losses.png', 'lr.png', 'accuracy.png', 'confusion_with_ema.png',
             'confusion_no_ema.png']
    self.assertCountEqual(os.listdir(self.out),
                          names + ['report.md', 'report.json'])
    for name in names:
      self.assertIn('wrote %s' % os.path.join(self.out, name),
                    self.result.stdout)
      image = Image.open(os.path.join(self.out, name))
      image.load()
      self.assertEqual(image.format, 'PNG')
      width, height = image.size
      self.assertBetween(width, 300, 3000, name)
      self.assertBetween(height, 200, 3000, name)
      pixels = np.asarray(image.convert('L'), np.float32)
      self.assertGreater(pixels.std(), 5., '%s looks blank' % name)
      self.assertIn('(%s)' % name, self.markdown)

  def test_confusion_matrix_agrees_with_eval(self):
    runs = {run['name']: run for run in self.data['runs']}
    self.assertEqual(list(runs), ['with_ema', 'no_ema'])
    for run in runs.values():
      matrix = np.array(run['confusion']['matrix'])
      self.assertEqual(matrix.shape, (NUM_CLASSES, NUM_CLASSES))
      self.assertEqual(matrix.sum(), N_TEST)
      # tiny_arrays cycles the labels: every class has N_TEST / K images.
      self.assertAllEqual(matrix.sum(axis=1), [N_TEST // NUM_CLASSES] * 4)
      self.assertEqual(run['confusion']['class_names'],
                       ['class%d' % c for c in range(NUM_CLASSES)])
    # The EMA run's matrix is the EMA model's: its accuracy is eval.py's.
    matrix = np.array(runs['with_ema']['confusion']['matrix'])
    self.assertTrue(runs['with_ema']['confusion']['checkpoint'].endswith(
        'model.ckpt-6'))
    self.assertAllClose(100. * np.trace(matrix) / N_TEST,
                        self.results['results']['ema']['test'])
    rows = _markdown_table(self.markdown, 'true \\ predicted')
    self.assertEqual(rows[0][1:], ['class%d' % c for c in range(NUM_CLASSES)])
    self.assertAllEqual(np.array([r[1:] for r in rows[1:5]], np.int64), matrix)

  def test_a_new_report_removes_the_earlier_plots_it_does_not_draw(self):
    out = os.path.join(self.get_temp_dir(), 'again')
    shutil.copytree(self.out, out)
    mine = os.path.join(out, 'mine.png')  # the user's, not in report.json
    with open(mine, 'wb') as f:
      f.write(b'not ours')
    lines = []
    report_lib.report([self.raw_dir], out, confusion=False,
                      printer=lines.append)
    self.assertCountEqual(os.listdir(out), [
        'losses.png', 'lr.png', 'accuracy.png', 'mine.png', 'report.md',
        'report.json'])
    for name in ('confusion_with_ema.png', 'confusion_no_ema.png'):
      self.assertIn("removed %s (the previous report's, not in this one)"
                    % os.path.join(out, name), lines)
    with open(mine, 'rb') as f:
      self.assertEqual(f.read(), b'not ours')
    with open(os.path.join(out, 'report.md')) as f:
      self.assertNotIn('confusion_', f.read())

  def test_markdown_eval_table_equals_eval_results(self):
    rows = _markdown_table(self.markdown, '')
    counts = self.results['counts']
    self.assertEqual(rows[0][1:], ['%s (%d)' % (c, counts[c])
                                   for c in ('labeled', 'valid', 'test')])
    table = {r[0]: r[1:] for r in rows[1:]}
    self.assertCountEqual(table, self.results['results'])
    for row, values in self.results['results'].items():
      for column, cell in zip(('labeled', 'valid', 'test'), table[row]):
        self.assertEqual(float(cell), round(values[column], 2), (row, column))
    # The all-runs table: the EMA run's test figures, and '-' for the run
    # that has no eval_results.json.
    summary = _markdown_table(self.markdown, 'run')
    header = summary[0]
    by_run = {r[0]: dict(zip(header, r)) for r in summary[1:]}
    ema_row = by_run['with_ema']
    self.assertEqual(ema_row['step'], '6')
    for row in ('raw', 'ema', 'tuned_raw', 'tuned_ema'):
      self.assertEqual(float(ema_row['test ' + row]),
                       round(self.results['results'][row]['test'], 2))
    self.assertEqual(float(ema_row['test']),
                     round(self.results['results']['ema']['test'], 2))
    self.assertEqual(ema_row['tune'], self.results['tune']['mode'])
    raw_row = by_run['no_ema']
    self.assertEqual(raw_row['step'], '4')
    self.assertEqual(raw_row['test raw'], '-')
    self.assertIn('No eval_results.json', self.markdown)

  def test_scalars_read_from_the_runs(self):
    train = report_lib.read_scalars(self.ema_dir)
    self.assertIn('losses/xe', train)
    self.assertIn('lr', train)
    steps, values = train['lr']
    # Summaries every --log_every_steps=1 step (the Estimator's cadence).
    self.assertAllEqual(steps, [1, 2, 3, 4, 5, 6])
    self.assertAllClose(values, np.full(6, LR))
    evals = report_lib.load_run(self.ema_dir).evals
    self.assertEqual(list(evals), ['valid'])
    steps, accuracy = evals['valid']['ema/accuracy']
    self.assertAllEqual(steps, [3, 6])
    # Eval at step 6 is the checkpoint eval.py evaluated.
    self.assertAllClose(100. * accuracy[-1],
                        self.results['results']['ema']['valid'])
    final = {r['name']: r['final_train_scalars'] for r in self.data['runs']}
    self.assertAllClose(final['no_ema']['losses/xe'],
                        report_lib.read_scalars(self.raw_dir)['losses/xe'][1][-1])

  def test_errors(self):
    # As a user sees it: one line, exit 2.
    result = run_entry('report', '--model_dir=' + self.data_dir,
                       '--output_dir=' + self.work)
    self.assertEqual(result.returncode, 2, result.stderr)
    lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
    self.assertLen(lines, 1, result.stderr)
    self.assertIn(os.path.join(self.data_dir, 'params.json'), lines[0])
    self.assertNotIn('Traceback', result.stderr)
    cases = [
        (([], self.work), '--model_dir'),
        (([self.ema_dir], None), '--output_dir'),
        (([self.ema_dir, self.raw_dir], self.work, ['one']), '--names'),
        (([self.ema_dir, self.raw_dir], self.work, ['a', 'a']), '--names'),
        (([os.path.join(self.work, 'nope')], self.work), 'not a directory'),
    ]
    for args, needle in cases:
      with self.assertRaisesRegex(cli.UsageError, needle):
        report_lib.report(*args, printer=lambda _: None)


class ReadScalarsTest(tf.test.TestCase):

  def _write(self, directory, points, suffix):
    """Writes (step, tag, value) scalar events to a new event file."""
    writer = tf.summary.FileWriter(directory, filename_suffix=suffix)
    for step, tag, value in points:
      summary = tf.Summary(value=[tf.Summary.Value(tag=tag,
                                                   simple_value=value)])
      writer.add_summary(summary, step)
    writer.flush()
    writer.close()

  def test_resumed_steps_take_the_last_value_and_images_are_skipped(self):
    directory = self.get_temp_dir()
    self._write(directory, [(1, 'lr', .1), (2, 'lr', .2), (3, 'lr', .3),
                            (2, 'losses/xe', 5.)], '.a')
    # A resumed run writes steps 2..4 again, in a later file.
    self._write(directory, [(2, 'lr', .25), (4, 'lr', .4)], '.b')
    writer = tf.summary.FileWriter(directory, filename_suffix='.c')
    image = tf.Summary.Image(height=1, width=1, colorspace=1,
                             encoded_image_string=b'x')
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(
        tag='images/labeled', image=image)]), 5)
    # A TF2-style scalar stored as a tensor.
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(
        tag='monitors/mask',
        tensor=tf.make_tensor_proto(np.float32(.75)))]), 5)
    writer.close()
    scalars = report_lib.read_scalars(directory)
    self.assertCountEqual(scalars, ['lr', 'losses/xe', 'monitors/mask'])
    steps, values = scalars['lr']
    self.assertAllEqual(steps, [1, 2, 3, 4])
    self.assertAllClose(values, [.1, .25, .3, .4])
    self.assertAllClose(scalars['monitors/mask'][1], [.75])

  def test_run_names_are_unique(self):
    self.assertEqual(report_lib.run_names(['/a/x/run', '/a/y/run']),
                     ['x/run', 'y/run'])
    self.assertEqual(report_lib.run_names(['/a/one', '/a/two']),
                     ['one', 'two'])


if __name__ == '__main__':
  tf.test.main()
