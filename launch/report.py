r"""Plots and a Markdown summary of one or more training runs.

  python launch/report.py --model_dir=runs/sesemi [--model_dir=runs/realmix ...] \
      --output_dir=report [--names=sesemi,realmix] [--no_confusion]

Reads each run's TensorBoard event files with TensorFlow's summary iterator
(training scalars in MODEL_DIR, evaluation scalars in MODEL_DIR/eval_<part>,
which train.py writes every --save_checkpoints_steps), its params.json and
its eval_results.json (launch/eval.py), and writes to OUTPUT_DIR:

  losses.png        every `losses/<term>` against steps, one panel a term
  lr.png            the learning rate against steps
  accuracy.png      evaluation accuracy (raw solid, EMA dashed) against
                    steps, one panel per evaluated part (valid, test)
  monitors.png      the algorithms' `monitors/*` scalars, when there are any
  confusion_<run>.png  the test-set confusion matrix of each run's newest
                    checkpoint (EMA weights when the run kept an EMA)
  report.json       the same data: runs, final scalars, confusion matrices
  report.md         a summary table of all runs, each run's evaluation
                    table from eval_results.json, its confusion matrix and
                    the plots

Runs are overlaid in every plot, one colour per run. A run without
eval_results.json or without a checkpoint is reported with what it has.
Writing into an earlier report's OUTPUT_DIR replaces it: the earlier plots
this report does not draw again (listed in its report.json) are removed,
and nothing else there is touched.
"""

import collections
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags
import matplotlib
matplotlib.use('Agg')
from matplotlib import pyplot as plt
from matplotlib import ticker
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import errors
from input_pipeline import fileio
from input_pipeline import inputs
from input_pipeline import sources
from model_fns import core
from runner import cli
from runner import devices
from runner import model_dir as model_dir_lib
from runner import params as params_lib
from runner import results as results_lib

FLAGS = flags.FLAGS
REPORT_FILE = 'report.md'
DATA_FILE = 'report.json'
EVAL_PREFIX = 'eval_'
LOSS_PREFIX = 'losses/'
MONITOR_PREFIX = 'monitors/'
ACCURACY_TAGS = (('accuracy', 'raw', '-'), ('ema/accuracy', 'ema', '--'))
# Confusion matrices larger than this are drawn without per-cell numbers.
ANNOTATE_MAX_CLASSES = 20

Run = collections.namedtuple(
    'Run', ['name', 'model_dir', 'params', 'train', 'evals', 'results'])


def define_flags():
  flags.DEFINE_multi_string('model_dir', None,
                            'A model directory made by train.py; repeat to '
                            'compare runs.')
  flags.DEFINE_string('output_dir', None, 'Where the plots and report go.')
  flags.DEFINE_list('names', None, 'Run names (default: the directory names).')
  flags.DEFINE_string('data_dir', None, 'Overrides every params.json\'s '
                      'data_dir (for the confusion matrices).')
  flags.DEFINE_integer('batch_size', 256, 'Prediction batch size.')
  flags.DEFINE_bool('no_confusion', False, 'Skip the confusion matrices.')


def read_scalars(directory):
  """Scalar summaries of the event files directly in `directory`.

  Returns:
    {tag: (steps int64 [N], values float64 [N])} sorted by step. When a step
    was written more than once (a resumed run repeats the steps after its
    last checkpoint), the value written last wins.
  """
  found = {}
  for path in glob.glob(os.path.join(glob.escape(directory),
                                   'events.out.tfevents.*')):
    try:
      for event in tf.train.summary_iterator(path):
        for value in event.summary.value:
          scalar = _scalar(value)
          if scalar is not None:
            found.setdefault(value.tag, []).append(
                (event.wall_time, event.step, scalar))
    except tf.errors.DataLossError:
      pass  # A run still writing (or killed) leaves a truncated last record.
  series = {}
  for tag, points in found.items():
    by_step = {}
    for _, step, scalar in sorted(points):
      by_step[step] = scalar
    steps = np.array(sorted(by_step), np.int64)
    series[tag] = (steps, np.array([by_step[s] for s in steps], np.float64))
  return series


def _scalar(value):
  """The float of a scalar summary value (TF1 or TF2 style), else None."""
  if value.HasField('simple_value'):
    return float(value.simple_value)
  if value.HasField('tensor') and not value.tensor.tensor_shape.dim:
    array = tf.make_ndarray(value.tensor)
    if array.dtype.kind in 'fiu':
      return float(array)
  return None


