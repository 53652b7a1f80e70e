"""tf.distribute: TF_CONFIG checks, strategy correctness, and a real local
cluster (launch/local_cluster.py: chief + 2 workers on 127.0.0.1).
"""

import glob
import json
import os
import re
import shutil
import signal
import time

from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import inputs
from input_pipeline import sources
from launch import local_cluster
from launch import train as train_lib
from model_fns import core
from model_fns import registry
from runner import cli
from runner import devices
from runner import distribute
from runner import model_dir as model_dir_lib
from runner import params as params_lib
from tests import data_fixtures

TINY_NET = data_fixtures.TINY_NET

if 'model_dir' not in flags.FLAGS:
  train_lib.define_flags()


def config(spec, kind, index):
  return json.dumps({'cluster': spec, 'task': {'type': kind, 'index': index}})


SPEC = {'chief': ['127.0.0.1:2222'], 'worker': ['127.0.0.1:2223',
                                                '127.0.0.1:2224']}


class DataTestBase(data_fixtures.TinyDataTestCase):
  """Tiny prepared data shared by a class."""

  def train_args(self, model_dir, *extra):
    return (['--data_dir=' + self.data_dir, '--dataset=' + self.split,
             '--model_dir=' + model_dir, '--algorithm=supervised',
             '--batch_size=4'] + TINY_NET + list(extra))


