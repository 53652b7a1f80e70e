r"""Accuracy of algorithms at an equal labeled-image budget on Fashion-MNIST.

  python benchmarks/accuracy.py --data_dir=DATA --work_dir=runs/accuracy \
      --labels=100,1000 --labeled_images=16000 \
      --algorithms=supervised,sesemi,mixmatch,realmix,fixmatch \
      [--extra=--network=resnet,--filters=16] [--docs_dir=docs]

Prepares Fashion-MNIST into DATA when it is missing (launch/prepare_data.py
from --source_dir, Debian's dataset-fashion-mnist that setup.sh installs)
and the splits fashion_mnist.1@LABELS-VALID. Then, for each label count and
algorithm, trains from the algorithm's preset launch/configs/fmnist_ALGO.cfg
plus --extra (the same for every run, e.g. the network) through
launch/train.py, for ceil(labeled_images / labeled images a step) steps, and
evaluates through launch/eval.py; both run as subprocesses. The labeled
images a step are train.py's own count (launch/train.py images_per_step on
the algorithm's InputNeeds; SESEMI's labeled batch is 6 x --batch_size).

Resuming: a run whose eval_results.json is at its last step is not run
again; an interrupted run resumes from its newest checkpoint (train.py does
that), so running the same command again after a kill continues. A model
directory trained with other params (another preset or --extra) is refused.
Each run's wall time (training and evaluation, summed over sessions) is kept
in MODEL_DIR/accuracy_timing.json.

Writes DOCS_DIR/accuracy.md (the machine, the command, one table per label
count) and, per label count, launch/report.py's plots and report.md in
DOCS_DIR/accuracy/LABELS/ (written again when it is missing or older than an
eval_results.json of that label count). Prints the tables and, as the last
line, one JSON object with every figure.

Layout: WORK_DIR/LABELS/ALGORITHM is a model directory, with its
accuracy.log (the output of train.py and eval.py).
"""

import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from launch import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags
import tensorflow.compat.v1 as tf

from input_pipeline import dataset_info
from input_pipeline import splits as splits_lib
from launch import cli
from launch import eval as eval_lib
from launch import model_dir as model_dir_lib
from launch import params as params_lib
from launch import train as train_lib
from model_fns import registry

FLAGS = flags.FLAGS
DATASET = 'fashion_mnist'
NUM_CLASSES = 10
SPLIT_SEED = 1
CONFIG_DIR = os.path.join(ROOT, 'launch', 'configs')
CONFIG_PATTERN = re.compile(r'^fmnist_(\w+)\.cfg$')
DOC_FILE = 'accuracy.md'
REPORT_SUBDIR = 'accuracy'
LOG_FILE = 'accuracy.log'
TIMING_FILE = 'accuracy_timing.json'
# Flags the script sets for every run; --extra may not set them.
RESERVED = frozenset([
    'flagfile', 'algorithm', 'data_dir', 'dataset', 'model_dir', 'result',
    'labels', 'valid', 'train_steps', 'epochs', 'save_checkpoints_steps',
    'log_every_steps',
])
# train.py's progress line (launch/hooks.py ProgressHook).
_RATE = re.compile(r'^step \d+/\d+\s+([\d.]+) labeled img/s\s+([\d.]+) img/s')
# (JSON key, eval_results.json row, column) of the accuracy columns.
ACCURACIES = (
    ('test_raw', 'raw', 'test'), ('test_ema', 'ema', 'test'),
    ('test_tuned_ema', 'tuned_ema', 'test'), ('valid_raw', 'raw', 'valid'),
    ('valid_ema', 'ema', 'valid'), ('valid_tuned_ema', 'tuned_ema', 'valid'),
)
TABLE_HEADER = ['algorithm', 'steps', 'labeled a step', 'labeled images',
                'test raw', 'test EMA', 'test tuned EMA', 'valid raw',
                'valid EMA', 'valid tuned EMA', 'labeled img/s', 'wall min']