def load_run(model_dir, name=None):
  """Reads params.json, the event files and eval_results.json of a run."""
  params = params_lib.load(model_dir)
  evals = collections.OrderedDict()
  for path in sorted(glob.glob(os.path.join(glob.escape(model_dir),
                                              EVAL_PREFIX + '*'))):
    if os.path.isdir(path):
      evals[os.path.basename(path)[len(EVAL_PREFIX):]] = read_scalars(path)
  results = None
  results_path = os.path.join(model_dir, results_lib.RESULTS_FILE)
  if os.path.exists(results_path):
    try:
      with open(results_path) as f:
        results = json.load(f)
    except ValueError as e:
      raise errors.DataError('%s is not valid JSON: %s' % (results_path, e))
  return Run(name or os.path.basename(os.path.normpath(model_dir)), model_dir,
             params, read_scalars(model_dir), evals, results)


def run_names(model_dirs, names=None):
  """Names for the runs: `names`, or directory names made unique."""
  if names:
    if len(names) != len(model_dirs):
      raise cli.UsageError('--names has %d names for %d --model_dir'
                           % (len(names), len(model_dirs)))
    if len(set(names)) != len(names):
      raise cli.UsageError('--names must be unique, got %s' % ','.join(names))
    return list(names)
  parts = [os.path.normpath(d).split(os.sep) for d in model_dirs]
  depth = 1
  while True:
    candidates = ['/'.join(p[-depth:]) for p in parts]
    if len(set(candidates)) == len(candidates) or depth >= max(map(len, parts)):
      return candidates
    depth += 1


def _colors(runs):
  cycle = plt.rcParams['axes.prop_cycle'].by_key()['color']
  return {run.name: cycle[i % len(cycle)] for i, run in enumerate(runs)}


def _panels(count):
  columns = min(3, count)
  rows = -(-count // columns)
  figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows),
                              squeeze=False)
  for axis in axes.flat[count:]:
    axis.set_visible(False)
  return figure, list(axes.flat[:count])


def _step_axis(axis):
  axis.set_xlabel('step')
  axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))


def _save(figure, path):
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path


def plot_train_scalars(runs, tags, path, title, log_scale=False):
  """One panel per tag, every run that has the tag overlaid; None if empty."""
  tags = [t for t in tags if any(t in run.train for run in runs)]
  if not tags:
    return None
  colors = _colors(runs)
  figure, axes = _panels(len(tags))
  for axis, tag in zip(axes, tags):
    for run in runs:
      if tag in run.train:
        steps, values = run.train[tag]
        axis.plot(steps, values, color=colors[run.name], label=run.name)
    axis.set_title(tag)
    _step_axis(axis)
    if log_scale and all(np.all(run.train[tag][1] > 0) for run in runs
                         if tag in run.train):
      axis.set_yscale('log')
    axis.grid(alpha=.3)
    axis.legend(fontsize='small')
  figure.suptitle(title)
  return _save(figure, path)


def plot_accuracy(runs, path):
  """Evaluation accuracy (%) per part, raw solid and EMA dashed; None if empty."""
  parts = []
  for run in runs:
    parts += [p for p in run.evals if p not in parts]
  parts = [p for p in parts if any(
      tag in run.evals.get(p, {}) for run in runs for tag, _, _ in
      ACCURACY_TAGS)]
  if not parts:
    return None
  colors = _colors(runs)
  figure, axes = _panels(len(parts))
  for axis, part in zip(axes, parts):
    for run in runs:
      scalars = run.evals.get(part, {})
      for tag, row, style in ACCURACY_TAGS:
        if tag in scalars:
          steps, values = scalars[tag]
          axis.plot(steps, 100. * values, style, marker='o', markersize=3,
                    color=colors[run.name], label='%s %s' % (run.name, row))
    axis.set_title('%s accuracy (%%)' % part)
    _step_axis(axis)
    axis.grid(alpha=.3)
    axis.legend(fontsize='small')
  return _save(figure, path)


def _sorted_tags(runs, prefix):
  tags = []
  for run in runs:
    tags += sorted(t for t in run.train if t.startswith(prefix)
                   and t not in tags)
  return tags


