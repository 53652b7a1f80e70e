r"""Starts one training process per Ascend device of an HCCL rank table.

  python launch/npu_launch.py --rank_table_file=launch/configs/hccl_8p.json \
      [--log_dir=DIR] [--server_id=IP] -- \
      --flagfile=launch/configs/sesemi_fmnist_quickstart.cfg \
      --data_dir=DATA --model_dir=runs/sesemi_8p --device=npu

Everything after `--` goes to launch/train.py (or to --program). Each process
gets the environment of runner/ascend.py: RANK_ID and ASCEND_DEVICE_ID /
DEVICE_ID from its table entry, RANK_SIZE (devices in the whole table) and
RANK_TABLE_FILE (absolute path). With a table of several servers, only the
devices of --server_id are started here (run the launcher on every server).

Model directories: rank 0 trains in MODEL_DIR (its checkpoints, params.json
and evaluations are the run's); rank r > 0 trains in MODEL_DIR/rank_<r>,
because train.py holds a lock on its model_dir and each rank's Estimator
saves and evaluates its own (identical, since the gradients are averaged)
copy of the weights. Logs: stdout and stderr of rank r go to
LOG_DIR/rank_<r>.log (default LOG_DIR = MODEL_DIR/logs).

The launcher waits for every rank. When one fails, the others are stopped
(on devices they would block in HCCL until its timeout) and the launcher
exits 1 naming the rank and its log; a bad table or flags exit 2.
"""

import os
import shlex
import signal
import subprocess
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags

from runner import ascend
from runner import cli

FLAGS = flags.FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, 'launch', 'train.py')
POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 10


def define_flags():
  """The launcher's flags; `--log_dir` is absl.logging's own flag, reused."""
  flags.DEFINE_string('rank_table_file', None,
                      'HCCL rank table (JSON, version 1.0), e.g. '
                      'launch/configs/hccl_8p.json.')
  flags.DEFINE_string('server_id', None,
                      'This machine\'s server_id in the table (needed when '
                      'the table lists several servers).')
  flags.DEFINE_string('program', None,
                      'Command each rank runs, before the flags after --. '
                      'Default: this Python with launch/train.py.')


def model_dir_flag(args):
  """(index, flag name, value) of --model_dir/--result in `args`, or None."""
  for i, arg in enumerate(args):
    for name in ('model_dir', 'result'):
      for prefix in ('--' + name, '-' + name):
        if arg.startswith(prefix + '='):
          return i, name, arg[len(prefix) + 1:]
        if arg == prefix and i + 1 < len(args):
          return i, name, args[i + 1]
  return None


def rank_args(args, found, rank_model_dir):
  """`args` with the model_dir flag at `found` replaced by rank_model_dir."""
  if found is None:
    return list(args)
  i, name, _ = found
  args = list(args)
  if '=' in args[i]:
    args[i] = '--%s=%s' % (name, rank_model_dir)
  else:
    args[i + 1] = rank_model_dir
  return args


def rank_model_dir(model_dir, rank):
  return model_dir if rank == 0 else os.path.join(model_dir, 'rank_%d' % rank)


def local_devices(devices, server_id, path):
  """The table's devices on this server (all of them for one server)."""
  servers = sorted(set(d.server_id for d in devices))
  if server_id is None:
    if len(servers) > 1:
      raise cli.UsageError('rank table %s lists servers %s: give --server_id '
                           'of this machine' % (path, ', '.join(servers)))
    return list(devices)
  local = [d for d in devices if d.server_id == server_id]
  if not local:
    raise cli.UsageError('--server_id=%s is not in rank table %s (servers: %s)'
                         % (server_id, path, ', '.join(servers)))
  return local


def rank_environment(base, device, rank_size, table_file):
  env = dict(base)
  env.update(RANK_ID=str(device.rank_id), RANK_SIZE=str(rank_size),
             ASCEND_DEVICE_ID=str(device.device_id),
             DEVICE_ID=str(device.device_id), RANK_TABLE_FILE=table_file)
  return env