def define_flags():
  flags.DEFINE_string('data_dir', None, 'Prepared data; Fashion-MNIST and '
                      'the splits are prepared there when missing.')
  flags.DEFINE_string('source_dir', '/usr/share/datasets/fashion-mnist',
                      'Raw Fashion-MNIST (idx files), used when DATA has no '
                      'prepared fashion_mnist.')
  flags.DEFINE_string('work_dir', None, 'Model directories, WORK_DIR/LABELS/'
                      'ALGORITHM.')
  flags.DEFINE_list('labels', ['100', '1000'], 'Label counts (multiples of '
                    '%d, one split fashion_mnist.%d@LABELS-VALID each).'
                    % (NUM_CLASSES, SPLIT_SEED))
  flags.DEFINE_integer('valid', 5000, 'Validation images of every split.')
  flags.DEFINE_integer('labeled_images', None, 'Labeled images every run '
                       'trains on (steps = ceil(this / labeled a step)).')
  flags.DEFINE_list('algorithms', ['supervised', 'sesemi', 'mixmatch',
                                   'realmix', 'fixmatch'],
                    'Algorithms, each with a launch/configs/fmnist_ALGO.cfg.')
  flags.DEFINE_list('extra', [], 'train.py flags added to every run, e.g. '
                    '--network=resnet,--filters=16')
  flags.DEFINE_integer('evals_per_run', 4, 'Checkpoints (each followed by a '
                       'validation evaluation, the accuracy plot\'s points) '
                       'in every run.')
  flags.DEFINE_string('docs_dir', os.path.join(ROOT, 'docs'),
                      'Where accuracy.md and accuracy/LABELS/ go.')


def known_algorithms():
  """Algorithms with a Fashion-MNIST preset, sorted."""
  return sorted(m.group(1) for m in map(CONFIG_PATTERN.match,
                                        os.listdir(CONFIG_DIR)) if m)


def config_path(algorithm):
  return os.path.join(CONFIG_DIR, 'fmnist_%s.cfg' % algorithm)


def check_flags(flag_values):
  """Returns (label counts, algorithms, extra); cli.UsageError when bad."""
  for name in ('data_dir', 'work_dir', 'labeled_images'):
    if flag_values[name].value is None:
      raise cli.UsageError('--%s is required' % name)
  if flag_values.labeled_images <= 0:
    raise cli.UsageError('--labeled_images must be positive, got %d'
                         % flag_values.labeled_images)
  if flag_values.valid < 0:
    raise cli.UsageError('--valid must not be negative, got %d'
                         % flag_values.valid)
  if flag_values.evals_per_run <= 0:
    raise cli.UsageError('--evals_per_run must be positive, got %d'
                         % flag_values.evals_per_run)
  labels = []
  for text in flag_values.labels:
    try:
      count = int(text)
    except ValueError:
      raise cli.UsageError('--labels: %r is not an integer' % text)
    if count <= 0 or count % NUM_CLASSES:
      raise cli.UsageError('--labels: %d is not a positive multiple of %d '
                           '(the classes of Fashion-MNIST)'
                           % (count, NUM_CLASSES))
    labels.append(count)
  known = known_algorithms()
  for algorithm in flag_values.algorithms:
    if algorithm not in known:
      raise cli.UsageError('--algorithms: unknown algorithm %r (no launch/'
                           'configs/fmnist_%s.cfg); known: %s'
                           % (algorithm, algorithm, ', '.join(known)))
  for name, values in (('labels', labels),
                       ('algorithms', flag_values.algorithms)):
    if not values:
      raise cli.UsageError('--%s is empty' % name)
    if len(set(values)) != len(values):
      raise cli.UsageError('--%s repeats a value: %s'
                           % (name, ','.join(str(v) for v in values)))
  for arg in flag_values.extra:
    if not arg.startswith('--'):
      raise cli.UsageError('--extra: %r is not a --flag=value' % arg)
    name = arg[2:].split('=')[0]
    if name in RESERVED or (name.startswith('no') and name[2:] in RESERVED):
      raise cli.UsageError('--extra: %s is set by the script' % arg)
  return labels, list(flag_values.algorithms), list(flag_values.extra)