def confusion_matrix(run, batch_size=256, data_dir=None):
  """The test-set confusion matrix of a run's newest checkpoint.

  Predicts through the Estimator with `core.model_fn` (EMA weights when the
  run kept an EMA) on `inputs.predict_input_fn`; padding rows are dropped.

  Returns:
    (matrix int64 [K, K] with rows = true class, columns = predicted class,
    class names, checkpoint path), or None when the run has no checkpoint.
  """
  checkpoint = model_dir_lib.latest_checkpoint(run.model_dir)
  if not checkpoint:
    return None
  model_dir_lib.check_checkpoint(checkpoint)
  params = dict(run.params, predict_with_ema=True)
  if data_dir:
    params['data_dir'] = data_dir
  try:
    source = sources.resolve(params['data_dir'], params['dataset'])
  except errors.DataError as e:
    raise errors.DataError('%s (for the confusion matrix of %s; pass '
                           '--data_dir or --no_confusion)' % (e, run.name))
  num_classes = int(params['num_classes'])

  def model_fn(features, labels, mode, params):
    spec = core.model_fn(features, labels, mode, params)
    predictions = dict(spec.predictions, label=features['label'],
                       mask=features['mask'])
    return spec._replace(predictions=predictions)

  config = tf.estimator.RunConfig(
      **devices.run_config_args(run.model_dir, params, {'device': 'cpu'}))
  estimator = tf.estimator.Estimator(model_fn, config=config, params=params)
  matrix = np.zeros([num_classes, num_classes], np.int64)
  predict_fn = inputs.predict_input_fn(source, 'test', batch_size, params)
  for batch in estimator.predict(predict_fn, checkpoint_path=checkpoint,
                                 yield_single_examples=False):
    keep = batch['mask'] > 0
    np.add.at(matrix, (batch['label'][keep], batch['classes'][keep]), 1)
  names = source.info.get('class_names') or [str(i) for i in
                                             range(num_classes)]
  return matrix, list(names), checkpoint


def plot_confusion(matrix, class_names, path, title):
  """Draws a confusion matrix (counts, rows normalised for the colours)."""
  count = len(matrix)
  size = max(4., .45 * count + 2.)
  figure, axis = plt.subplots(figsize=(size + 1, size))
  totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  image = axis.imshow(matrix / totals, cmap='Blues', vmin=0., vmax=1.)
  figure.colorbar(image, ax=axis, fraction=.046, pad=.04,
                  label='fraction of the true class')
  ticks = np.arange(count)
  axis.set_xticks(ticks)
  axis.set_yticks(ticks)
  axis.set_xticklabels(class_names, rotation=90, fontsize='small')
  axis.set_yticklabels(class_names, fontsize='small')
  axis.set_xlabel('predicted')
  axis.set_ylabel('true')
  if count <= ANNOTATE_MAX_CLASSES:
    for i in range(count):
      for j in range(count):
        dark = matrix[i, j] / totals[i, 0] > .5
        axis.text(j, i, str(matrix[i, j]), ha='center', va='center',
                  fontsize='x-small', color='white' if dark else 'black')
  axis.set_title(title)
  return _save(figure, path)


def _cell(value):
  return '-' if value is None else '%.2f' % value


def _final(run, tag, part=None):
  scalars = run.train if part is None else run.evals.get(part, {})
  if tag not in scalars:
    return None
  steps, values = scalars[tag]
  return int(steps[-1]), float(values[-1])


def _summary_row(run):
  """Cells of the all-runs table for one run."""
  results = run.results or {}
  rows = results.get('results', {})

  def test(row):
    return _cell((rows.get(row) or {}).get('test'))

  top = results_lib.headline(results) if rows else {'row': None,
                                                   'accuracy': None}
  loss = _final(run, LOSS_PREFIX + 'total')
  step = results.get('step')
  if step is None and loss is not None:
    step = loss[0]
  return [run.name, run.params.get('algorithm', '?'),
          run.params.get('network', '?'), run.params.get('dataset', '?'),
          '-' if step is None else str(step), _cell(top['accuracy']),
          test('raw'), test('ema'), test('tuned_raw'), test('tuned_ema'),
          (results.get('tune') or {}).get('mode', '-'),
          '-' if loss is None else '%.4g' % loss[1]]