def plan(flag_values, train_args, environ=None):
  """What to start: a list of (device, argv, env, log path).

  Raises:
    cli.UsageError: missing --rank_table_file, a bad table, an unknown
      --server_id, or neither --log_dir nor a --model_dir in the train flags.
  """
  environ = os.environ if environ is None else environ
  if not flag_values.rank_table_file:
    raise cli.UsageError('--rank_table_file is required (e.g. '
                         'launch/configs/hccl_8p.json)')
  table_file = cli.resolve_path(flag_values.rank_table_file)
  devices = ascend.load_rank_table(table_file)
  local = local_devices(devices, flag_values.server_id, table_file)
  found = model_dir_flag(train_args)
  model_dir = cli.resolve_path(found[2]) if found else None
  if flag_values.program:
    program = shlex.split(flag_values.program)
  else:
    program = [sys.executable, TRAIN]
    if model_dir is None:
      raise cli.UsageError('give --model_dir=DIR after -- (on the command '
                           'line, not in a flagfile: each rank gets its own)')
  log_dir = cli.resolve_path(flag_values.log_dir) if flag_values.log_dir else (
      os.path.join(model_dir, 'logs') if model_dir else None)
  if log_dir is None:
    raise cli.UsageError('--log_dir is required when the flags after -- give '
                         'no --model_dir')
  starts = []
  for device in local:
    args = rank_args(train_args, found,
                     rank_model_dir(model_dir, device.rank_id)
                     if model_dir else None)
    starts.append((device, program + args,
                   rank_environment(environ, device, len(devices), table_file),
                   os.path.join(log_dir, 'rank_%d.log' % device.rank_id)))
  return starts


def run(starts, printer=print):
  """Starts every rank, waits; returns {rank: exit code}.

  Raises:
    cli.RunError: a rank failed (the message names it and its log); the
      ranks still running were stopped.
  """
  processes = []
  try:
    for device, argv, env, log in starts:
      os.makedirs(os.path.dirname(log), exist_ok=True)
      with open(log, 'w') as out:
        process = subprocess.Popen(argv, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
      processes.append((device, process, log))
      printer('rank %d: device %d, pid %d, log %s'
              % (device.rank_id, device.device_id, process.pid, log))
    codes = {}
    failed = None
    while len(codes) < len(processes) and failed is None:
      time.sleep(POLL_SECONDS)
      for device, process, log in processes:
        code = process.poll()
        if code is None or device.rank_id in codes:
          continue
        codes[device.rank_id] = code
        if code != 0 and failed is None:
          failed = (device, code, log)
    if failed is not None:
      stopped = _stop(processes)
      device, code, log = failed
      raise cli.RunError(
          'rank %d (device %d) exited with code %d, see %s%s'
          % (device.rank_id, device.device_id, code, log,
             '; stopped ranks %s' % ', '.join(map(str, stopped))
             if stopped else ''))
    printer('all %d ranks finished' % len(processes))
    return codes
  except KeyboardInterrupt:
    _stop(processes)
    raise


def _stop(processes):
  """Terminates (then kills) the ranks still running; returns their ranks."""
  running = [(d, p) for d, p, _ in processes if p.poll() is None]
  for _, process in running:
    process.send_signal(signal.SIGTERM)
  deadline = time.time() + STOP_GRACE_SECONDS
  for _, process in running:
    try:
      process.wait(max(0.1, deadline - time.time()))
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
  return sorted(d.rank_id for d, _ in running)


def main(argv):
  # absl stops at `--` and returns what follows: the train flags. Anything
  # else left over came before `--` and is not a launcher flag.
  train_args = argv[1:]
  if train_args and '--' not in sys.argv:
    raise cli.UsageError('unrecognized arguments: %s' % ' '.join(train_args))
  options = types.SimpleNamespace(
      rank_table_file=FLAGS.rank_table_file, server_id=FLAGS.server_id,
      program=FLAGS.program,
      # absl.logging's own flag, whose default is $TEST_TMPDIR under Bazel:
      # only a --log_dir on the command line counts.
      log_dir=FLAGS.log_dir if FLAGS['log_dir'].present else None)
  run(plan(options, train_args))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
