"""The Ascend path against the recording npu_bridge stand-in
(tests/fake_npu_bridge): rank tables, run config, optimizer wrapping,
sharding, real training and the per-rank launcher.
"""

import contextlib
import json
import os
import sys
import time
import unittest
from unittest import mock

from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import inputs
from input_pipeline import needs as needs_lib
from input_pipeline import runtime
from input_pipeline import sources
from launch import npu_launch
from launch import train as train_lib
from model_fns import core
from model_fns import registry
from model_fns import supervised
from runner import ascend
from runner import cli
from runner import devices
from runner import npu
import tests
from tests import data_fixtures
from tests import model_test_util as mtu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_NPU = os.path.join(ROOT, 'tests', 'fake_npu_bridge')
TABLE = os.path.join(ROOT, 'launch', 'configs', 'hccl_8p.json')
RANK_VARIABLES = ('RANK_SIZE', 'RANK_ID', 'ASCEND_DEVICE_ID', 'DEVICE_ID',
                  'RANK_TABLE_FILE')
FP16_MODES = ('allow_fp32_to_fp16', 'force_fp16', 'allow_mix_precision')
DYNAMIC = ('ExponentialUpdateLossScaleManager', dict(
    init_loss_scale=2.**32, incr_every_n_steps=1000, decr_every_n_nan_or_inf=2,
    incr_ratio=2., decr_ratio=0.5))

if 'model_dir' not in flags.FLAGS:
  train_lib.define_flags()


@contextlib.contextmanager
def rank_env(**values):
  """os.environ with the rank variables replaced by `values` (strings)."""
  cleared = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}
  cleared.update({k: str(v) for k, v in values.items()})
  with mock.patch.dict(os.environ, cleared, clear=True):
    yield


def eight_ranks(rank=3):
  return dict(RANK_SIZE=8, RANK_ID=rank, ASCEND_DEVICE_ID=rank,
              RANK_TABLE_FILE=TABLE)


@contextlib.contextmanager
def fake_bridge():
  """The stand-in npu_bridge importable; yields its RECORD (emptied)."""
  sys.path.insert(0, FAKE_NPU)
  try:
    import npu_bridge  # pylint: disable=g-import-not-at-top
    del npu_bridge.RECORD[:]
    yield npu_bridge.RECORD
  finally:
    sys.path.remove(FAKE_NPU)
    for name in [m for m in sys.modules if m.startswith('npu_bridge')]:
      del sys.modules[name]


def recorded(record, name):
  return [kwargs for n, kwargs in record if n == name]


def write_json(path, value):
  with open(path, 'w') as f:
    json.dump(value, f)
  return path