# 'test' is the headline: test accuracy of the EMA model where the run keeps
# one, else of the raw model, untuned (eval.headline); 'tune' is how the
# tuned columns were computed (eval.py --tune).
SUMMARY_HEADER = ['run', 'algorithm', 'network', 'dataset', 'step', 'test',
                  'test raw', 'test ema', 'test tuned_raw', 'test tuned_ema',
                  'tune', 'final loss']


def _numeric(cell):
  try:
    float(cell)
    return True
  except ValueError:
    return cell == '-'


def _table(header, rows):
  """Markdown table lines; columns of numbers (or '-') are right-aligned."""
  align = [' ---: ' if rows and all(_numeric(r[i]) for r in rows) else ' --- '
           for i in range(len(header))]

  def line(cells):
    return '| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |'

  return ([line(header), '|' + '|'.join(align) + '|'] +
          [line(row) for row in rows])


def eval_table(results):
  """eval_results.json's table (rows raw/ema/tuned_*, accuracy %) as Markdown."""
  columns = [c for c in results_lib.COLUMNS if c in results.get('counts', {})]
  rows = results['results']
  order = list(results_lib.ROWS) + [r for r in rows
                                    if r not in results_lib.ROWS]
  header = [''] + ['%s (%d)' % (c, results['counts'][c]) for c in columns]
  return _table(header, [[r] + [_cell((rows.get(r) or {}).get(c))
                                for c in columns] for r in order])


def markdown(runs, confusions, plots):
  """The report as Markdown text."""
  lines = ['# Training report', '',
           'Accuracy in %; "-" where a run has no such figure (no EMA, no '
           'eval_results.json). "test" is the headline: test accuracy of the '
           'EMA model (else raw), untuned; "tune" is how the tuned columns '
           're-estimated batch norm (launch/eval.py --tune).', '']
  lines += _table(SUMMARY_HEADER, [_summary_row(run) for run in runs])
  lines.append('')
  for title, name in (('Losses', 'losses'), ('Learning rate', 'lr'),
                      ('Evaluation accuracy', 'accuracy'),
                      ('Monitors', 'monitors')):
    if plots.get(name):
      lines += ['## %s' % title, '',
                '![%s](%s)' % (name, os.path.basename(plots[name])), '']
  for run in runs:
    lines += ['## %s' % run.name, '', '`%s`' % run.model_dir, '']
    if run.results:
      lines += ['Evaluation of `%s` (step %s):' % (
          os.path.basename(run.results.get('checkpoint', '?')),
          run.results.get('step', '?')), '']
      lines += eval_table(run.results)
    else:
      lines.append('No %s: run `python launch/eval.py --model_dir=%s`.'
                   % (results_lib.RESULTS_FILE, run.model_dir))
    lines.append('')
    confusion = confusions.get(run.name)
    if confusion is None:
      continue
    matrix, class_names, checkpoint = confusion
    accuracy = 100. * np.trace(matrix) / max(1, matrix.sum())
    lines += ['Test confusion matrix of `%s` (%d images, accuracy %.2f%%; '
              'rows true, columns predicted):' % (
                  os.path.basename(checkpoint), matrix.sum(), accuracy), '']
    lines += _table(['true \\ predicted'] + class_names,
                    [[class_names[i]] + [str(v) for v in row]
                     for i, row in enumerate(matrix)])
    lines += ['', '![confusion %s](%s)' % (
        run.name, os.path.basename(plots['confusion'][run.name])), '']
  return '\n'.join(lines) + '\n'


def _file_name(name):
  return ''.join(c if c.isalnum() or c in '-_' else '_' for c in name)