def split_name(labels, valid):
  return splits_lib.format_split_name(DATASET, SPLIT_SEED, labels, valid)


def _hparam_flag_values():
  """A FlagValues holding the hyperparameter flags train.py defines
  (launch/params.py define_flags), apart from this script's own flags."""
  values = flags.FlagValues()
  defaults = params_lib._all_defaults()  # pylint: disable=protected-access
  for key, default in sorted(defaults.items()):
    if isinstance(default, bool):
      define = flags.DEFINE_bool
    elif isinstance(default, int):
      define = flags.DEFINE_integer
    elif isinstance(default, float):
      define = flags.DEFINE_float
    else:
      define = flags.DEFINE_string
    define(key, None, key, flag_values=values)
  flags.DEFINE_float('base_lr', None, 'alias of --lr', flag_values=values)
  return values


def resolve_run(algorithm, extra, info, data_dir, dataset):
  """(params, labeled images a step) of a run, as train.py resolves them.

  The preset and --extra are resolved into params exactly as train.py does
  (defaults < flagfile < explicit flags; train.py's other flags in them are
  ignored here), and the labeled images a step are train.py's count.
  """
  values = _hparam_flag_values()
  try:
    values(['accuracy', '--flagfile=' + config_path(algorithm)] + extra,
           known_only=True)
  except flags.Error as e:
    raise cli.UsageError('%s: %s' % (algorithm, e))
  facts = {'num_classes': int(info['num_classes']),
           'image_shape': list(info['image_shape']), 'dataset': dataset,
           'data_dir': data_dir}
  try:
    params = params_lib.resolve(values, facts)
    needs = registry.get(params['algorithm']).input_needs(params)
  except (cli.UsageError, ValueError) as e:
    raise cli.UsageError('%s (preset %s with --extra): %s'
                         % (algorithm, os.path.relpath(config_path(algorithm),
                                                       ROOT), e))
  return params, train_lib.images_per_step(needs)[0]


def _say(text):
  print(text)
  sys.stdout.flush()


class Timer(object):
  """Wall seconds of a run, summed over sessions in MODEL_DIR/TIMING_FILE.

  Saved at every output line of the run's commands, so a killed session
  loses only the time since its last line.
  """

  def __init__(self, model_dir):
    self._path = os.path.join(model_dir, TIMING_FILE)
    self.seconds = read_seconds(model_dir)
    self._start = None
    self._base = self.seconds

  def start(self):
    self._start = time.time()
    self._base = self.seconds

  def tick(self):
    self.seconds = self._base + time.time() - self._start
    model_dir_lib.write_atomic(self._path, json.dumps(
        {'seconds': round(self.seconds, 1)}) + '\n')


def read_seconds(model_dir):
  path = os.path.join(model_dir, TIMING_FILE)
  if not os.path.exists(path):
    return 0.
  with open(path) as f:
    return float(json.load(f)['seconds'])


def run_command(args, log_path, what, timer=None):
  """Runs a command, appending its output to log_path line by line.

  Raises:
    cli.RunError: the command failed; names its `error:` line and the log.
  """
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  errors = []
  with open(log_path, 'a') as log:
    log.write('$ %s\n' % ' '.join(shlex.quote(a) for a in args))
    log.flush()
    if timer:
      timer.start()
    process = subprocess.Popen(args, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT,
                               universal_newlines=True, env=env)
    for line in process.stdout:
      log.write(line)
      log.flush()
      if line.startswith('error:'):
        errors.append(line.strip())
      if timer:
        timer.tick()
    code = process.wait()
    if timer:
      timer.tick()
  if code:
    raise cli.RunError('%s failed (exit %d)%s; see %s' % (
        what, code, ': ' + errors[-1] if errors else '', log_path))