class RankEnvTest(tf.test.TestCase):

  def test_unset_is_one_device(self):
    with rank_env():
      self.assertEqual(ascend.read_rank_env(), (1, 0, 0, None))
      self.assertEqual(devices.input_shard({'device': 'cpu'}), (1, 0))

  def test_every_rank_of_the_sample_table(self):
    table = ascend.load_rank_table(TABLE)
    self.assertEqual([d.rank_id for d in table], list(range(8)))
    self.assertEqual([d.device_id for d in table], list(range(8)))
    for rank in range(8):
      env = ascend.read_rank_env(
          {'RANK_SIZE': '8', 'RANK_ID': str(rank), 'DEVICE_ID': str(rank),
           'RANK_TABLE_FILE': TABLE})
      self.assertEqual(env, (8, rank, rank, TABLE))

  def assertUsageError(self, environ, *needles):
    with self.assertRaises(cli.UsageError) as caught:
      ascend.read_rank_env(environ)
    message = str(caught.exception)
    self.assertNotIn('\n', message)
    for needle in needles:
      self.assertIn(needle, message)

  def test_bad_environment_names_the_variable(self):
    full = {'RANK_SIZE': '8', 'RANK_ID': '3', 'ASCEND_DEVICE_ID': '3',
            'RANK_TABLE_FILE': TABLE}

    def without(key, **changes):
      env = {k: v for k, v in full.items() if k != key}
      env.update(changes)
      return env

    self.assertUsageError(without(None, RANK_SIZE='eight'), 'RANK_SIZE',
                          'not an integer')
    self.assertUsageError(without(None, RANK_SIZE=''), 'RANK_SIZE')
    self.assertUsageError(without(None, RANK_SIZE='0'), 'RANK_SIZE=0')
    self.assertUsageError(without(None, RANK_ID='-1'), 'RANK_ID=-1')
    self.assertUsageError(without(None, RANK_ID='8'), 'RANK_ID=8',
                          'RANK_SIZE=8')
    self.assertUsageError({'RANK_ID': '1'}, 'RANK_ID=1', 'RANK_SIZE=1')
    self.assertUsageError(without('RANK_ID'), 'RANK_ID is not set')
    self.assertUsageError(without('ASCEND_DEVICE_ID'), 'ASCEND_DEVICE_ID')
    self.assertUsageError(without('RANK_TABLE_FILE'), 'RANK_TABLE_FILE')
    self.assertUsageError(without(None, DEVICE_ID='4'), 'ASCEND_DEVICE_ID=3',
                          'DEVICE_ID=4')
    self.assertUsageError(without(None, RANK_SIZE='4', RANK_ID='1',
                                  ASCEND_DEVICE_ID='1'),
                          'lists 8 devices', 'RANK_SIZE=4')
    self.assertUsageError(without(None, ASCEND_DEVICE_ID='5'), 'rank 3',
                          'device 3', 'is 5')

  def test_bad_rank_tables_name_the_file_and_field(self):
    directory = self.get_temp_dir()
    with open(TABLE) as f:
      good = json.load(f)

    def table(name, change):
      value = json.loads(json.dumps(good))
      change(value)
      return write_json(os.path.join(directory, name), value)

    devices_of = lambda t: t['server_list'][0]['device']
    cases = [
        (table('v0.json', lambda t: t.update(version='0.1')), "'0.1'"),
        (table('nolist.json', lambda t: t.pop('server_list')), 'server_list'),
        (table('count.json', lambda t: t.update(server_count='2')),
         'server_count is 2'),
        (table('dup.json', lambda t: devices_of(t)[1].update(rank_id='0')),
         'rank_id values'),
        (table('nodev.json', lambda t: devices_of(t)[2].pop('device_id')),
         'device[2] has no "device_id"'),
        (table('word.json', lambda t: devices_of(t)[0].update(device_id='x')),
         'is not an integer'),
        (table('twice.json', lambda t: devices_of(t)[4].update(device_id='3')),
         'device_id 3 twice'),
        (os.path.join(directory, 'missing.json'), 'cannot be read'),
    ]
    broken = os.path.join(directory, 'broken.json')
    with open(broken, 'w') as f:
      f.write('{"version": "1.0",')
    cases.append((broken, 'not valid JSON'))
    for path, needle in cases:
      with self.assertRaises(cli.UsageError) as caught:
        ascend.load_rank_table(path)
      self.assertIn(path, str(caught.exception))
      self.assertIn(needle, str(caught.exception))

  def test_input_shard_on_npu_is_the_rank(self):
    with fake_bridge(), rank_env(**eight_ranks(rank=5)):
      self.assertEqual(devices.input_shard({'device': 'npu'}), (8, 5))
      self.assertEqual(devices.input_shard({'device': 'cpu'}), (1, 0))
    with fake_bridge(), rank_env():
      self.assertEqual(devices.input_shard({'device': 'npu'}), (1, 0))
    with fake_bridge(), rank_env(RANK_SIZE=8):
      with self.assertRaisesRegex(cli.UsageError, 'RANK_ID is not set'):
        devices.input_shard({'device': 'npu'})