class TfConfigTest(DataTestBase):
  """A TF_CONFIG the strategy cannot use is one line and exit 2."""

  def assertUsage(self, strategy, tf_config, needle, cpu_replicas=1):
    environ = {} if tf_config is None else {'TF_CONFIG': tf_config}
    with self.assertRaisesRegex(cli.UsageError, needle):
      distribute.resolve(strategy, cpu_replicas, environ)

  def test_bad_configs(self):
    worker0 = config(SPEC, 'worker', 0)
    self.assertUsage('multi_worker_mirrored', '{"cluster": ', 'not valid JSON')
    self.assertUsage('multi_worker_mirrored', '[1]', 'JSON object')
    self.assertUsage('multi_worker_mirrored', '{"task": {"type": "chief"}}',
                     'no "cluster"')
    self.assertUsage('multi_worker_mirrored', json.dumps({'cluster': SPEC}),
                     'no "task"')
    self.assertUsage('multi_worker_mirrored',
                     config({'worker': SPEC['worker']}, 'worker', 0),
                     'exactly one "chief"')
    self.assertUsage('multi_worker_mirrored', config(SPEC, 'worker', 2),
                     r'index 2 out of range: the cluster has 2 \'worker\'')
    self.assertUsage('multi_worker_mirrored', config(SPEC, 'worker', -1),
                     'out of range')
    self.assertUsage('multi_worker_mirrored', config(SPEC, 'ps', 0),
                     "task type 'ps' is not in the cluster")
    self.assertUsage('multi_worker_mirrored',
                     config(dict(SPEC, master=['127.0.0.1:1']), 'chief', 0),
                     "unknown task type 'master'")
    self.assertUsage('multi_worker_mirrored',
                     config(dict(SPEC, worker=['127.0.0.1']), 'chief', 0),
                     'host:port')
    self.assertUsage('multi_worker_mirrored',
                     config(dict(SPEC, evaluator=['127.0.0.1:1',
                                                  '127.0.0.1:2']), 'chief', 0),
                     'at most one')
    # Strategy against cluster.
    self.assertUsage('multi_worker_mirrored', None, 'needs a cluster')
    self.assertUsage('parameter_server', worker0, 'needs "ps" tasks')
    self.assertUsage('multi_worker_mirrored',
                     config(dict(SPEC, ps=['127.0.0.1:1']), 'chief', 0),
                     'takes no "ps"')
    self.assertUsage('off', worker0, 'TF_CONFIG is set')
    self.assertUsage('mirrored', worker0, 'TF_CONFIG is set')
    self.assertUsage('multi_worker_mirrored', worker0, 'mirrored only', 2)
    self.assertUsage('mirrored', None, 'must be positive', 0)

  def test_good_configs(self):
    self.assertIsNone(distribute.resolve('off', 1, {}))
    self.assertIsNone(distribute.resolve('off', 1, {'TF_CONFIG': ' '}))
    self.assertIsNone(distribute.resolve('mirrored', 2, {}))
    cluster = distribute.resolve('multi_worker_mirrored', 1,
                                 {'TF_CONFIG': config(SPEC, 'worker', 1)})
    self.assertEqual((cluster.task_type, cluster.task_id), ('worker', 1))
    self.assertEqual(cluster.num_workers, 3)
    self.assertFalse(cluster.is_chief)
    self.assertTrue(cluster.trains)
    spec = dict(SPEC, ps=['127.0.0.1:2225'], evaluator=['127.0.0.1:2226'])
    cluster = distribute.resolve('parameter_server', 1,
                                 {'TF_CONFIG': config(spec, 'evaluator', 0)})
    self.assertEqual(cluster.task, 'evaluator:0')
    self.assertFalse(cluster.trains)
    chief = distribute.resolve('parameter_server', 1,
                               {'TF_CONFIG': config(spec, 'chief', 0)})
    self.assertTrue(chief.is_chief)

  def test_train_exits_2_before_any_work(self):
    model_dir = os.path.join(self.get_temp_dir(), 'never')
    proc = data_fixtures.run_entry(
        'train', *self.train_args(model_dir, '--distribution_strategy='
                                  'multi_worker_mirrored'),
        timeout=300, env={'TF_CONFIG': config(SPEC, 'worker', 5)})
    errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
    self.assertEqual(proc.returncode, 2, proc.stderr)
    self.assertEqual(errors, ["error: TF_CONFIG task index 5 out of range: "
                              "the cluster has 2 'worker' task(s)"])
    self.assertNotIn('Traceback', proc.stderr)
    self.assertFalse(os.path.exists(model_dir))

  def test_local_cluster_layout(self):
    spec = local_cluster.cluster_spec(2, ps=1, evaluator=True,
                                      ports=[10, 11, 12, 13, 14])
    self.assertEqual(spec, {'chief': ['127.0.0.1:10'],
                            'worker': ['127.0.0.1:11', '127.0.0.1:12'],
                            'ps': ['127.0.0.1:13'],
                            'evaluator': ['127.0.0.1:14']})
    self.assertEqual(local_cluster.tasks(spec),
                     [('ps', 0), ('chief', 0), ('worker', 0), ('worker', 1),
                      ('evaluator', 0)])
    # Every task's TF_CONFIG is one the trainer accepts, as that task.
    for kind, index in local_cluster.tasks(spec):
      cluster = distribute.resolve('parameter_server', 1, {
          'TF_CONFIG': local_cluster.tf_config(spec, kind, index)})
      self.assertEqual((cluster.task_type, cluster.task_id), (kind, index))
    ports = local_cluster.free_ports(3)
    self.assertLen(set(ports), 3)
    flagfile = os.path.join(self.get_temp_dir(), 'run.cfg')
    with open(flagfile, 'w') as f:
      f.write('--batch_size=4\n--model_dir=/runs/a\n')
    self.assertEqual(local_cluster.check_args(
        ['--flagfile=' + flagfile], 1, 0, 'multi_worker_mirrored'), '/runs/a')
    with self.assertRaisesRegex(cli.UsageError, 'forward --model_dir'):
      local_cluster.check_args(['--batch_size=4'], 1, 0,
                               'multi_worker_mirrored')
    with self.assertRaisesRegex(cli.UsageError, 'set by local_cluster'):
      local_cluster.check_args(['--model_dir=/a', '--distribution_strategy=off'],
                               1, 0, 'multi_worker_mirrored')
    with self.assertRaisesRegex(cli.UsageError, 'needs --ps >= 1'):
      local_cluster.check_args(['--model_dir=/a'], 1, 0, 'parameter_server')