def prepare_data(data_dir, split_names, work_dir):
  """Prepares Fashion-MNIST and the splits that are missing in data_dir."""
  python = sys.executable
  script = os.path.join(ROOT, 'launch', 'prepare_data.py')
  log_path = os.path.join(work_dir, 'prepare.log')
  dataset_dir = os.path.join(data_dir, DATASET)
  if not os.path.isfile(os.path.join(dataset_dir, dataset_info.INFO_FILE)):
    if not os.path.isdir(FLAGS.source_dir):
      raise cli.UsageError(
          '%s is not prepared in %s and --source_dir %s does not exist '
          '(bash setup.sh installs Debian\'s dataset-fashion-mnist there)'
          % (DATASET, data_dir, FLAGS.source_dir))
    _say('preparing %s in %s' % (DATASET, data_dir))
    run_command([python, script, '--dataset=' + DATASET,
                 '--source_dir=' + FLAGS.source_dir, '--data_dir=' + data_dir],
                log_path, 'launch/prepare_data.py --dataset=' + DATASET)
  missing = [name for name in split_names if not os.path.isfile(
      os.path.join(splits_lib.split_dir(dataset_dir, name),
                   splits_lib.SPLIT_FILE))]
  if missing:
    _say('preparing the splits %s' % ', '.join(missing))
    run_command([python, script, '--data_dir=' + data_dir] +
                ['--split=' + name for name in missing], log_path,
                'launch/prepare_data.py --split=' + ','.join(missing))
  return dataset_info.load(dataset_dir)