class LossScaleSettingsTest(tf.test.TestCase):

  def test_auto_follows_the_precision_mode(self):
    for mode in FP16_MODES + (None,):
      self.assertEqual(ascend.loss_scale_settings({'precision_mode': mode}),
                       DYNAMIC, mode)
    self.assertIsNone(ascend.loss_scale_settings(
        {'precision_mode': 'must_keep_origin_dtype'}))

  def test_flags_override(self):
    keep = {'precision_mode': 'must_keep_origin_dtype'}
    self.assertEqual(ascend.loss_scale_settings(
        dict(keep, loss_scale='dynamic')), DYNAMIC)
    self.assertIsNone(ascend.loss_scale_settings(
        {'precision_mode': 'force_fp16', 'loss_scale': 'none'}))
    self.assertEqual(ascend.loss_scale_settings(
        dict(keep, loss_scale='1024')),
                     ('FixedLossScaleManager', {'loss_scale': 1024.}))
    name, kwargs = ascend.loss_scale_settings(
        {'precision_mode': 'allow_mix_precision', 'init_loss_scale': 2.**16,
         'incr_every_n_steps': 500, 'decr_every_n_nan_or_inf': 1,
         'incr_ratio': 4., 'decr_ratio': 0.25})
    self.assertEqual(name, 'ExponentialUpdateLossScaleManager')
    self.assertEqual(kwargs, dict(init_loss_scale=2.**16,
                                  incr_every_n_steps=500,
                                  decr_every_n_nan_or_inf=1, incr_ratio=4.,
                                  decr_ratio=0.25))
    for bad in ('0.5', 'dynamc', ''):
      self.assertEqual(ascend.valid_loss_scale(bad), False, bad)
    with self.assertRaisesRegex(cli.UsageError, '--loss_scale'):
      ascend.loss_scale_settings({'loss_scale': 'big'})

  def test_flags_reach_the_options(self):
    try:
      flags.FLAGS(['train', '--loss_scale=4096', '--init_loss_scale=65536',
                   '--incr_every_n_steps=10', '--decr_ratio=0.25'])
      opts = devices.options_from_flags(flags.FLAGS)
      self.assertEqual(ascend.loss_scale_settings(opts),
                       ('FixedLossScaleManager', {'loss_scale': 4096.}))
      name, kwargs = ascend.loss_scale_settings(dict(opts,
                                                     loss_scale='dynamic'))
      self.assertEqual(kwargs, dict(init_loss_scale=65536.,
                                    incr_every_n_steps=10,
                                    decr_every_n_nan_or_inf=2, incr_ratio=2.,
                                    decr_ratio=0.25))
      flags.FLAGS.unparse_flags()
      for bad in ('--loss_scale=0.5', '--decr_ratio=2', '--init_loss_scale=0'):
        with self.assertRaises(flags.IllegalFlagValueError, msg=bad):
          flags.FLAGS(['train', bad])
        flags.FLAGS.unparse_flags()
    finally:
      flags.FLAGS.unparse_flags()


