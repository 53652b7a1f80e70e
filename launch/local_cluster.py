r"""Starts a tf.distribute cluster of launch/train.py processes on 127.0.0.1.

  python launch/local_cluster.py --workers=2 --evaluator -- \
      --flagfile=launch/configs/sesemi_fmnist_quickstart.cfg \
      --data_dir=DATA --model_dir=runs/cluster

One chief, `--workers` workers, `--ps` parameter servers (parameter_server
only) and, with `--evaluator`, an evaluator: each a `launch/train.py`
process with its own TF_CONFIG on a free local port, given the flags after
`--` plus `--distribution_strategy`. Each task's output goes to
MODEL_DIR/logs/<type>-<index>.log (appended: a restarted cluster keeps the
killed one's lines). The launcher prints one line per task it starts and
waits. When a task fails the others are stopped; the exit code is 0 when the
chief, the workers and the evaluator all ended with 0, else 1 (2 for bad
flags). Parameter servers never end on their own; they are stopped when
training is over. Running it again with the same flags resumes from the
newest checkpoint (docs/distributed.md).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags

from runner import cli

FLAGS = flags.FLAGS
TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train.py')
STRATEGIES = ('multi_worker_mirrored', 'parameter_server')
HOST = '127.0.0.1'
# Seconds a task gets to end after SIGTERM before SIGKILL.
STOP_GRACE_SECS = 10


def define_flags():
  flags.DEFINE_integer('workers', 2, 'Workers besides the chief.')
  flags.DEFINE_integer('ps', None, 'Parameter servers (parameter_server '
                       'only; default 1 there).')
  flags.DEFINE_bool('evaluator', False, 'Add an evaluator task.')
  flags.DEFINE_enum('distribution_strategy', 'multi_worker_mirrored',
                    STRATEGIES, 'Passed to every launch/train.py.')
  flags.DEFINE_string('python', sys.executable, 'Interpreter of the tasks.')


def free_ports(count):
  """`count` distinct TCP ports free on HOST now."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind((HOST, 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def cluster_spec(workers, ps=0, evaluator=False, ports=None):
  """{'chief': [addr], 'worker': [...], 'ps': [...], 'evaluator': [addr]}.

  The evaluator is listed (tf.estimator reads its task from the cluster) but
  nobody connects to it.
  """
  kinds = [('chief', 1), ('worker', workers), ('ps', ps),
           ('evaluator', 1 if evaluator else 0)]
  total = sum(n for _, n in kinds)
  ports = list(ports) if ports is not None else free_ports(total)
  spec = {}
  for kind, count in kinds:
    if count:
      spec[kind] = ['%s:%d' % (HOST, ports.pop(0)) for _ in range(count)]
  return spec


def tasks(spec):
  """[(type, index)]: chief, workers, evaluator, then ps (start order)."""
  order = ('ps', 'chief', 'worker', 'evaluator')
  return [(kind, i) for kind in order for i in range(len(spec.get(kind, [])))]


def tf_config(spec, kind, index):
  return json.dumps({'cluster': spec, 'task': {'type': kind, 'index': index}})


def forwarded_model_dir(args):
  """--model_dir (or --result) among forwarded args or their flagfiles."""
  found = None
  for arg in args:
    for name in ('--model_dir=', '--result='):
      if arg.startswith(name):
        found = arg[len(name):]
    if arg.startswith('--flagfile=') and found is None:
      path = cli.resolve_path(arg[len('--flagfile='):])
      if os.path.isfile(path):
        with open(path) as f:
          found = forwarded_model_dir([l.strip() for l in f]) or found
  return found