class StrategyCorrectnessTest(DataTestBase):
  """Two mirrored replicas fed the same batch take the single-device step.

  With identical inputs on both replicas every cross-replica reduction must
  give back the single replica's value: the mean gradient, the batch-norm
  update (mean of the replicas' updates), one EMA update, one global-step
  increment (so the same lr and pseudo-label ramp, a function of the global
  step). Summing instead of averaging, or updating once per replica, would
  change the weights, the EMA shadows, the moving statistics or the step.
  """

  STEPS = 4

  def resolved(self):
    argv = ['train'] + self.train_args(
        self.get_temp_dir(), '--algorithm=pseudo_label', '--confidence=0',
        '--warmup_pos=1', '--train_steps=8', '--weight_decay=0.02',
        '--weight_decay_l2=0.001', '--ema_decay=0.9', '--lr=0.1')
    flags.FLAGS(params_lib.reorder_flagfiles(argv))
    try:
      source = sources.resolve(self.data_dir, self.split)
      params = params_lib.resolve(flags.FLAGS, params_lib.data_facts(
          source, self.data_dir, self.split))
    finally:
      flags.FLAGS.unparse_flags()
    params['train_steps'] = registry.default_train_steps(params, source.counts)
    needs = registry.get(params['algorithm']).input_needs(params)
    return source, params, needs

  def batches(self, source, params, needs):
    with tf.Graph().as_default():
      element = tf.data.make_one_shot_iterator(
          inputs.train_input_fn(source, needs, params, seed=3)()).get_next()
      with tf.Session() as session:
        got = [session.run(element) for _ in range(self.STEPS)]
    return tf.nest.map_structure(lambda *xs: np.stack(xs), *got)

  def test_two_replicas_same_data_equal_one_device(self):
    source, params, needs = self.resolved()
    stacked = self.batches(source, params, needs)

    def input_fn(copies):
      def fn():
        dataset = tf.data.Dataset.from_tensor_slices(stacked)
        return dataset.flat_map(lambda features, labels: (
            tf.data.Dataset.from_tensors((features, labels)).repeat(copies)))
      return fn

    opts = {'device': 'cpu', 'save_checkpoints_steps': 1000,
            'log_every_steps': 1000, 'keep_checkpoint_max': 0}
    off_dir = os.path.join(self.get_temp_dir(), 'off')
    estimator, _ = devices.make_estimator(off_dir, params, opts)
    estimator.train(input_fn(1), max_steps=self.STEPS)
    # The mirrored run starts from the off run's initial weights.
    mirrored_dir = os.path.join(self.get_temp_dir(), 'mirrored')
    os.makedirs(mirrored_dir)
    for path in glob.glob(os.path.join(off_dir, 'model.ckpt-0.*')):
      shutil.copy(path, mirrored_dir)
    tf.train.update_checkpoint_state(
        mirrored_dir, os.path.join(mirrored_dir, 'model.ckpt-0'))
    strategy = distribute.make_strategy('mirrored', cpu_replicas=2)
    self.assertEqual(strategy.num_replicas_in_sync, 2)
    self.assertEqual(distribute.replicas_per_step('mirrored', strategy), 2)
    estimator = distribute.make_estimator(core.model_fn, mirrored_dir, params,
                                          opts, strategy, cpu_replicas=2)
    estimator.train(input_fn(2), max_steps=self.STEPS)

    off = tf.train.load_checkpoint(
        os.path.join(off_dir, 'model.ckpt-%d' % self.STEPS))
    mirrored = tf.train.load_checkpoint(
        os.path.join(mirrored_dir, 'model.ckpt-%d' % self.STEPS))
    start = tf.train.load_checkpoint(os.path.join(off_dir, 'model.ckpt-0'))
    names = sorted(off.get_variable_to_shape_map())
    self.assertEqual(names, sorted(mirrored.get_variable_to_shape_map()))
    self.assertEqual(mirrored.get_tensor('global_step'), self.STEPS)
    kinds = {'ema': 0, 'moving': 0, 'kernel': 0}
    for name in names:
      value = off.get_tensor(name)
      self.assertAllClose(mirrored.get_tensor(name), value, rtol=1e-5,
                          atol=1e-6, msg=name)
      if name.endswith('ExponentialMovingAverage'):
        kinds['ema'] += 1
      elif re.search(r'moving_(mean|variance)$', name):
        kinds['moving'] += 1
      elif name.endswith('/kernel'):
        kinds['kernel'] += 1
      else:
        continue
      # Each kind changed over the steps (the comparison is not vacuous).
      self.assertGreater(np.abs(value - start.get_tensor(name)).max(), 1e-6,
                         name)
    self.assertGreater(min(kinds.values()), 0, kinds)


def checkpoint_steps(model_dir):
  return sorted(model_dir_lib.checkpoint_step_from_name(p[:-len('.index')])
                for p in glob.glob(os.path.join(model_dir,
                                                'model.ckpt-*.index')))


def logged_steps(path):
  """Steps of the progress lines ('step N/M ...') of a task's log."""
  with open(path) as f:
    return [int(m.group(1)) for m in re.finditer(r'^step (\d+)/\d+ ',
                                                 f.read(), re.M)]