class NpuEstimatorTest(tf.test.TestCase):
  """make_estimator's NPU path: config, wrapping, training, evaluation."""

  def params(self, **overrides):
    values = dict(batch_size=4, seed=1, ema_decay=0.9, weight_decay=0.,
                  lr=0.1, momentum=0.9)
    values.update(overrides)
    return mtu.make_params(supervised, num_classes=4, **values)

  def opts(self, **overrides):
    values = dict(device='npu', save_checkpoints_steps=100,
                  log_every_steps=100)
    values.update(overrides)
    return values

  def test_run_config_arguments(self):
    with fake_bridge() as record:
      for env, mode, hcom in ((eight_ranks(), 'allow_mix_precision', True),
                              ({}, 'must_keep_origin_dtype', False)):
        del record[:]
        with rank_env(**env):
          estimator, device = devices.make_estimator(
              self.get_temp_dir(), self.params(),
              self.opts(precision_mode=mode, iterations_per_loop=5,
                        mix_compile_mode=True))
        self.assertEqual(device, 'npu')
        config, = recorded(record, 'NPURunConfig')
        self.assertEqual(config['precision_mode'], mode)
        self.assertEqual(config['iterations_per_loop'], 5)
        self.assertIs(config['enable_data_pre_proc'], True)
        self.assertIs(config['mix_compile_mode'], True)
        self.assertIs(config['hcom_parallel'], hcom)
        self.assertEqual(config['tf_random_seed'], 1)
        self.assertEqual(type(estimator).__name__, 'NPUEstimator')
      # One rank, no float16: the model_fn is passed through untouched.
      self.assertIs(recorded(record, 'NPUEstimator')[0]['model_fn'],
                    core.model_fn)

  def wrapping_record(self, env, opts):
    """Builds one TRAIN graph through the NPU model_fn; returns the record."""
    with fake_bridge() as record, rank_env(**env):
      params = self.params()
      model_fn = npu.model_fn(ascend.read_rank_env(),
                              ascend.loss_scale_settings(opts),
                              mtu.tiny_network)
      features = mtu.synthetic_features(supervised.input_needs(params),
                                        params)
      with tf.Graph().as_default():
        tensors = {k: tf.constant(v) for k, v in features.items()}
        model_fn(tensors, tensors['label'], tf.estimator.ModeKeys.TRAIN,
                 params)
        num_trainable = len(tf.trainable_variables())
      return list(record), num_trainable

  @unittest.skipIf(runtime.TF2, tests.NPU_STAND_IN_TF1_ONLY)
  def test_optimizer_wrapping_one_rank(self):
    record, _ = self.wrapping_record({}, {'precision_mode': 'force_fp16'})
    self.assertEqual([n for n, _ in record],
                     ['ExponentialUpdateLossScaleManager',
                      'NPULossScaleOptimizer'])
    self.assertEqual(record[0][1], DYNAMIC[1])
    self.assertEqual(record[1][1], dict(
        opt='AdamOptimizer',
        loss_scale_manager='ExponentialUpdateLossScaleManager',
        is_distributed=False))
    record, _ = self.wrapping_record(
        {}, {'precision_mode': 'must_keep_origin_dtype', 'loss_scale': '512'})
    self.assertEqual(record[0], ('FixedLossScaleManager',
                                 {'loss_scale': 512.,
                                  'enable_overflow_check': True}))
    self.assertEqual(record[1][1]['loss_scale_manager'],
                     'FixedLossScaleManager')

  @unittest.skipIf(runtime.TF2, tests.NPU_STAND_IN_TF1_ONLY)
  def test_optimizer_wrapping_eight_ranks(self):
    record, num_trainable = self.wrapping_record(
        eight_ranks(), {'precision_mode': 'allow_mix_precision'})
    names = [n for n, _ in record]
    self.assertEqual(names[:3], ['NPUDistributedOptimizer',
                                 'ExponentialUpdateLossScaleManager',
                                 'NPULossScaleOptimizer'])
    self.assertEqual(record[0][1]['optimizer'], 'AdamOptimizer')
    self.assertEqual(record[2][1], dict(
        opt='NPUDistributedOptimizer',
        loss_scale_manager='ExponentialUpdateLossScaleManager',
        is_distributed=True))
    reduces = [k for n, k in record if n == 'hccl_ops.allreduce']
    # One gradient all-reduce per trainable variable, then the overflow flag.
    self.assertLen(reduces, num_trainable + 1)
    self.assertTrue(all(r['reduction'] == 'sum' for r in reduces))
    self.assertEqual(reduces[-1]['shape'], [1])
    self.assertEqual(reduces[-1]['fusion'], 0)
    record, _ = self.wrapping_record(
        eight_ranks(), {'precision_mode': 'must_keep_origin_dtype'})
    self.assertEqual([n for n, _ in record if 'allreduce' not in n],
                     ['NPUDistributedOptimizer'])

  def input_fn(self, params, seed=0):
    features = mtu.synthetic_features(supervised.input_needs(params), params,
                                      seed=seed)

    def fn():
      data = tf.data.Dataset.from_tensors((features, features['label']))
      return data.repeat()

    return fn

  def eval_input_fn(self, params):
    features = mtu.synthetic_features(None, params, mode=mtu.EVAL, batch=8)
    features['label'] %= params['num_classes']

    def fn():
      return tf.data.Dataset.from_tensors((features, features['label']))

    return fn, features

  def train(self, model_dir, env, opts, steps=3):
    """Trains `steps` steps; returns (estimator, checkpoint values)."""
    params = self.params()
    with rank_env(**env):
      estimator, _ = devices.make_estimator(
          model_dir, params, opts, network_fn=mtu.tiny_network)
      estimator.train(self.input_fn(params), max_steps=steps)
    reader = tf.train.load_checkpoint(model_dir)
    values = {name: reader.get_tensor(name)
              for name in reader.get_variable_to_shape_map()}
    return estimator, values

  @unittest.skipIf(runtime.TF2, tests.NPU_STAND_IN_TF1_ONLY)
  def test_eight_rank_training_and_eval_match_one_cpu_process(self):
    base = self.get_temp_dir()
    _, plain = self.train(os.path.join(base, 'cpu'), {},
                          self.opts(device='cpu'))
    with fake_bridge() as record:
      opts = self.opts(precision_mode='allow_mix_precision',
                       incr_every_n_steps=2)
      estimator, npu = self.train(os.path.join(base, 'npu'), eight_ranks(),
                                  opts)
      names = [n for n, _ in record]
      self.assertIn('NPUDistributedOptimizer', names)
      self.assertIn('NPULossScaleOptimizer', names)
      # 3 finite steps, x2 after every 2: one increase, one good step since.
      self.assertEqual(npu['loss_scale'], 2.**33)
      self.assertEqual(npu['good_steps'], 1)
      self.assertEqual(npu['bad_steps'], 0)
      self.assertEqual(npu['global_step'], 3)
      # Adam's step counters are created inside the loss-scale optimizer's
      # tf.cond (as in CANN), hence under 'cond/'.
      self.assertEqual(set(plain) - set(npu), {'beta1_power', 'beta2_power'})
      self.assertEqual(set(npu) - set(plain), {
          'cond/beta1_power', 'cond/beta2_power', 'loss_scale', 'good_steps',
          'bad_steps'})
      # 8 identical ranks average to the same gradients and power-of-two loss
      # scales are exact: the weights are the plain run's.
      for name in set(plain) & set(npu):
        self.assertAllClose(npu[name], plain[name], rtol=1e-6, atol=1e-7,
                            msg=name)
      self.assertAllClose(npu['cond/beta1_power'], plain['beta1_power'])
      eval_fn, features = self.eval_input_fn(self.params())
      del record[:]
      with rank_env(**eight_ranks()):
        metrics = estimator.evaluate(eval_fn, steps=1)
      reduced = sorted(k['tensor'] for n, k in record
                       if n == 'hccl_ops.allreduce')
      self.assertEqual(reduced, ['accuracy/count/read:0',
                                 'accuracy/total/read:0',
                                 'ema_accuracy/count/read:0',
                                 'ema_accuracy/total/read:0'])
    # The all-reduced totals of 8 identical ranks give the local accuracy,
    # recomputed here in numpy from the checkpoint's logits.
    plain_metrics = self.evaluate_plain(os.path.join(base, 'cpu'), eval_fn)
    self.assertAllClose(metrics['accuracy'], plain_metrics['accuracy'])
    self.assertAllClose(metrics['ema/accuracy'], plain_metrics['ema/accuracy'])
    logits = self.logits(os.path.join(base, 'cpu'), features)
    weights = features['mask']
    expected = np.sum((logits.argmax(1) == features['label']) * weights) / (
        weights.sum())
    self.assertAllClose(metrics['accuracy'], expected)

  def evaluate_plain(self, model_dir, eval_fn):
    with rank_env():
      estimator, _ = devices.make_estimator(
          model_dir, self.params(), self.opts(device='cpu'),
          network_fn=mtu.tiny_network)
      return estimator.evaluate(eval_fn, steps=1)

  def logits(self, model_dir, features):
    params = self.params()
    with tf.Graph().as_default():
      spec, _ = mtu.build_spec(features, mtu.EVAL, params)
      del spec
      logits = tf.get_default_graph().get_tensor_by_name('inference/logits:0')
      with tf.Session() as sess:
        tf.train.Saver(tf.global_variables()).restore(
            sess, tf.train.latest_checkpoint(model_dir))
        return sess.run(logits)

  def test_overflowing_steps_are_skipped(self):
    model_dir = os.path.join(self.get_temp_dir(), 'overflow')
    with fake_bridge():
      opts = self.opts(precision_mode='force_fp16', loss_scale='3e38',
                       save_checkpoints_steps=1)
      self.train(model_dir, {}, opts, steps=1)
      first = tf.train.load_checkpoint(model_dir)
      kernel = 'model/tiny/conv/kernel'
      before = first.get_tensor(kernel)
      _, after = self.train(model_dir, {}, opts, steps=3)
    self.assertEqual(after['global_step'], 3)
    self.assertAllEqual(after[kernel], before)