def _write_report(runs, confusions, output_dir):
  """Writes the plots, report.json and report.md (last); returns (plots,
  report.json's dict)."""

  def out(name):
    return os.path.join(output_dir, name)

  plots = {
      'losses': plot_train_scalars(runs, _sorted_tags(runs, LOSS_PREFIX),
                                   out('losses.png'), 'training losses'),
      'lr': plot_train_scalars(runs, ['lr'], out('lr.png'), 'learning rate'),
      'accuracy': plot_accuracy(runs, out('accuracy.png')),
      'monitors': plot_train_scalars(runs, _sorted_tags(runs, MONITOR_PREFIX),
                                     out('monitors.png'), 'monitors'),
      'confusion': {},
  }
  for run in runs:
    if run.name not in confusions:
      continue
    matrix, class_names, checkpoint = confusions[run.name]
    plots['confusion'][run.name] = plot_confusion(
        matrix, class_names, out('confusion_%s.png' % _file_name(run.name)),
        '%s: test set, %s' % (run.name, os.path.basename(checkpoint)))
  data = {
      'runs': [{
          'name': run.name, 'model_dir': run.model_dir,
          'algorithm': run.params.get('algorithm'),
          'network': run.params.get('network'),
          'dataset': run.params.get('dataset'),
          'final_train_scalars': {t: _final(run, t)[1] for t in run.train},
          'eval_results': run.results,
          'confusion': None if run.name not in confusions else {
              'matrix': confusions[run.name][0].tolist(),
              'class_names': confusions[run.name][1],
              'checkpoint': confusions[run.name][2]},
      } for run in runs],
      'plots': plots,
  }
  fileio.write_atomic(out(DATA_FILE), json.dumps(data, indent=2) + '\n')
  fileio.write_atomic(out(REPORT_FILE),
                             markdown(runs, confusions, plots))
  return plots, data


def report(model_dirs, output_dir, names=None, data_dir=None, batch_size=256,
           confusion=True, printer=print):
  """Writes the plots, report.json and report.md; returns report.json's dict."""
  if not model_dirs:
    raise cli.UsageError('--model_dir is required (repeat it to compare runs)')
  if not output_dir:
    raise cli.UsageError('--output_dir is required')
  if batch_size <= 0:
    raise cli.UsageError('--batch_size must be positive, got %d' % batch_size)
  for model_dir in model_dirs:
    if not os.path.isdir(model_dir):
      raise cli.UsageError('--model_dir %s is not a directory' % model_dir)
  names = run_names(model_dirs, names)
  model_dir_lib.check_writable(output_dir, '--output_dir')
  runs = [load_run(d, n) for d, n in zip(model_dirs, names)]
  # What can fail on the user's data (checkpoints, test split) runs before
  # anything is written; a failure while writing removes what this call
  # wrote, so OUTPUT_DIR never holds plots without their report.md.
  confusions = {}
  for run in runs if confusion else ():
    found = confusion_matrix(run, batch_size, data_dir)
    if found is None:
      printer('%s: no checkpoint in %s, no confusion matrix'
              % (run.name, run.model_dir))
      continue
    confusions[run.name] = found
  created = not os.path.exists(output_dir)
  model_dir_lib.prepare(output_dir, '--output_dir')
  before = set(os.listdir(output_dir))
  previous = _previous_plots(output_dir)
  try:
    plots, data = _write_report(runs, confusions, output_dir)
  except BaseException:
    for name in set(os.listdir(output_dir)) - before:
      path = os.path.join(output_dir, name)
      if os.path.isfile(path):
        os.remove(path)
    if created and not os.listdir(output_dir):
      os.rmdir(output_dir)
    raise

  def out(name):
    return os.path.join(output_dir, name)

  written = [p for k, p in sorted(plots.items()) if k != 'confusion' and p]
  written += sorted(plots['confusion'].values())
  for path in written + [out(DATA_FILE), out(REPORT_FILE)]:
    printer('wrote %s' % path)
  for name in sorted(previous - {os.path.basename(p) for p in written}):
    if os.path.isfile(out(name)):
      os.remove(out(name))
      printer('removed %s (the previous report\'s, not in this one)'
              % out(name))
  return data


def _previous_plots(output_dir):
  """Names of the plots the report already in OUTPUT_DIR wrote (from its
  report.json), so that a new report removes those it does not redraw.

  Only PNG names directly in OUTPUT_DIR count; anything else there (or an
  unreadable report.json) is left alone.
  """
  try:
    with open(os.path.join(output_dir, DATA_FILE)) as f:
      plots = json.load(f)['plots']
    paths = [p for k, p in plots.items() if k != 'confusion' and p]
    paths += list(plots.get('confusion', {}).values())
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    return set()
  names = set()
  for path in paths:
    name = os.path.basename(str(path))
    if name.endswith('.png') and name == _file_name(name[:-4]) + '.png':
      names.add(name)
  return names


def main(argv):
  del argv
  report([cli.resolve_path(d) for d in FLAGS.model_dir or []],
         cli.resolve_path(FLAGS.output_dir), FLAGS.names,
         cli.resolve_path(FLAGS.data_dir), FLAGS.batch_size,
         not FLAGS.no_confusion)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
