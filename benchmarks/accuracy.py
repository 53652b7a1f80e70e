r"""Convergence benchmark on Fashion-MNIST: accuracy, spread over seeds,
time to accuracy, and a supervised ceiling on all 60,000 labels.

  python benchmarks/accuracy.py --data_dir=DATA --work_dir=runs/accuracy \
      --labels=100,1000 --seeds=1,2 [--label_seeds=100:1] \
      --labeled_images=16000 \
      --algorithms=supervised,sesemi,mixmatch,realmix,fixmatch \
      [--extra=--network=resnet,--filters=16] [--evals_per_run=20] \
      [--ceiling] [--docs_dir=docs]

What it runs, its figures, resuming and its files: docs/benchmarks.md.
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
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags
import tensorflow.compat.v1 as tf

from input_pipeline import dataset_info
from input_pipeline import fileio
from input_pipeline import sources
from input_pipeline import splits as splits_lib
from model_fns import registry
from runner import cli
from runner import model_dir as model_dir_lib
from runner import params as params_lib
from runner import results as results_lib

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
CEILING_ALGORITHM = 'supervised'
CEILING_DIR = 'all'
# Flags the script sets for every run; --extra may not set them.
RESERVED = frozenset([
    'flagfile', 'algorithm', 'data_dir', 'dataset', 'model_dir', 'result',
    'labels', 'valid', 'train_steps', 'epochs', 'save_checkpoints_steps',
    'log_every_steps', 'seed',
])
# train.py's progress line (runner/hooks.py ProgressHook).
_RATE = re.compile(r'^step \d+/\d+\s+([\d.]+) labeled img/s\s+([\d.]+) img/s')
# train.py's line after each periodic evaluation (train.format_metrics).
_EVAL_LINE = re.compile(r'^step (\d+): (.*)$')
_EVAL_METRIC = re.compile(r'(\w+) (accuracy|ema/accuracy) ([\d.]+)%')
# Validation accuracy (%) whose first periodic evaluation is timed.
THRESHOLDS = (80, 85)
# (JSON key, eval_results.json row, column) of the accuracy figures kept.
ACCURACIES = (
    ('test_raw', 'raw', 'test'), ('test_ema', 'ema', 'test'),
    ('test_tuned_raw', 'tuned_raw', 'test'),
    ('test_tuned_ema', 'tuned_ema', 'test'), ('valid_raw', 'raw', 'valid'),
    ('valid_ema', 'ema', 'valid'), ('valid_tuned_ema', 'tuned_ema', 'valid'),
)
# (header, JSON key) of the table's accuracy columns: the headline (EMA
# where kept, else raw, untuned), its tuned value, then raw and EMA.
TABLE_ACCURACIES = (
    ('test', 'test'), ('test tuned', 'test_tuned'), ('valid', 'valid'),
    ('valid tuned', 'valid_tuned'), ('test raw', 'test_raw'),
    ('test EMA', 'test_ema'))
# After a tuned figure that an older eval.py computed (EMA row measured with
# the raw weights' statistics).
OLD_TUNE_MARK = ' †'
TABLE_HEADER = (['algorithm', 'seeds', 'steps', 'labeled a step',
                 'labeled images'] + [h for h, _ in TABLE_ACCURACIES] +
                ['min to %d %%' % t for t in THRESHOLDS] +
                ['labeled img/s', 'wall min'])


def define_flags():
  flags.DEFINE_string('data_dir', None, 'Prepared data; Fashion-MNIST and '
                      'the splits are prepared there when missing.')
  flags.DEFINE_string('source_dir', '/usr/share/datasets/fashion-mnist',
                      'Raw Fashion-MNIST (idx files), used when DATA has no '
                      'prepared fashion_mnist.')
  flags.DEFINE_string('work_dir', None, 'Model directories, WORK_DIR/LABELS/'
                      'ALGORITHM.')
  flags.DEFINE_list('labels', ['100', '1000'], 'Label counts (multiples of '
                    '%d, one split fashion_mnist.SEED@LABELS-VALID per seed).'
                    % NUM_CLASSES)
  flags.DEFINE_list('seeds', [str(SPLIT_SEED)], 'Seeds of every label count: '
                    'the split fashion_mnist.SEED@LABELS-VALID and train.py\'s '
                    '--seed. Cells show mean ± spread over them.')
  flags.DEFINE_list('label_seeds', [], 'LABELS:SEED[:SEED...] overriding '
                    '--seeds for a label count, e.g. 100:1,1000:1:2.')
  flags.DEFINE_bool('ceiling', True, 'Add a supervised run on all the '
                    'training labels (the prepared dataset %s, no validation '
                    'part) at the same budget, first seed.' % DATASET)
  flags.DEFINE_integer('valid', 5000, 'Validation images of every split.')
  flags.DEFINE_integer('labeled_images', None, 'Labeled images every run '
                       'trains on (steps = ceil(this / labeled a step)).')
  flags.DEFINE_list('algorithms', ['supervised', 'sesemi', 'mixmatch',
                                   'realmix', 'fixmatch'],
                    'Algorithms, each with a launch/configs/fmnist_ALGO.cfg.')
  flags.DEFINE_list('extra', [], 'train.py flags added to every run, e.g. '
                    '--network=resnet,--filters=16')
  flags.DEFINE_bool('report_only', False, 'Train nothing: tabulate and plot '
                    'the runs that are done, leave out the others.')
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


def _seed_list(texts, what):
  seeds = []
  for text in texts:
    try:
      seed = int(text)
    except ValueError:
      raise cli.UsageError('%s: %r is not an integer seed' % (what, text))
    if seed < 0:
      raise cli.UsageError('%s: seed %d is negative' % (what, seed))
    seeds.append(seed)
  if not seeds:
    raise cli.UsageError('%s: no seed' % what)
  if len(set(seeds)) != len(seeds):
    raise cli.UsageError('%s repeats a seed: %s'
                         % (what, ','.join(str(s) for s in seeds)))
  return seeds


def seeds_by_labels(flag_values, labels):
  """{label count: [seeds]} from --seeds and --label_seeds."""
  default = _seed_list(flag_values.seeds, '--seeds')
  chosen = {count: default for count in labels}
  for item in flag_values.label_seeds:
    head, _, rest = item.partition(':')
    try:
      count = int(head)
    except ValueError:
      raise cli.UsageError('--label_seeds: %r is not LABELS:SEED[:SEED...]'
                           % item)
    if count not in chosen:
      raise cli.UsageError('--label_seeds: %d is not one of --labels (%s)'
                           % (count, ','.join(str(n) for n in labels)))
    chosen[count] = _seed_list(rest.split(':') if rest else [],
                               '--label_seeds (%d)' % count)
  return chosen


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
  if flag_values.ceiling and CEILING_ALGORITHM not in known:
    raise cli.UsageError('--ceiling needs launch/configs/fmnist_%s.cfg'
                         % CEILING_ALGORITHM)
  seeds_by_labels(flag_values, labels)
  return labels, list(flag_values.algorithms), list(flag_values.extra)


def split_name(labels, valid, seed=SPLIT_SEED):
  return splits_lib.format_split_name(DATASET, seed, labels, valid)


def run_dir(work_dir, labels, algorithm, seed):
  """WORK_DIR/LABELS/ALGORITHM_sSEED (labels None: the ceiling's)."""
  return os.path.join(work_dir, CEILING_DIR if labels is None else str(labels),
                      '%s_s%d' % (algorithm, seed))


def _hparam_flag_values():
  """A FlagValues holding the hyperparameter flags train.py defines
  (runner/params.py define_flags), apart from this script's own flags."""
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
  """(params, labeled images a step, keys set by the preset or --extra) of
  a run, as train.py resolves them.

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
  return params, needs.batch_size, (
      params_lib.explicit_keys(values))


def run_params(resolved, steps, seed, data_dir, dataset):
  """The params train.py resolves for a run of `steps` steps with --seed on
  `dataset`: `resolve_run`'s, with the length and the ramps scaled to it and
  the facts train.py adds from the split (params.add_data_params)."""
  params, _, explicit = resolved
  params = dict(params, seed=seed, train_steps=steps)
  params = params_lib.scale_schedules(params, explicit | {'seed'})
  needs = registry.get(params['algorithm']).input_needs(params)
  params_lib.add_data_params(params, needs, sources.resolve(data_dir, dataset))
  return params


def _say(text):
  print(text)
  sys.stdout.flush()


def runtime():
  """The TensorFlow runtime this script and its subprocesses use."""
  return 'tensorflow %s, python %s (%s)' % (
      tf.__version__, platform.python_version(), sys.executable)


def parse_eval_line(line):
  """{'step', 'part', 'accuracy', 'ema_accuracy'} of train.py's line after
  a periodic evaluation ('step 120: valid accuracy 81.20%  valid
  ema/accuracy 82.00%'; accuracies in %), else None."""
  match = _EVAL_LINE.match(line.strip())
  if not match:
    return None
  found = {'step': int(match.group(1)), 'part': None, 'accuracy': None,
           'ema_accuracy': None}
  for part, name, value in _EVAL_METRIC.findall(match.group(2)):
    found['part'] = part
    found['ema_accuracy' if name.startswith('ema') else 'accuracy'] = float(
        value)
  return found if found['accuracy'] is not None else None


class Timer(object):
  """Wall seconds of a run, summed over sessions in MODEL_DIR/TIMING_FILE,
  with the wall seconds at each periodic evaluation and the runtimes used.

  Saved at every output line of the run's commands, so a killed session
  loses only the time since its last line.
  """

  def __init__(self, model_dir):
    self._path = os.path.join(model_dir, TIMING_FILE)
    timing = read_timing(model_dir)
    self.seconds = timing['seconds']
    self.evals = timing['evals']
    self.runtimes = timing['runtimes']
    if runtime() not in self.runtimes:
      self.runtimes.append(runtime())
    self._start = None
    self._base = self.seconds

  def start(self):
    self._start = time.time()
    self._base = self.seconds

  def tick(self, line=''):
    self.seconds = self._base + time.time() - self._start
    found = parse_eval_line(line)
    if found and all(e['step'] != found['step'] for e in self.evals):
      self.evals.append(dict(found, seconds=round(self.seconds, 1)))
    fileio.write_atomic(self._path, json.dumps(
        {'seconds': round(self.seconds, 1), 'evals': self.evals,
         'runtimes': self.runtimes}) + '\n')


def read_timing(model_dir):
  """{'seconds', 'evals', 'runtimes'} of MODEL_DIR/TIMING_FILE."""
  timing = {'seconds': 0., 'evals': [], 'runtimes': []}
  path = os.path.join(model_dir, TIMING_FILE)
  if os.path.exists(path):
    with open(path) as f:
      timing.update(json.load(f))
  timing['seconds'] = float(timing['seconds'])
  return timing


def read_seconds(model_dir):
  return read_timing(model_dir)['seconds']


def minutes_to(evals, threshold):
  """Wall minutes at the first periodic evaluation whose accuracy (EMA
  where reported, else raw) reached `threshold` %, else None."""
  for e in sorted(evals, key=lambda e: e['step']):
    value = e['ema_accuracy'] if e.get('ema_accuracy') is not None else (
        e['accuracy'])
    if value is not None and value >= threshold:
      return round(e['seconds'] / 60., 1)
  return None


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
        timer.tick(line)
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
  path = os.path.join(model_dir, results_lib.RESULTS_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def is_done(model_dir, steps):
  """Whether the run in model_dir was trained and evaluated at `steps`."""
  results = read_results(model_dir)
  return bool(results) and results['step'] == steps


def tuned_per_row(results):
  """Whether eval.py re-estimated each tuned row with its own weights (an
  older eval gave the raw model's statistics to the EMA row too)."""
  return bool((results.get('tune') or {}).get('per_row'))


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


def run_one(algorithm, labels, steps, extra, data_dir, model_dir, params,
            seed, dataset, train=True):
  """Trains and evaluates one run unless it is done (labels None: the
  ceiling), or only evaluates it again when an older eval.py evaluated it;
  returns whether it is done. `train` False (--report_only) only checks: a
  run trained with other params is refused either way."""
  check_saved_params(model_dir, params)
  what = '%s labels, %s, seed %d' % ('all' if labels is None else labels,
                                     algorithm, seed)
  log_path = os.path.join(model_dir, LOG_FILE)
  python = sys.executable
  evaluate = [python, os.path.join(ROOT, 'launch', 'eval.py'),
              '--model_dir=' + model_dir]
  if not train:
    return is_done(model_dir, steps)
  if is_done(model_dir, steps):
    if not tuned_per_row(read_results(model_dir)):
      # Evaluated by an older eval.py: evaluate again, outside the timed
      # wall minutes (they already hold the first evaluation).
      _say('%s: evaluating again (tuned rows from an older eval.py)' % what)
      run_command(evaluate, log_path, 'launch/eval.py (%s)' % what)
    return True
  os.makedirs(model_dir, exist_ok=True)
  checkpoint = model_dir_lib.latest_checkpoint(model_dir)
  if checkpoint and model_dir_lib.checkpoint_step(checkpoint) > steps:
    raise cli.UsageError(
        '%s is at step %d, past the %d steps of --labeled_images=%d; use '
        'another --work_dir' % (model_dir, model_dir_lib.checkpoint_step(
            checkpoint), steps, FLAGS.labeled_images))
  timer = Timer(model_dir)
  every = int(math.ceil(steps / FLAGS.evals_per_run))
  _say('%s: training %d steps%s (log %s)' % (
      what, steps, ', resuming' if checkpoint else '', log_path))
  run_command(
      [python, os.path.join(ROOT, 'launch', 'train.py'),
       '--flagfile=' + config_path(algorithm), '--data_dir=' + data_dir,
       '--dataset=' + dataset, '--seed=%d' % seed,
       '--model_dir=' + model_dir, '--train_steps=%d' % steps,
       '--save_checkpoints_steps=%d' % every,
       '--log_every_steps=%d' % max(1, steps // 10)] + extra,
      log_path, 'launch/train.py (%s)' % what, timer)
  _say('%s: evaluating' % what)
  run_command(evaluate, log_path, 'launch/eval.py (%s)' % what, timer)
  return True


def labeled_rate(log_path):
  """Median labeled img/s of train.py's progress lines in the log."""
  rates = []
  if os.path.exists(log_path):
    with open(log_path) as f:
      rates = [float(m.group(1)) for m in map(_RATE.match, f) if m]
  return round(statistics.median(rates), 1) if rates else None


def summary(algorithm, labels, steps, per_step, model_dir, seed):
  """One run's figures as a dict, from its eval_results.json, log and
  timing file."""
  results = read_results(model_dir)
  rows = results['results']
  top = results.get('headline') or results_lib.headline(results)
  row = {'algorithm': algorithm, 'labels': labels, 'seed': seed,
         'step': results['step'], 'steps': steps,
         'labeled_per_step': per_step, 'labeled_images': steps * per_step,
         'model_dir': model_dir, 'headline_row': top['row'],
         'tune': (results.get('tune') or {}).get('mode'),
         'tuned_per_row': tuned_per_row(results)}
  for column in ('test', 'valid'):
    row[column] = (rows.get(top['row']) or {}).get(column)
    row[column + '_tuned'] = (rows.get('tuned_' + top['row']) or {}).get(
        column)
  for key, name, column in ACCURACIES:
    row[key] = (rows.get(name) or {}).get(column)
  timing = read_timing(model_dir)
  for threshold in THRESHOLDS:
    row['minutes_to_%d' % threshold] = minutes_to(timing['evals'], threshold)
  row['evals'] = timing['evals']
  row['runtimes'] = timing['runtimes']
  row['labeled_img_per_s'] = labeled_rate(os.path.join(model_dir, LOG_FILE))
  row['wall_minutes'] = round(timing['seconds'] / 60., 1)
  return row


def spread(values):
  """(mean, sample standard deviation or None) of the non-None values;
  (None, None) when there are none."""
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  mean = statistics.mean(values)
  return mean, statistics.stdev(values) if len(values) > 1 else None


def cell(runs):
  """One table row (a dict) over the seeds of one algorithm: each figure's
  mean and spread, and the seeds' runs."""
  first = runs[0]
  row = {key: first[key] for key in ('algorithm', 'labels', 'steps',
                                     'labeled_per_step', 'labeled_images')}
  row['seeds'] = [r['seed'] for r in runs]
  row['tuned_per_row'] = all(r['tuned_per_row'] for r in runs)
  keys = ([key for _, key in TABLE_ACCURACIES] + [k for k, _, _ in ACCURACIES]
          + ['minutes_to_%d' % t for t in THRESHOLDS] +
          ['labeled_img_per_s', 'wall_minutes'])
  for key in sorted(set(keys)):
    mean, std = spread(r[key] for r in runs)
    row[key] = mean
    row[key + '_spread'] = std
  for threshold in THRESHOLDS:
    key = 'minutes_to_%d' % threshold
    row[key + '_reached'] = sum(r[key] is not None for r in runs)
  row['runs'] = runs
  return row


def _cell(value):
  if value is None:
    return '-'
  return '%.2f' % value if isinstance(value, float) else str(value)


def _mean_cell(row, key, digits=2):
  value, std = row[key], row.get(key + '_spread')
  if value is None:
    return '-'
  text = '%.*f' % (digits, value)
  if std is not None:
    text += ' ± %.*f' % (digits, std)
  return text


def table(rows):
  """Markdown lines of one table (rows from `cell`)."""
  lines = ['| ' + ' | '.join(TABLE_HEADER) + ' |',
           '|' + '|'.join([' --- '] * 2 + [' ---: '] * (len(TABLE_HEADER) - 2))
           + '|']
  for r in rows:
    cells = [r['algorithm'], ','.join(str(s) for s in r['seeds']),
             str(r['steps']), str(r['labeled_per_step']),
             str(r['labeled_images'])]
    cells += [_mean_cell(r, key) + (
        OLD_TUNE_MARK if 'tuned' in key and not r['tuned_per_row'] and
        r[key] is not None else '') for _, key in TABLE_ACCURACIES]
    for threshold in THRESHOLDS:
      key = 'minutes_to_%d' % threshold
      text = _mean_cell(r, key, digits=1)
      reached, total = r[key + '_reached'], len(r['seeds'])
      if reached and reached < total:
        text += ' (%d/%d)' % (reached, total)
      cells.append(text)
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
  return any(
      os.stat(os.path.join(d, results_lib.RESULTS_FILE)).st_mtime > written
      for d in model_dirs)


def make_report(labels, algorithms, model_dirs, output_dir, log_path):
  run_command([sys.executable, os.path.join(ROOT, 'launch', 'report.py')] +
              ['--model_dir=' + d for d in model_dirs] +
              ['--output_dir=' + output_dir, '--names=' + ','.join(algorithms)],
              log_path, 'launch/report.py (%d labels)' % labels)


def machine():
  """One line describing the machine and the TensorFlow runtime."""
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
  return '%s, %d cores%s%s; runtime: %s' % (
      model, os.cpu_count(), ' (%s)' % features if features else '',
      ', %.0f GiB' % memory if memory else '', runtime())


def command_line():
  script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
  return ' '.join(['python', script] + [shlex.quote(a) for a in sys.argv[1:]])


def document(by_labels, ceiling, extra, start_load):
  """The text of accuracy.md."""
  runtimes = sorted(set(t for _, rows in by_labels + [(None, ceiling or [])]
                        for r in rows for run in r['runs']
                        for t in run['runtimes']))
  lines = [
      '# Convergence on Fashion-MNIST', '',
      'Generated by `benchmarks/accuracy.py`; do not edit by hand.', '',
      'Machine: %s. Load average (1 min) when the command started: %.2f, '
      'when it wrote this file: %.2f.' % (machine(), start_load,
                                          os.getloadavg()[0]), '',
      'Runtimes of the runs: %s.' % ('; '.join(runtimes) or '-'), '',
      'Command (from the repository root; run again, it resumes):', '',
      '    ' + command_line(), '',
      'Every run trains from its preset `launch/configs/fmnist_ALGORITHM.cfg` '
      'with %s`--seed=SEED` added, on `%s`, for ceil(%d / labeled '
      'images a step) steps (train.py\'s count: SESEMI\'s labeled batch is '
      '6 × --batch_size) with %d periodic validation evaluations, then is '
      'evaluated by `launch/eval.py`. Accuracy in %%. "test" / "valid" is the '
      'headline: the EMA model where the run keeps one, else the raw model, '
      'untuned; "tuned" is that model after eval.py\'s batch-norm '
      're-estimation (`--tune=stream`: BN updates on the training stream, as '
      'libml, with that model\'s own weights; "†": by an older eval.py that '
      'gave the raw model\'s statistics to the EMA model too, which running '
      'the command again replaces). Over several seeds a cell is mean ± '
      'sample standard deviation. '
      '"min to 80 %%" / "min to 85 %%": wall minutes until a periodic '
      'evaluation\'s validation accuracy (EMA where kept, else raw) first '
      'reached it ("(k/n)": k of n seeds did; the mean is theirs). Labeled '
      'img/s: the median of train.py\'s progress lines; wall min: training '
      'and evaluation, summed over sessions.'
      % ('`%s` and ' % ' '.join(extra) if extra else '', '%s.SEED@LABELS-%d' % (
          DATASET, FLAGS.valid), FLAGS.labeled_images, FLAGS.evals_per_run),
      '']
  for labels, rows in by_labels:
    link = '%s/%d/report.md' % (REPORT_SUBDIR, labels)
    lines += ['## %d labels (`%s`)' % (labels, split_name(
        labels, FLAGS.valid, rows[0]['seeds'][0]) if len(
            rows[0]['seeds']) == 1 else '%s.SEED@%d-%d' % (
                DATASET, labels, FLAGS.valid)), '']
    lines += table(rows)
    lines += ['', 'Plots (losses, learning rate, validation accuracy against '
              'steps, test confusion matrices) and the full evaluation '
              'tables: [%s](%s).' % (link, link), '',
              '![accuracy, %d labels](%s/%d/accuracy.png)'
              % (labels, REPORT_SUBDIR, labels), '']
  if ceiling:
    lines += ['## Ceiling: %s on all %d training labels (`%s`)' % (
        CEILING_ALGORITHM, ceiling[0]['labels'], DATASET), '',
              'No validation part: "valid" is empty and the times to '
              'accuracy use the periodic test evaluations.', '']
    lines += table(ceiling)
    lines.append('')
  return '\n'.join(lines)


def main(argv):
  del argv
  start_load = os.getloadavg()[0]
  label_counts, algorithms, extra = check_flags(FLAGS)
  seeds = seeds_by_labels(FLAGS, label_counts)
  data_dir = cli.resolve_path(FLAGS.data_dir)
  work_dir = cli.resolve_path(FLAGS.work_dir)
  docs_dir = cli.resolve_path(FLAGS.docs_dir)
  os.makedirs(work_dir, exist_ok=True)
  os.makedirs(data_dir, exist_ok=True)
  info = prepare_data(data_dir, [split_name(n, FLAGS.valid, seed)
                                 for n in label_counts for seed in seeds[n]],
                      work_dir)
  first = label_counts[0]
  resolved = {a: resolve_run(a, extra, info, data_dir, split_name(
      first, FLAGS.valid, seeds[first][0])) for a in algorithms}
  per_step = {a: resolved[a][1] for a in algorithms}
  steps = {a: int(math.ceil(FLAGS.labeled_images / per_step[a]))
           for a in algorithms}
  for a in algorithms:
    _say('%s: %d labeled images a step, %d steps' % (a, per_step[a], steps[a]))
  by_labels = []
  for labels in label_counts:
    model_dirs, names, rows = [], [], []
    for a in algorithms:
      runs = []
      for seed in seeds[labels]:
        d = run_dir(work_dir, labels, a, seed)
        split = split_name(labels, FLAGS.valid, seed)
        if not run_one(a, labels, steps[a], extra, data_dir, d,
                       run_params(resolved[a], steps[a], seed, data_dir,
                                  split), seed, split,
                       train=not FLAGS.report_only):
          continue
        model_dirs.append(d)
        names.append(a if len(seeds[labels]) == 1 else '%s_s%d' % (a, seed))
        runs.append(summary(a, labels, steps[a], per_step[a], d, seed))
      if runs:
        rows.append(cell(runs))
    if not rows:
      continue
    output_dir = os.path.join(docs_dir, REPORT_SUBDIR, str(labels))
    if report_is_stale(output_dir, model_dirs):
      _say('%d labels: report in %s' % (labels, output_dir))
      make_report(labels, names, model_dirs, output_dir,
                  os.path.join(work_dir, str(labels), 'report.log'))
    by_labels.append((labels, rows))
  ceiling = None
  if FLAGS.ceiling:
    a, seed = CEILING_ALGORITHM, seeds[first][0]
    ceiling_run = resolve_run(a, extra, info, data_dir, DATASET)
    ceiling_per_step = ceiling_run[1]
    ceiling_steps = int(math.ceil(FLAGS.labeled_images / ceiling_per_step))
    d = run_dir(work_dir, None, a, seed)
    if run_one(a, None, ceiling_steps, extra, data_dir, d,
               run_params(ceiling_run, ceiling_steps, seed, data_dir,
                          DATASET), seed, DATASET,
               train=not FLAGS.report_only):
      all_labels = int(info['splits']['train']['count'])
      ceiling = [cell([summary(a, all_labels, ceiling_steps,
                               ceiling_per_step, d, seed)])]
  os.makedirs(docs_dir, exist_ok=True)
  doc_path = os.path.join(docs_dir, DOC_FILE)
  fileio.write_atomic(doc_path, document(by_labels, ceiling, extra,
                                         start_load))
  for labels, rows in by_labels:
    _say('\n%d labels:' % labels)
    _say('\n'.join(table(rows)))
  if ceiling:
    _say('\nceiling (%s, all labels):' % CEILING_ALGORITHM)
    _say('\n'.join(table(ceiling)))
  _say('wrote %s' % doc_path)
  _say(json.dumps({'labeled_images': FLAGS.labeled_images,
                   'labels': label_counts,
                   'seeds': {str(n): seeds[n] for n in label_counts},
                   'extra': extra, 'doc': doc_path, 'runtime': runtime(),
                   'cells': [dict(r, runs=None) for _, rows in by_labels
                             for r in rows],
                   'runs': [run for _, rows in by_labels for r in rows
                            for run in r['runs']],
                   'ceiling': ceiling[0]['runs'][0] if ceiling else None}))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