class ShardingAndShapesTest(data_fixtures.TinyDataTestCase):

  @classmethod
  def setUpClass(cls):
    super(ShardingAndShapesTest, cls).setUpClass()
    cls.source = sources.resolve(cls.data_dir, cls.split)

  def params(self, module, **overrides):
    return mtu.make_params(module, num_classes=4, image_shape=(8, 8, 3),
                           **overrides)

  def images_read(self, num_shards, shard_index, batches):
    params = self.params(supervised, normalization='zero_one', batch_size=2)
    needs = needs_lib.InputNeeds(batch_size=2, labeled_view='none')
    with tf.Graph().as_default():
      dataset = inputs.train_input_fn(self.source, needs, params, seed=3,
                                      num_shards=num_shards,
                                      shard_index=shard_index)()
      features, _ = tf.data.make_one_shot_iterator(dataset).get_next()
      with tf.Session() as sess:
        images = np.concatenate([sess.run(features['image'])
                                 for _ in range(batches)])
    return {np.round(image * 255).astype(np.uint8).tobytes()
            for image in images}

  def test_ranks_read_disjoint_records(self):
    shards = []
    for rank in range(2):
      env = dict(RANK_SIZE=2, RANK_ID=rank, ASCEND_DEVICE_ID=rank,
                 RANK_TABLE_FILE=self.two_device_table())
      with fake_bridge(), rank_env(**env):
        num_shards, index = devices.input_shard({'device': 'npu'})
      self.assertEqual((num_shards, index), (2, rank))
      # 4 batches of 2 = two passes over a rank's 4 of the 8 labeled images.
      shards.append(self.images_read(num_shards, index, batches=4))
    everything = self.images_read(1, 0, batches=8)
    self.assertLen(everything, self.source.counts['labeled'])
    self.assertLen(shards[0], 4)
    self.assertLen(shards[1], 4)
    self.assertEmpty(shards[0] & shards[1])
    self.assertEqual(shards[0] | shards[1], everything)

  def two_device_table(self):
    with open(TABLE) as f:
      table = json.load(f)
    table['server_list'][0]['device'] = table['server_list'][0]['device'][:2]
    return write_json(os.path.join(self.get_temp_dir(), 'hccl_2p.json'), table)

  def test_every_algorithm_has_static_input_shapes_on_a_rank(self):
    for name in registry.NAMES:
      module = registry.get(name)
      params = self.params(module, batch_size=2)
      needs = module.input_needs(params)
      with tf.Graph().as_default():
        dataset = inputs.train_input_fn(self.source, needs, params, seed=1,
                                        num_shards=8, shard_index=7)()
        features, labels = tf.data.get_output_shapes(dataset)
        self.assertTrue(labels.is_fully_defined(), name)
        self.assertEqual(labels.as_list(), [needs.batch_size], name)
        for key, shape in features.items():
          self.assertTrue(shape.is_fully_defined(), (name, key, shape))
        self.assertEqual(features['image'].as_list(),
                         [needs.batch_size, 8, 8, 3], name)
        if needs.num_unlabeled and needs.unlabeled_views:
          self.assertEqual(features['unlabeled_views'].as_list(),
                           [needs.num_unlabeled, len(needs.unlabeled_views),
                            8, 8, 3], name)
        if needs.proxy:
          self.assertEqual(features['proxy_image'].as_list(),
                           [needs.proxy_batch * 6, 8, 8, 3], name)


