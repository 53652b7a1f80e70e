r"""CPU time per thread of a throughput.py run, in each phase's timed window.

  python benchmarks/thread_profile.py [--interval=1] -- \
      .venv/bin/python benchmarks/throughput.py --algorithm=fixmatch \
      --steps=5 --warmup=2 --ceiling

How threads and windows are measured: docs/benchmarks.md.
"""

import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags

from runner import cli

FLAGS = flags.FLAGS
flags.DEFINE_float('interval', 1.0, 'Seconds between samples.')
flags.DEFINE_float('min_cpu', 0.05, 'Threads with less CPU in a window are '
                   'summed as "other".')

PHASES = ('real', 'ceiling')


def thread_cpu(pid):
  """{tid: CPU seconds} of every thread of `pid` (empty once it is gone)."""
  tick = float(os.sysconf('SC_CLK_TCK'))
  found = {}
  try:
    tids = os.listdir('/proc/%d/task' % pid)
  except OSError:
    return found
  for tid in tids:
    try:
      with open('/proc/%d/task/%s/stat' % (pid, tid)) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
      continue
    found[tid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
  return found


def run_sampled(command, interval):
  """Runs `command`; returns (samples [(time, {tid: cpu})], lines [(time, text)],
  exit code)."""
  # Unbuffered, so each phase's line arrives when it is printed: the windows
  # are placed by those arrival times.
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env,
                             universal_newlines=True)
  lines = []

  def pump():
    for line in process.stdout:
      sys.stdout.write(line)
      sys.stdout.flush()
      lines.append((time.time(), line.rstrip('\n')))

  reader = threading.Thread(target=pump)
  reader.start()
  samples = []
  while process.poll() is None:
    sample = thread_cpu(process.pid)
    if sample:
      samples.append((time.time(), sample))
    time.sleep(interval)
  reader.join()
  return samples, lines, process.returncode


def window(samples, start, end, min_cpu):
  """Per-thread CPU between the samples nearest `start` and `end`; from_s and
  to_s are those samples' times from the first sample."""
  first = min(samples, key=lambda s: abs(s[0] - start))
  last = min(samples, key=lambda s: abs(s[0] - end))
  per_thread = sorted((cpu - first[1].get(tid, 0.) for tid, cpu in
                       last[1].items()), reverse=True)
  wall = last[0] - first[0]
  total = sum(per_thread)
  kept = [round(c, 1) for c in per_thread if c >= min_cpu]
  return {'from_s': round(first[0] - samples[0][0], 2),
          'to_s': round(last[0] - samples[0][0], 2),
          'window_s': round(wall, 1), 'cpu_s': round(total, 1),
          'cores_busy': round(total / wall, 3) if wall > 0 else None,
          'threads_cpu_s': kept,
          'other_cpu_s': round(total - sum(kept), 1)}


def profile(samples, lines, min_cpu):
  """{phase: window figures} from the command's output."""
  result = json.loads(lines[-1][1])
  printed = {}
  for when, text in lines:
    for phase in PHASES:
      if text.startswith(phase + ' '):
        printed[phase] = when
  figures = {}
  for phase in PHASES:
    if phase in printed and phase in result:
      span = result['steps'] * result[phase]['s_per_step']
      figures[phase] = window(samples, printed[phase] - span, printed[phase],
                              min_cpu)
  return figures


def main(argv):
  command = argv[1:]
  if command and command[0] == '--':
    command = command[1:]
  if not command:
    raise cli.UsageError('give the throughput.py command after --')
  samples, lines, code = run_sampled(command, FLAGS.interval)
  if code:
    raise cli.RunError('the command exited with %d' % code)
  try:
    figures = profile(samples, lines, FLAGS.min_cpu)
  except (ValueError, IndexError, KeyError):
    raise cli.RunError('the command did not end with throughput.py\'s JSON')
  if not figures:
    raise cli.RunError('no timed phase was long enough to sample; use more '
                       '--steps or a smaller --interval')
  for phase, f in figures.items():
    print('%-8s %.1f s window: %.1f CPU s, %.2f cores busy; threads %s, '
          'other %.1f' % (phase, f['window_s'], f['cpu_s'], f['cores_busy'],
                          ' + '.join('%.1f' % c for c in f['threads_cpu_s']),
                          f['other_cpu_s']))
  print(json.dumps({'benchmark': 'thread_profile', 'phases': figures},
                   sort_keys=True))


if __name__ == '__main__':
  cli.run(main)