class LocalClusterTest(DataTestBase):
  """A real chief + 2 workers multi_worker_mirrored run on 127.0.0.1.

  The first run asks for far more steps than it can take before the kill
  lands (after its first checkpoint past step 0), so the kill is always
  mid-run however the machine schedules the test; the restarted cluster
  asks for two checkpoint intervals more than the checkpoint it resumes
  from (train_steps may change on resume).
  """

  EVERY = 10
  NEVER = 10 ** 6

  def start_cluster(self, model_dir, steps, *launcher_flags):
    return data_fixtures.start_entry(
        'local_cluster', '--workers=2', *launcher_flags, '--',
        *self.train_args(model_dir, '--train_steps=%d' % steps,
                         '--save_checkpoints_steps=%d' % self.EVERY,
                         '--log_every_steps=1'), env={'TF_CONFIG': None})

  def test_kill_worker_resume_then_eval(self):
    model_dir = os.path.join(self.get_temp_dir(), 'cluster')
    logs = os.path.join(model_dir, 'logs')
    proc = self.start_cluster(model_dir, self.NEVER)
    pids = {}
    try:
      for _ in range(4):  # The cluster line and one line per task.
        match = re.match(r'started (\S+) pid (\d+)', proc.stdout.readline())
        if match:
          pids[match.group(1)] = int(match.group(2))
      self.assertEqual(sorted(pids), ['chief-0', 'worker-0', 'worker-1'])
      deadline = time.time() + 400
      while time.time() < deadline and proc.poll() is None:
        if [s for s in checkpoint_steps(model_dir) if s >= self.EVERY]:
          break
        time.sleep(0.2)
      if proc.poll() is not None:
        self.fail('the cluster ended before the kill: %s' % proc.stderr.read())
      os.kill(pids['worker-1'], signal.SIGKILL)
      stdout, _ = proc.communicate(timeout=120)
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.communicate()
    # The launcher saw the failure, stopped the others and failed.
    self.assertEqual(proc.returncode, 1)
    self.assertIn('worker-1 failed (exit -9', stdout)
    first = model_dir_lib.checkpoint_step(
        model_dir_lib.latest_checkpoint(model_dir))
    self.assertGreaterEqual(first, self.EVERY)
    last = first + 2 * self.EVERY

    # Restarted with an evaluator, the cluster resumes and finishes.
    proc = self.start_cluster(model_dir, last, '--evaluator')
    stdout, stderr = proc.communicate(timeout=600)
    self.assertEqual(proc.returncode, 0, stdout + stderr)
    for task in ('chief-0', 'worker-0', 'worker-1', 'evaluator-0'):
      self.assertIn('%s finished' % task, stdout)
    with open(os.path.join(logs, 'chief-0.log')) as f:
      chief = f.read()
    self.assertIn('resuming from %s (step %d)'
                  % (os.path.join(model_dir, 'model.ckpt-%d' % first), first),
                  chief)
    self.assertIn('multi_worker_mirrored, task chief:0, 3 replica(s) a step',
                  chief)
    # Both workers (and the chief) made progress, in both runs, and the
    # second run continued from the checkpoint up to the last step.
    for task in ('chief-0', 'worker-0', 'worker-1'):
      steps = logged_steps(os.path.join(logs, task + '.log'))
      self.assertIn(1, steps, task)
      self.assertEqual(steps[-1], last, task)
      self.assertIn(first + 1, steps, task)
    # One checkpoint lineage, in model_dir: checkpoints at multiples of the
    # interval up to the last step, the newest in the one state file.
    saved = checkpoint_steps(model_dir)
    self.assertEqual(saved[-1], last)
    self.assertEqual([s % self.EVERY for s in saved], [0] * len(saved))
    state = tf.train.get_checkpoint_state(model_dir)
    self.assertEqual(state.model_checkpoint_path,
                     os.path.join(model_dir, 'model.ckpt-%d' % last))
    for path in state.all_model_checkpoint_paths:
      self.assertEqual(os.path.dirname(path), model_dir)
    reader = tf.train.load_checkpoint(state.model_checkpoint_path)
    self.assertEqual(reader.get_tensor('global_step'), last)
    # The evaluator evaluated the final checkpoint.
    with open(os.path.join(logs, 'evaluator-0.log')) as f:
      self.assertRegex(f.read(), r'step %d: valid accuracy \d' % last)
    # launch/eval.py works on the result.
    proc = data_fixtures.run_entry(
        'eval', '--model_dir=' + model_dir, '--tune_images=16',
        '--batch_size=16', timeout=300, env={'TF_CONFIG': None})
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertIn('at step %d' % last, proc.stdout)
    with open(os.path.join(model_dir, 'eval_results.json')) as f:
      results = json.load(f)
    self.assertEqual(results['step'], last)


if __name__ == '__main__':
  tf.test.main()