STUB = r'''
import json, os, sys, time
keys = ("RANK_ID", "RANK_SIZE", "ASCEND_DEVICE_ID", "DEVICE_ID",
        "RANK_TABLE_FILE")
print(json.dumps({"env": {k: os.environ.get(k) for k in keys},
                  "argv": sys.argv[1:]}))
sys.stdout.flush()
if os.environ["RANK_ID"] == os.environ.get("FAIL_RANK"):
  sys.exit(3)
if os.environ.get("FAIL_RANK"):
  time.sleep(120)
'''


class LauncherTest(tf.test.TestCase):

  def launch(self, *args, **env):
    stub = os.path.join(self.get_temp_dir(), 'stub.py')
    with open(stub, 'w') as f:
      f.write(STUB)
    return data_fixtures.run_entry(
        'npu_launch', '--program=%s %s' % (sys.executable, stub), *args,
        env=dict(dict.fromkeys(RANK_VARIABLES), **env), timeout=120)

  def test_per_rank_environment_model_dir_and_logs(self):
    model_dir = os.path.join(self.get_temp_dir(), 'run')
    result = self.launch('--rank_table_file=' + TABLE, '--',
                         '--model_dir=' + model_dir, '--train_steps=4')
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn('all 8 ranks finished', result.stdout)
    for rank in range(8):
      log = os.path.join(model_dir, 'logs', 'rank_%d.log' % rank)
      with open(log) as f:
        seen = json.loads(f.readline())
      self.assertEqual(seen['env'], {
          'RANK_ID': str(rank), 'RANK_SIZE': '8',
          'ASCEND_DEVICE_ID': str(rank), 'DEVICE_ID': str(rank),
          'RANK_TABLE_FILE': TABLE})
      expected_dir = model_dir if rank == 0 else os.path.join(
          model_dir, 'rank_%d' % rank)
      self.assertEqual(seen['argv'], ['--model_dir=' + expected_dir,
                                      '--train_steps=4'])
      # What a rank reads back from that environment.
      self.assertEqual(ascend.read_rank_env(seen['env']),
                       (8, rank, rank, TABLE))

  def test_a_failing_rank_stops_the_others(self):
    log_dir = os.path.join(self.get_temp_dir(), 'logs')
    start = time.time()
    result = self.launch('--rank_table_file=' + TABLE, '--log_dir=' + log_dir,
                         FAIL_RANK='5')
    self.assertLess(time.time() - start, 60)
    self.assertEqual(result.returncode, 1)
    lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
    self.assertLen(lines, 1, result.stderr)
    self.assertIn('rank 5 (device 5) exited with code 3', lines[0])
    self.assertIn(os.path.join(log_dir, 'rank_5.log'), lines[0])
    self.assertIn('stopped ranks 0, 1, 2, 3, 4, 6, 7', lines[0])

  def test_bad_table_and_flags_are_one_line_errors(self):
    bad = write_json(os.path.join(self.get_temp_dir(), 'bad.json'),
                     {'version': '1.0', 'server_list': []})
    for args, needle in (
        (['--rank_table_file=' + bad, '--log_dir=/tmp/x'], bad),
        (['--log_dir=/tmp/x'], '--rank_table_file is required'),
        (['--rank_table_file=' + TABLE], '--log_dir is required'),
        (['--rank_table_file=' + TABLE, '--server_id=1.2.3.4',
          '--log_dir=/tmp/x'], '--server_id=1.2.3.4')):
      result = self.launch(*args)
      self.assertEqual(result.returncode, 2, result.stderr)
      lines = result.stderr.strip().splitlines()
      self.assertLen(lines, 1, result.stderr)
      self.assertIn(needle, lines[0])

  def test_plan_for_one_server_of_two(self):
    with open(TABLE) as f:
      table = json.load(f)
    second = json.loads(json.dumps(table['server_list'][0]))
    second['server_id'] = '10.0.0.11'
    for device in second['device']:
      device['rank_id'] = str(int(device['rank_id']) + 8)
    table['server_list'].append(second)
    table['server_count'] = '2'
    path = write_json(os.path.join(self.get_temp_dir(), 'hccl_16p.json'),
                      table)
    values = mock.Mock(rank_table_file=path, server_id='10.0.0.11',
                       log_dir=None, program=None)
    starts = npu_launch.plan(values, ['--model_dir', '/runs/x'], environ={})
    self.assertEqual([d.rank_id for d, _, _, _ in starts], list(range(8, 16)))
    device, argv, env, log = starts[0]
    self.assertEqual(argv[1:], [npu_launch.TRAIN, '--model_dir',
                                '/runs/x/rank_8'])
    self.assertEqual((env['RANK_SIZE'], env['RANK_ID'], env['DEVICE_ID']),
                     ('16', '8', '0'))
    self.assertEqual(log, '/runs/x/logs/rank_8.log')
    self.assertEqual(device.server_id, '10.0.0.11')


class TrainCliTest(tf.test.TestCase):

  def test_missing_rank_id_is_a_one_line_error(self):
    data_dir = self.get_temp_dir()
    data_fixtures.prepare_tiny_dataset(data_dir, n_train=64, n_test=16)
    split = data_fixtures.make_tiny_split(data_dir)
    result = data_fixtures.run_entry(
        'train', '--data_dir=' + data_dir, '--dataset=' + split,
        '--device=npu', '--model_dir=' + os.path.join(data_dir, 'run'),
        '--algorithm=supervised', '--train_steps=2', timeout=300,
        env=dict(dict.fromkeys(RANK_VARIABLES), PYTHONPATH=FAKE_NPU,
                 RANK_SIZE='8', RANK_TABLE_FILE=TABLE, DEVICE_ID='0'))
    self.assertEqual(result.returncode, 2, result.stderr[-2000:])
    lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
    self.assertLen(lines, 1, result.stderr)
    self.assertIn('RANK_ID is not set', lines[0])
    self.assertNotIn('Traceback', result.stderr)


if __name__ == '__main__':
  tf.test.main()
