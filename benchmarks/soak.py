r"""Soak test: kill -9 at random points of prepare / split / train / export.

  .venv/bin/python benchmarks/soak.py [--faults=20] [--seed=0] [--work_dir=DIR]

The stages, the hostile faults and what counts as recovered, corrupt or
lost: docs/benchmarks.md.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import tensorflow.compat.v1 as tf

from benchmarks import synthetic
from input_pipeline import dataset_info
from input_pipeline import sources
from input_pipeline.errors import DataError
from launch import export as export_lib

TRAIN_STEPS = 20
SPLIT = 'mnist.1@100-100'
TRAIN_FLAGS = ['--algorithm=supervised', '--batch_size=8',
               '--train_steps=%d' % TRAIN_STEPS, '--save_checkpoints_steps=5',
               '--log_every_steps=5', '--network=resnet', '--filters=4',
               '--repeat=1', '--scales=1']


def command(script, args):
  return [sys.executable, os.path.join(ROOT, 'launch', script + '.py')] + args


def run(script, args):
  """Runs to completion; returns (exit code, stdout + stderr)."""
  proc = subprocess.run(command(script, args), stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, universal_newlines=True,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'),
                        check=False)
  return proc.returncode, proc.stdout


def run_and_kill(script, args, delay):
  """Starts the command, SIGKILLs it after `delay` s; True if it was killed
  while running."""
  proc = subprocess.Popen(command(script, args), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  deadline = time.time() + delay
  while time.time() < deadline and proc.poll() is None:
    time.sleep(0.002)
  killed = proc.poll() is None
  if killed:
    proc.send_signal(signal.SIGKILL)
  proc.wait()
  return killed


def timed(script, args):
  start = time.time()
  code, output = run(script, args)
  if code:
    raise SystemExit('clean %s run failed: %s' % (script, output[-2000:]))
  return time.time() - start


def load_checkpoint(path):
  reader = tf.train.load_checkpoint(path)
  for name in reader.get_variable_to_shape_map():
    reader.get_tensor(name)
  return int(reader.get_tensor('global_step'))


def listed_checkpoints(model_dir):
  state = tf.train.get_checkpoint_state(model_dir)
  if not state:
    return []
  return list(state.all_model_checkpoint_paths)


def read_events(path):
  count = 0
  try:
    for _ in tf.train.summary_iterator(path):
      count += 1
  except tf.errors.DataLossError:
    pass  # A record cut short by the kill ends the file (as in TensorBoard).
  return count


class Soak(object):
  """The cycles and the counters."""

  def __init__(self, work_dir, rng):
    self.work = work_dir
    self.rng = rng
    self.raw = os.path.join(work_dir, 'raw')
    self.data_dir = os.path.join(work_dir, 'data')
    self.export_dir = os.path.join(work_dir, 'export')
    self.durations = {}
    self.counts = {'faults': 0, 'recovered': 0, 'corrupt': 0, 'lost': 0}
    self.by_stage = {}
    self.problems = []

  # Helpers.

  def delay(self, stage):
    return self.rng.uniform(0.0, self.durations[stage])

  def record(self, stage, delay, recovered, corrupt=0, lost=0, note=''):
    self.counts['faults'] += 1
    self.counts['recovered'] += int(recovered)
    self.counts['corrupt'] += corrupt
    self.counts['lost'] += lost
    stats = self.by_stage.setdefault(stage, {'faults': 0, 'recovered': 0})
    stats['faults'] += 1
    stats['recovered'] += int(recovered)
    status = 'recovered' if recovered else 'NOT RECOVERED'
    if corrupt or lost:
      status += ', %d corrupt, %d lost' % (corrupt, lost)
      self.problems.append('%s: %s' % (stage, note))
    when = ('killed at %5.2fs' % delay if delay is not None
            else 'hostile run')
    print('fault %2d: %-7s %s: %s%s'
          % (self.counts['faults'], stage, when, status,
             ' (%s)' % note if note else ''), flush=True)

  def prepare_args(self):
    return ['--dataset=mnist', '--source_dir=' + self.raw,
            '--data_dir=' + self.data_dir]

  def train_args(self, model_dir):
    return (['--data_dir=' + self.data_dir, '--dataset=' + SPLIT,
             '--model_dir=' + model_dir] + TRAIN_FLAGS)

  def export_args(self, model_dir):
    return ['--model_dir=' + model_dir, '--export_dir=' + self.export_dir,
            '--overwrite', '--verify_images=4']

  # Set-up.

  def setup(self):
    images, labels = synthetic.tiny_arrays(3000, (28, 28, 1), 10)
    synthetic.write_idx(self.raw, 'train', images[..., 0], labels)
    synthetic.write_idx(self.raw, 't10k', images[:500, ..., 0],
                            labels[:500])
    self.durations['prepare'] = timed('prepare_data', self.prepare_args())
    self.durations['split'] = timed('prepare_data', [
        '--data_dir=' + self.data_dir, '--split=' + SPLIT])
    model_dir = os.path.join(self.work, 'calibrate')
    self.durations['train'] = timed('train', self.train_args(model_dir))
    self.durations['export'] = timed('export', self.export_args(model_dir))
    print('clean runs: %s' % ', '.join('%s %.1fs' % kv for kv in
                                       sorted(self.durations.items())),
          flush=True)
    return model_dir

  # Stages.

  def dataset_state(self):
    """'absent', 'complete' or 'corrupt'."""
    if not os.path.isfile(os.path.join(self.data_dir, 'mnist',
                                       dataset_info.INFO_FILE)):
      return 'absent'
    try:
      dataset_dir, info = dataset_info.load_named(self.data_dir, 'mnist')
      dataset_info.verify(dataset_dir, info, deep=True)
    except DataError:
      return 'corrupt'
    return 'complete'

  def split_state(self):
    try:
      source = sources.resolve(self.data_dir, SPLIT)
    except DataError as e:
      return 'absent' if 'never created' in str(e) else 'corrupt'
    try:
      sources.verify(source, deep=True)
    except DataError:
      return 'corrupt'
    return 'complete'

  def prepare_fault(self):
    shutil.rmtree(os.path.join(self.data_dir, 'mnist'), ignore_errors=True)
    delay = self.delay('prepare')
    if not run_and_kill('prepare_data', self.prepare_args(), delay):
      return False
    state = self.dataset_state()
    corrupt = int(state == 'corrupt')
    if state != 'complete':
      shutil.rmtree(os.path.join(self.data_dir, 'mnist'), ignore_errors=True)
      run('prepare_data', self.prepare_args())
    recovered = self.dataset_state() == 'complete'
    self.record('prepare', delay, recovered, corrupt,
                note='after the kill: %s' % state)
    return True

  def split_fault(self):
    shutil.rmtree(os.path.join(self.data_dir, 'mnist', 'splits', SPLIT),
                  ignore_errors=True)
    delay = self.delay('split')
    args = ['--data_dir=' + self.data_dir, '--split=' + SPLIT]
    if not run_and_kill('prepare_data', args, delay):
      return False
    state = self.split_state()
    corrupt = int(state == 'corrupt')
    if state != 'complete':
      shutil.rmtree(os.path.join(self.data_dir, 'mnist', 'splits', SPLIT),
                    ignore_errors=True)
      run('prepare_data', args)
    recovered = self.split_state() == 'complete'
    self.record('split', delay, recovered, corrupt,
                note='after the kill: %s' % state)
    return True

  def check_model_dir(self, model_dir):
    """Corrupt outputs in a model_dir after a kill (what a run relies on)."""
    corrupt, notes = 0, []
    params = os.path.join(model_dir, 'params.json')
    if os.path.exists(params):
      try:
        with open(params) as f:
          json.load(f)
      except ValueError:
        corrupt += 1
        notes.append('params.json does not parse')
    for path in listed_checkpoints(model_dir):
      try:
        load_checkpoint(path)
      except (tf.errors.OpError, ValueError) as e:
        corrupt += 1
        notes.append('%s: %s' % (os.path.basename(path),
                                 str(e).split('\n')[0]))
    for name in os.listdir(model_dir) if os.path.isdir(model_dir) else []:
      if name.startswith('events.out.tfevents'):
        try:
          read_events(os.path.join(model_dir, name))
        except tf.errors.OpError as e:
          corrupt += 1
          notes.append('%s: %s' % (name, str(e).split('\n')[0]))
    return corrupt, notes

  def train_faults(self, model_dir, kills):
    """Up to `kills` faults into one training run, then one resume that
    must finish it; returns the number injected."""
    faults = []
    for _ in range(kills):
      before = listed_checkpoints(model_dir)
      delay = self.delay('train')
      if not run_and_kill('train', self.train_args(model_dir), delay):
        break  # It finished before the kill.
      corrupt, notes = self.check_model_dir(model_dir)
      lost = 0
      if before and not tf.io.gfile.exists(before[-1] + '.index'):
        lost = 1
        notes.append('%s disappeared' % os.path.basename(before[-1]))
      listed = listed_checkpoints(model_dir)
      notes.append('resumes at step %d' % (load_checkpoint(listed[-1])
                                           if listed else 0))
      faults.append((delay, corrupt, lost, notes))
    if not faults:
      return 0
    recovered, note = self.resume(model_dir)
    for delay, corrupt, lost, notes in faults:
      self.record('train', delay, recovered, corrupt, lost,
                  '; '.join(notes) + note)
    return len(faults)

  def resume(self, model_dir):
    """Runs training again to the end; (finished and readable, note)."""
    code, output = run('train', self.train_args(model_dir))
    if code:
      return False, '; resume failed: %s' % output.strip().split('\n')[-1]
    step = load_checkpoint(tf.train.latest_checkpoint(model_dir))
    bad = []
    for name in sorted(os.listdir(model_dir)):
      if name.startswith('model.ckpt-') and name.endswith('.index'):
        try:
          load_checkpoint(os.path.join(model_dir, name[:-len('.index')]))
        except (tf.errors.OpError, ValueError):
          bad.append(name)
    return step == TRAIN_STEPS and not bad, '; finished at step %d%s' % (
        step, '; unreadable: %s' % ', '.join(bad) if bad else '')

  def export_state(self):
    if not os.path.exists(self.export_dir):
      return 'absent'
    try:
      predict = export_lib.load_saved_model(self.export_dir)
      predict('serving_default', synthetic.random_images(2, (28, 28, 1)))
    except (OSError, IOError, tf.errors.OpError, ValueError, RuntimeError):
      return 'corrupt'
    return 'complete'

  def export_fault(self, model_dir):
    had_export = self.export_state() == 'complete'
    delay = self.delay('export')
    if not run_and_kill('export', self.export_args(model_dir), delay):
      return False
    state = self.export_state()
    corrupt = int(state == 'corrupt')
    # The re-run first restores an export a kill left moved aside: the
    # previous export is lost only if it is gone and was not restored.
    code, output = run('export', self.export_args(model_dir))
    restored = 'restored the previous export' in output
    lost = int(had_export and state == 'absent' and not restored)
    recovered = code == 0 and self.export_state() == 'complete'
    self.record('export', delay, recovered, corrupt, lost,
                'after the kill: %s' % state)
    return True

  # Hostile faults.

  def snapshot(self, root):
    found = {}
    for directory, _, files in os.walk(root):
      for name in files:
        path = os.path.join(directory, name)
        found[os.path.relpath(path, root)] = os.path.getsize(path)
    return found

  def export_onto_run_fault(self, model_dir):
    before = self.snapshot(model_dir)
    refused = True
    notes = []
    for target in (model_dir, os.path.dirname(model_dir)):
      code, output = run('export', ['--model_dir=' + model_dir,
                                    '--export_dir=' + target, '--overwrite',
                                    '--verify_images=0'])
      errors = [l for l in output.splitlines() if l.startswith('error:')]
      refused &= code == 2 and len(errors) == 1 and 'Traceback' not in output
      notes.append('exit %d' % code)
    after = self.snapshot(model_dir)
    lost = int(any(name not in after for name in before))
    corrupt, more = self.check_model_dir(model_dir)
    self.record('export_onto_run', None,
                refused and not lost and not corrupt, corrupt, lost,
                ', '.join(notes + more))

  def overwrite_busy_fault(self):
    model_dir = os.path.join(self.work, 'busy%d' % self.counts['faults'])
    args = self.train_args(model_dir)
    # Long enough to be running when the overwrite comes; no evaluation on
    # the way (one checkpoint interval).
    args = [a for a in args if not a.startswith(('--train_steps=',
                                                 '--save_checkpoints_steps='))
           ] + ['--train_steps=%d' % (TRAIN_STEPS * 10),
                '--save_checkpoints_steps=%d' % (TRAIN_STEPS * 10)]
    proc = subprocess.Popen(command('train', args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    while (not os.path.exists(os.path.join(model_dir, 'params.json')) and
           proc.poll() is None):
      time.sleep(0.01)
    code, output = run('prepare_data', self.prepare_args() + [
        '--overwrite', '--drop_splits'])
    during = proc.poll() is None
    train_output, _ = proc.communicate()
    if not during:
      return False  # Training ended before the overwrite came: no fault.
    refused = code == 1 and 'in use by another process' in output
    intact = (self.dataset_state() == 'complete' and
              self.split_state() == 'complete')
    lost = int(not intact or proc.returncode != 0)
    self.record('overwrite_busy', None,
                refused and intact and proc.returncode == 0, 0, lost,
                'prepare exit %d; training exit %d%s' % (
                    code, proc.returncode,
                    '' if proc.returncode == 0 else
                    ': ' + train_output.strip().split('\n')[-1]))
    return True

  def racing_writers_fault(self):
    name = 'race%d' % self.counts['faults']
    split = '%s.1@100-100' % name
    notes, good, corrupt, lost = [], True, 0, 0
    for what, args, state in (
        ('dataset', self.prepare_args() + ['--name=' + name],
         lambda: self.named_state(name, None)),
        ('split', ['--data_dir=' + self.data_dir, '--split=' + split],
         lambda: self.named_state(name, split))):
      procs = [subprocess.Popen(command('prepare_data', args),
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                universal_newlines=True,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
               for _ in range(2)]
      results = [(p.wait(), p.communicate()[0]) for p in procs]
      codes = sorted(code for code, _ in results)
      loser = [o for c, o in results if c == 1]
      one_line = bool(loser) and len(
          [l for l in loser[0].splitlines() if l.startswith('error:')]) == 1
      named = bool(loser) and os.path.join(self.data_dir, name) in loser[0]
      result = state()
      notes.append('%s: exits %s, %s' % (what, codes, result))
      good &= codes == [0, 1] and one_line and named and result == 'complete'
      corrupt += int(result == 'corrupt')
      lost += int(codes == [0, 0])  # Both reported success: one replaced.
    self.record('racing_writers', None, good, corrupt, lost, '; '.join(notes))
    shutil.rmtree(os.path.join(self.data_dir, name), ignore_errors=True)

  def named_state(self, name, split):
    try:
      if split:
        source = sources.resolve(self.data_dir, split)
        sources.verify(source, deep=True)
      else:
        dataset_dir, info = dataset_info.load_named(self.data_dir, name)
        dataset_info.verify(dataset_dir, info, deep=True)
    except DataError as e:
      return 'absent' if ('never created' in str(e) or
                          'no prepared dataset' in str(e) or
                          'no such' in str(e).lower()) else 'corrupt'
    return 'complete'

  def run(self, faults):
    calibrate_dir = self.setup()
    shutil.rmtree(self.export_dir)  # The first export fault starts afresh.
    cycle = 0
    while self.counts['faults'] < faults:
      cycle += 1
      self.prepare_fault()
      self.split_fault()
      model_dir = os.path.join(self.work, 'run%d' % cycle)
      if self.train_faults(model_dir, 2) == 0 or not listed_checkpoints(
          model_dir):
        model_dir = calibrate_dir
      self.export_fault(model_dir)
      self.export_onto_run_fault(model_dir)
      self.overwrite_busy_fault()
      self.racing_writers_fault()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--faults', type=int, default=20)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--work_dir', default=None)
  args = parser.parse_args()
  tf.get_logger().setLevel('ERROR')
  work = args.work_dir or tempfile.mkdtemp(prefix='soak')
  os.makedirs(work, exist_ok=True)
  soak = Soak(work, random.Random(args.seed))
  start = time.time()
  try:
    soak.run(args.faults)
  finally:
    if not args.work_dir:
      shutil.rmtree(work, ignore_errors=True)
  counts = soak.counts
  print('faults injected %d (%s); runs recovered %d; corrupt outputs %d; '
        'data lost %d; %.0f s'
        % (counts['faults'], ', '.join('%s %d' % (k, v['faults']) for k, v in
                                       sorted(soak.by_stage.items())),
           counts['recovered'], counts['corrupt'], counts['lost'],
           time.time() - start))
  for problem in soak.problems:
    print('problem: %s' % problem)
  print(json.dumps({'faults_injected': counts['faults'],
                    'runs_recovered': counts['recovered'],
                    'corrupt_outputs': counts['corrupt'],
                    'data_lost': counts['lost'],
                    'by_stage': soak.by_stage,
                    'seconds': round(time.time() - start)}, sort_keys=True))
  return 0 if (counts['corrupt'] == 0 and counts['lost'] == 0 and
               counts['recovered'] == counts['faults']) else 1


if __name__ == '__main__':
  sys.exit(main())