def check_args(args, workers, ps, strategy):
  """UsageError for flags the cluster cannot run with; returns model_dir."""
  if workers < 0 or (ps or 0) < 0:
    raise cli.UsageError('--workers and --ps must not be negative')
  if strategy == 'parameter_server' and ps < 1:
    raise cli.UsageError('--distribution_strategy=parameter_server needs '
                         '--ps >= 1')
  if strategy != 'parameter_server' and ps:
    raise cli.UsageError('--ps applies to --distribution_strategy='
                         'parameter_server only')
  for arg in args:
    if arg.split('=', 1)[0] in ('--distribution_strategy', '--cpu_replicas'):
      raise cli.UsageError('%s is set by local_cluster.py; do not forward it'
                           % arg.split('=', 1)[0])
  model_dir = forwarded_model_dir(args)
  if not model_dir:
    raise cli.UsageError('forward --model_dir to the tasks (after --)')
  return cli.resolve_path(model_dir)


class Task(object):
  """One running launch/train.py of the cluster."""

  def __init__(self, kind, index, spec, args, log_dir, python, strategy):
    self.name = '%s-%d' % (kind, index)
    self.kind = kind
    self.log = os.path.join(log_dir, self.name + '.log')
    env = dict(os.environ, TF_CONFIG=tf_config(spec, kind, index))
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    # Unbuffered, so a task that is stopped or killed keeps its last lines.
    env.setdefault('PYTHONUNBUFFERED', '1')
    with open(self.log, 'a') as log:
      log.write('=== %s: %s started\n' % (time.strftime('%Y-%m-%d %H:%M:%S'),
                                         self.name))
      log.flush()
      self.proc = subprocess.Popen(
          [python, TRAIN] + list(args) +
          ['--distribution_strategy=' + strategy],
          stdout=log, stderr=subprocess.STDOUT, env=env)

  def stop(self):
    if self.proc.poll() is None:
      self.proc.terminate()

  def kill_after_grace(self, deadline):
    try:
      self.proc.wait(timeout=max(0., deadline - time.time()))
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()


def flushed_print(line):
  """print, flushed at once (the launcher's output is often a pipe)."""
  print(line, flush=True)


def run(args, workers=2, ps=None, evaluator=False, strategy=STRATEGIES[0],
        python=sys.executable, printer=flushed_print, poll_secs=0.2):
  """Runs the cluster to its end; returns the exit code (0 or 1)."""
  if ps is None:
    ps = 1 if strategy == 'parameter_server' else 0
  model_dir = check_args(args, workers, ps, strategy)
  log_dir = os.path.join(model_dir, 'logs')
  os.makedirs(log_dir, exist_ok=True)
  spec = cluster_spec(workers, ps, evaluator)
  printer('cluster %s' % json.dumps(spec, sort_keys=True))
  running = []
  try:
    for kind, index in tasks(spec):
      task = Task(kind, index, spec, args, log_dir, python, strategy)
      running.append(task)
      printer('started %s pid %d log %s' % (task.name, task.proc.pid,
                                            task.log))
    return _wait(running, printer, poll_secs)
  finally:
    _stop_all(running)


def _wait(running, printer, poll_secs):
  """Waits for every non-ps task; 1 as soon as one fails, else 0."""
  pending = [t for t in running if t.kind != 'ps']
  while pending:
    for task in list(pending):
      code = task.proc.poll()
      if code is None:
        continue
      pending.remove(task)
      if code:
        printer('%s failed (exit %d, see %s); stopping the cluster'
                % (task.name, code, task.log))
        return 1
      printer('%s finished' % task.name)
    time.sleep(poll_secs)
  return 0


def _stop_all(running):
  for task in running:
    task.stop()
  deadline = time.time() + STOP_GRACE_SECS
  for task in running:
    task.kill_after_grace(deadline)


def _terminate(signum, frame):
  del frame
  raise SystemExit(128 + signum)


def main(argv):
  signal.signal(signal.SIGTERM, _terminate)
  code = run(argv[1:], FLAGS.workers, FLAGS.ps, FLAGS.evaluator,
             FLAGS.distribution_strategy, FLAGS.python)
  sys.exit(code)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