def read_results(model_dir):
  path = os.path.join(model_dir, eval_lib.RESULTS_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def check_saved_params(model_dir, params):
  """cli.UsageError when model_dir was trained with other params (another
  --extra or preset): its results would not be this command's."""
  if not os.path.exists(os.path.join(model_dir, params_lib.PARAMS_FILE)):
    return
  saved = params_lib.load(model_dir)
  diff = params_lib.graph_differences(saved, params)
  if diff:
    raise cli.UsageError(
        '%s was trained with other params (%s); use another --work_dir' % (
            model_dir, ', '.join('%s: %r, now %r' % (k, saved.get(k),
                                                     params.get(k))
                                 for k in diff)))


def run_one(algorithm, labels, steps, extra, data_dir, model_dir, params):
  """Trains and evaluates one run unless it is done."""
  check_saved_params(model_dir, params)
  results = read_results(model_dir)
  if results and results['step'] == steps:
    return
  os.makedirs(model_dir, exist_ok=True)
  checkpoint = model_dir_lib.latest_checkpoint(model_dir)
  if checkpoint and model_dir_lib.checkpoint_step(checkpoint) > steps:
    raise cli.UsageError(
        '%s is at step %d, past the %d steps of --labeled_images=%d; use '
        'another --work_dir' % (model_dir, model_dir_lib.checkpoint_step(
            checkpoint), steps, FLAGS.labeled_images))
  log_path = os.path.join(model_dir, LOG_FILE)
  timer = Timer(model_dir)
  python = sys.executable
  every = int(math.ceil(steps / FLAGS.evals_per_run))
  _say('%d labels, %s: training %d steps%s (log %s)' % (
      labels, algorithm, steps, ', resuming' if checkpoint else '', log_path))
  run_command(
      [python, os.path.join(ROOT, 'launch', 'train.py'),
       '--flagfile=' + config_path(algorithm), '--data_dir=' + data_dir,
       '--dataset=' + split_name(labels, FLAGS.valid),
       '--model_dir=' + model_dir, '--train_steps=%d' % steps,
       '--save_checkpoints_steps=%d' % every,
       '--log_every_steps=%d' % max(1, steps // 10)] + extra,
      log_path, 'launch/train.py (%d labels, %s)' % (labels, algorithm), timer)
  _say('%d labels, %s: evaluating' % (labels, algorithm))
  run_command([python, os.path.join(ROOT, 'launch', 'eval.py'),
               '--model_dir=' + model_dir], log_path,
              'launch/eval.py (%d labels, %s)' % (labels, algorithm), timer)


def labeled_rate(log_path):
  """Median labeled img/s of train.py's progress lines in the log."""
  rates = []
  if os.path.exists(log_path):
    with open(log_path) as f:
      rates = [float(m.group(1)) for m in map(_RATE.match, f) if m]
  return round(statistics.median(rates), 1) if rates else None


def summary(algorithm, labels, steps, per_step, model_dir):
  """One table row as a dict, from the run's eval_results.json and log."""
  results = read_results(model_dir)
  rows = results['results']
  row = {'algorithm': algorithm, 'labels': labels, 'step': results['step'],
         'steps': steps, 'labeled_per_step': per_step,
         'labeled_images': steps * per_step, 'model_dir': model_dir}
  for key, name, column in ACCURACIES:
    row[key] = (rows.get(name) or {}).get(column)
  row['labeled_img_per_s'] = labeled_rate(os.path.join(model_dir, LOG_FILE))
  row['wall_minutes'] = round(read_seconds(model_dir) / 60., 1)
  return row


def _cell(value):
  if value is None:
    return '-'
  return '%.2f' % value if isinstance(value, float) else str(value)


def table(rows):
  """Markdown lines of one label count's table."""
  lines = ['| ' + ' | '.join(TABLE_HEADER) + ' |',
           '|' + '|'.join([' --- '] + [' ---: '] * (len(TABLE_HEADER) - 1))
           + '|']
  for r in rows:
    cells = [r['algorithm'], str(r['steps']), str(r['labeled_per_step']),
             str(r['labeled_images'])]
    cells += [_cell(r[key]) for key, _, _ in ACCURACIES]
    rate = r['labeled_img_per_s']
    cells += ['-' if rate is None else '%.1f' % rate,
              '%.1f' % r['wall_minutes']]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def report_is_stale(output_dir, model_dirs):
  """True when report.md is missing or older than an eval_results.json."""
  path = os.path.join(output_dir, 'report.md')
  if not os.path.exists(path):
    return True
  written = os.stat(path).st_mtime
  return any(os.stat(os.path.join(d, eval_lib.RESULTS_FILE)).st_mtime > written
             for d in model_dirs)


def make_report(labels, algorithms, model_dirs, output_dir, log_path):
  run_command([sys.executable, os.path.join(ROOT, 'launch', 'report.py')] +
              ['--model_dir=' + d for d in model_dirs] +
              ['--output_dir=' + output_dir, '--names=' + ','.join(algorithms)],
              log_path, 'launch/report.py (%d labels)' % labels)


def machine():
  """One line describing the machine and the TensorFlow build."""
  model, cpu_flags = platform.processor() or '?', set()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name':
          model = value.strip()
        elif key.strip() == 'flags':
          cpu_flags = set(value.split())
    with open('/proc/meminfo') as f:
      memory = int(f.readline().split()[1]) / 2. ** 20
  except (IOError, OSError, ValueError, IndexError):
    memory = None
  features = '/'.join(f.upper() for f in ('avx2', 'fma') if f in cpu_flags)
  return '%s, %d cores%s%s; Python %s, tensorflow %s' % (
      model, os.cpu_count(), ' (%s)' % features if features else '',
      ', %.0f GiB' % memory if memory else '', platform.python_version(),
      tf.__version__)


def command_line():
  script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
  return ' '.join(['python', script] + [shlex.quote(a) for a in sys.argv[1:]])


def document(by_labels, extra, start_load):
  """The text of accuracy.md."""
  lines = [
      '# Accuracy at an equal labeled-image budget', '',
      'Generated by `benchmarks/accuracy.py`; do not edit by hand.', '',
      'Machine: %s. Load average (1 min) when the command started: %.2f, '
      'when it wrote this file: %.2f.' % (machine(), start_load,
                                          os.getloadavg()[0]), '',
      'Command (from the repository root; run again, it resumes):', '',
      '    ' + command_line(), '',
      'Every run trains from its preset `launch/configs/fmnist_ALGORITHM.cfg` '
      'with `%s` added, on `%s`, for ceil(%d / labeled images a step) steps '
      '(train.py\'s count: SESEMI\'s labeled batch is 6 × --batch_size), then '
      'is evaluated by `launch/eval.py`. Accuracy in %% on the %s test set and '
      'the validation images; "tuned" re-estimates the batch-norm statistics '
      '(eval.py). Labeled img/s: the median of train.py\'s progress lines; '
      'wall min: training and evaluation, summed over sessions.'
      % (' '.join(extra) or 'nothing', '%s.%d@LABELS-%d' % (
          DATASET, SPLIT_SEED, FLAGS.valid), FLAGS.labeled_images, DATASET),
      '']
  for labels, rows in by_labels:
    link = '%s/%d/report.md' % (REPORT_SUBDIR, labels)
    lines += ['## %d labels (`%s`)' % (labels, split_name(labels, FLAGS.valid)),
              '']
    lines += table(rows)
    lines += ['', 'Plots (losses, learning rate, validation accuracy against '
              'steps, test confusion matrices) and the full evaluation '
              'tables: [%s](%s).' % (link, link), '',
              '![accuracy, %d labels](%s/%d/accuracy.png)'
              % (labels, REPORT_SUBDIR, labels), '']
  return '\n'.join(lines)


def main(argv):
  del argv
  start_load = os.getloadavg()[0]
  label_counts, algorithms, extra = check_flags(FLAGS)
  data_dir = cli.resolve_path(FLAGS.data_dir)
  work_dir = cli.resolve_path(FLAGS.work_dir)
  docs_dir = cli.resolve_path(FLAGS.docs_dir)
  os.makedirs(work_dir, exist_ok=True)
  os.makedirs(data_dir, exist_ok=True)
  info = prepare_data(data_dir, [split_name(n, FLAGS.valid)
                                       for n in label_counts], work_dir)
  resolved = {a: resolve_run(a, extra, info, data_dir, split_name(
      label_counts[0], FLAGS.valid)) for a in algorithms}
  per_step = {a: resolved[a][1] for a in algorithms}
  steps = {a: int(math.ceil(FLAGS.labeled_images / per_step[a]))
           for a in algorithms}
  for a in algorithms:
    _say('%s: %d labeled images a step, %d steps' % (a, per_step[a], steps[a]))
  by_labels = []
  for labels in label_counts:
    model_dirs = [os.path.join(work_dir, str(labels), a) for a in algorithms]
    for a, d in zip(algorithms, model_dirs):
      run_one(a, labels, steps[a], extra, data_dir, d, resolved[a][0])
    output_dir = os.path.join(docs_dir, REPORT_SUBDIR, str(labels))
    if report_is_stale(output_dir, model_dirs):
      _say('%d labels: report in %s' % (labels, output_dir))
      make_report(labels, algorithms, model_dirs, output_dir,
                  os.path.join(work_dir, str(labels), 'report.log'))
    by_labels.append((labels, [summary(a, labels, steps[a], per_step[a], d)
                               for a, d in zip(algorithms, model_dirs)]))
  os.makedirs(docs_dir, exist_ok=True)
  doc_path = os.path.join(docs_dir, DOC_FILE)
  model_dir_lib.write_atomic(doc_path, document(by_labels, extra, start_load))
  for labels, rows in by_labels:
    _say('\n%d labels:' % labels)
    _say('\n'.join(table(rows)))
  _say('wrote %s' % doc_path)
  _say(json.dumps({'labeled_images': FLAGS.labeled_images,
                   'labels': label_counts, 'extra': extra, 'doc': doc_path,
                   'runs': [r for _, rows in by_labels for r in rows]}))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
