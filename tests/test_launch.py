"""The entry points for real, as subprocesses: prepare → train → eval →
export, resume, NPU.
"""

import json
import os
import shutil
import sys
import unittest

from absl import flags
from google.protobuf import text_format
import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import saved_model_pb2

from input_pipeline import records
from input_pipeline import runtime
from input_pipeline import sources
from input_pipeline.errors import DataError
from launch import export as export_lib
from launch import train as train_lib
from model_fns import registry
from model_fns import ssl_common
from runner import devices
from runner import params as params_lib
import tests
from tests import data_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_NPU = os.path.join(ROOT, 'tests', 'fake_npu_bridge')
TINY_NET = data_fixtures.TINY_NET

if 'model_dir' not in flags.FLAGS:
  train_lib.define_flags()


run_entry = data_fixtures.run_entry


class LaunchTest(data_fixtures.TinyDataTestCase):
  """The entry points on the class's tiny dataset (cls.split 'tiny.1@8-8')."""

  def train(self, model_dir, *extra, **kwargs):
    result = run_entry('train', '--data_dir=' + self.data_dir,
                       '--dataset=' + self.split, '--model_dir=' + model_dir,
                       '--save_checkpoints_steps=5', '--log_every_steps=2',
                       *(TINY_NET + list(extra)), **kwargs)
    return result

  def assertSucceeded(self, result):
    self.assertEqual(result.returncode, 0,
                     'exit %d\nstdout:\n%s\nstderr:\n%s'
                     % (result.returncode, result.stdout, result.stderr[-3000:]))

  def assertOneLineError(self, result, *needles):
    self.assertNotEqual(result.returncode, 0)
    lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
    self.assertLen(lines, 1, result.stderr)
    self.assertNotIn('Traceback', result.stderr)
    for needle in needles:
      self.assertIn(needle, lines[0])

  def test_prepare_train_eval_export(self):
    """The main job's path on tiny data; EMA eval and the export agree."""
    work = self.get_temp_dir()
    model_dir = os.path.join(work, 'run')
    # Without TF_CPP_MIN_LOG_LEVEL the entry points are quiet (runner/quiet.py).
    result = self.train(model_dir, '--algorithm=sesemi', '--batch_size=1',
                        '--train_steps=6', '--ema_decay=0.5',
                        env={'TF_CPP_MIN_LOG_LEVEL': None})
    self.assertSucceeded(result)
    for noise in ('cuInit', 'oneDNN', 'cpu_feature_guard', 'tensorflow/core'):
      self.assertNotIn(noise, result.stderr)
    self.assertIn('step 6/6', result.stdout)
    self.assertIn('labeled img/s', result.stdout)
    self.assertIn('xe_proxy', result.stdout)
    with open(os.path.join(model_dir, 'params.json')) as f:
      params = json.load(f)
    self.assertEqual(params['algorithm'], 'sesemi')
    self.assertEqual(params['train_steps'], 6)
    self.assertEqual(params['num_classes'], 4)

    # The documented way to see TensorFlow's own logs.
    result = run_entry('eval', '--model_dir=' + model_dir, '--tta',
                       '--tune_images=60', env={'TF_CPP_MIN_LOG_LEVEL': '0'})
    self.assertSucceeded(result)
    self.assertRegex(result.stderr, r'[IWE] tensorflow/')
    for row in ('raw', 'ema', 'tuned_raw', 'tuned_ema', 'tta_ema'):
      self.assertIn(row, result.stdout)
    with open(os.path.join(model_dir, 'eval_results.json')) as f:
      table = json.load(f)
    self.assertEqual(table['step'], 6)
    self.assertEqual(table['counts'], {'labeled': 8, 'valid': 8, 'test': 16})
    for row in ('raw', 'ema', 'tuned_raw', 'tuned_ema'):
      for column in ('labeled', 'valid', 'test'):
        value = table['results'][row][column]
        self.assertBetween(value, 0., 100.)
        # Accuracy over 8 or 16 images is a multiple of 100/16.
        self.assertAllClose(value * 16 / 100., round(value * 16 / 100.))
    # Default tuning: libml's BN updates on the training stream (SESEMI's
    # labeled batch is 6 x batch_size = 6 images: 60 // 6 steps).
    self.assertEqual(table['tune'], {'mode': 'stream', 'steps': 10,
                                     'batch': 6, 'images': 60,
                                     'per_row': True})
    self.assertEqual(table['headline'],
                     {'row': 'ema', 'column': 'test',
                      'accuracy': table['results']['ema']['test']})
    self.assertIn('headline: test accuracy of the EMA model, untuned',
                  result.stdout)
    self.assertIn('--tune=stream', result.stdout)

    export_dir = os.path.join(work, 'export')
    result = run_entry('export', '--model_dir=' + model_dir,
                       '--export_dir=' + export_dir)
    self.assertSucceeded(result)
    self.assertIn('verified', result.stdout)
    self.assertTrue(os.path.exists(os.path.join(export_dir, 'saved_model.pb')))
    self.assertEmpty([n for n in os.listdir(work) if '.tmp-' in n])

    # The SavedModel serves the EMA weights: its test accuracy is eval's.
    source = sources.resolve(self.data_dir, self.split)
    images, labels = [], []
    for path in source.files['test']:
      for image, label, _ in records.read_examples(path):
        images.append(image)
        labels.append(label)
    predict = export_lib.load_saved_model(export_dir)
    by_pixels = predict('serving_default', np.stack(images))
    by_bytes = predict('predict_bytes', np.array(
        [records.encode_png(i) for i in images], dtype=object))
    self.assertAllClose(by_pixels['probabilities'],
                        by_bytes['probabilities'], atol=1e-6)
    accuracy = 100. * np.mean(by_pixels['classes'] == np.array(labels))
    self.assertAllClose(accuracy, table['results']['ema']['test'])

    # Exporting again needs --overwrite; the old export stays intact.
    result = run_entry('export', '--model_dir=' + model_dir,
                       '--export_dir=' + export_dir)
    self.assertOneLineError(result, '--overwrite')
    self.assertTrue(os.path.exists(os.path.join(export_dir, 'saved_model.pb')))

  def test_tf1_checkpoint_evaluates_exports_and_resumes(self):
    """A model directory written by TF 1.15 (tests/testdata/tf1_model_dir:
    supervised, tiny resnet, 4 steps on tiny.1@8-8) on this runtime."""
    model_dir = os.path.join(self.get_temp_dir(), 'tf1_run')
    shutil.copytree(os.path.join(ROOT, 'tests', 'testdata', 'tf1_model_dir'),
                    model_dir)
    data = '--data_dir=' + self.data_dir
    result = run_entry('eval', '--model_dir=' + model_dir, data, '--no_tune')
    self.assertSucceeded(result)
    self.assertIn('supervised at step 4', result.stdout)
    export_dir = os.path.join(self.get_temp_dir(), 'tf1_export')
    result = run_entry('export', '--model_dir=' + model_dir, data,
                       '--export_dir=' + export_dir)
    self.assertSucceeded(result)
    self.assertIn('verified', result.stdout)
    result = self.train(model_dir, '--algorithm=supervised', '--batch_size=4',
                        '--ema_decay=0.5', '--train_steps=6')
    self.assertSucceeded(result)
    self.assertIn('resuming from', result.stdout)
    self.assertIn('step 6/6', result.stdout)

  def _big_constants(self, graph_def, size):
    """Names of Const nodes (graph and functions) with a [size, size] value."""
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
      nodes += list(function.node_def)
    return [n.name for n in nodes if n.op == 'Const' and
            [d.size for d in n.attr['value'].tensor.tensor_shape.dim] ==
            [size, size]]

  def test_model_dir_exports_on_its_own_with_zca_and_onnx(self):
    """Normalisation (here GCN + ZCA) is stored in MODEL_DIR at train time:
    export works with the data directory gone; ZCA is read from files in
    training and is a variable in the SavedModel, never a graph constant.
    --onnx writes model.onnx on TF 2 and is one line (exit 2) on TF 1.15."""
    work = self.get_temp_dir()
    data_dir = os.path.join(work, 'zca_data')
    data_fixtures.prepare_tiny_dataset(data_dir, zca=True)
    split = data_fixtures.make_tiny_split(data_dir)
    model_dir = os.path.join(work, 'zca_run')
    result = run_entry('train', '--data_dir=' + data_dir, '--dataset=' + split,
                       '--model_dir=' + model_dir, '--algorithm=supervised',
                       '--batch_size=4', '--train_steps=2',
                       '--save_checkpoints_steps=2', '--normalization=gcn_zca',
                       *TINY_NET)
    self.assertSucceeded(result)
    dim = 8 * 8 * 3
    with open(os.path.join(model_dir, 'graph.pbtxt')) as f:
      graph_def = text_format.Parse(f.read(), tf.GraphDef())
    self.assertEmpty(self._big_constants(graph_def, dim))
    self.assertTrue(os.path.exists(os.path.join(model_dir, 'zca_matrix.f32')))

    shutil.rmtree(data_dir)
    export_dir = os.path.join(work, 'zca_export')
    args = ['--model_dir=' + model_dir, '--export_dir=' + export_dir]
    result = run_entry('export', '--onnx', *args)
    if not runtime.TF2:
      self.assertOneLineError(result, '--onnx needs the tf2 flavour')
      self.assertEqual(result.returncode, 2)
      self.assertFalse(os.path.exists(export_dir))
      result = run_entry('export', *args)
    self.assertSucceeded(result)
    self.assertIn('verified: SavedModel == Estimator', result.stdout)
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, 'saved_model.pb'), 'rb') as f:
      proto.ParseFromString(f.read())
    self.assertEmpty(self._big_constants(proto.meta_graphs[0].graph_def, dim))
    variables = [name for name, _ in tf.train.list_variables(
        os.path.join(export_dir, 'variables', 'variables'))]
    self.assertIn('normalization/zca_matrix', variables)
    if runtime.TF2:
      self.assertIn('verified: ONNX Runtime == SavedModel', result.stdout)
      onnx_path = os.path.join(export_dir, export_lib.ONNX_FILE)
      images = np.random.RandomState(0).randint(
          0, 256, (5, 8, 8, 3)).astype(np.uint8)
      expected = export_lib.load_saved_model(export_dir)(
          export_lib.SIGNATURE_PIXELS, images)['probabilities']
      got = export_lib.onnx_probabilities(onnx_path, images)
      self.assertAllClose(got, expected, atol=1e-5, rtol=0)

  def test_newer_savedmodel_is_one_line(self):
    """A SavedModel from a newer TensorFlow than this one: one clear line."""
    export_dir = os.path.join(self.get_temp_dir(), 'newer')
    os.makedirs(export_dir)
    proto = saved_model_pb2.SavedModel()
    proto.meta_graphs.add().meta_info_def.tensorflow_version = '%d.15.1' % (
        int(tf.__version__.split('.')[0]) + 1)
    with open(os.path.join(export_dir, 'saved_model.pb'), 'wb') as f:
      f.write(proto.SerializeToString())
    with self.assertRaisesRegex(DataError, 'written by TensorFlow .*does not '
                                'load in TensorFlow .*--flavor=tf2'):
      export_lib.load_saved_model(export_dir)

  def test_resume_and_params_mismatch(self):
    model_dir = os.path.join(self.get_temp_dir(), 'run')
    self.assertSucceeded(self.train(model_dir, '--algorithm=supervised',
                                    '--batch_size=4', '--train_steps=10'))
    result = self.train(model_dir, '--algorithm=supervised', '--batch_size=4',
                        '--train_steps=20')
    self.assertSucceeded(result)
    self.assertIn('resuming from', result.stdout)
    self.assertIn('(step 10)', result.stdout)
    checkpoint = tf.train.latest_checkpoint(model_dir)
    reader = tf.train.load_checkpoint(checkpoint)
    self.assertEqual(reader.get_tensor('global_step'), 20)
    with open(os.path.join(model_dir, 'params.json')) as f:
      self.assertEqual(json.load(f)['train_steps'], 20)

    result = self.train(model_dir, '--algorithm=supervised', '--batch_size=4',
                        '--train_steps=30', '--filters=8', '--lr=0.5')
    self.assertOneLineError(result, 'cannot resume', 'filters', 'lr')
    self.assertEqual(tf.train.load_checkpoint(
        tf.train.latest_checkpoint(model_dir)).get_tensor('global_step'), 20)

    # Both tuning modes run and are recorded; supervised stream tuning draws
    # labeled batches (4 images). Supervised keeps an EMA (libml's 0.999):
    # the headline is the EMA model's.
    for mode, record in (
        ('stream', {'mode': 'stream', 'steps': 5, 'batch': 4, 'images': 20,
                    'per_row': True}),
        ('exact', {'mode': 'exact', 'images': 20})):
      result = run_entry('eval', '--model_dir=' + model_dir,
                         '--tune=' + mode, '--tune_images=20')
      self.assertSucceeded(result)
      with open(os.path.join(model_dir, 'eval_results.json')) as f:
        table = json.load(f)
      self.assertEqual(table['tune'], record)
      self.assertEqual(table['headline']['row'], 'ema')
      self.assertEqual(table['headline']['accuracy'],
                       table['results']['ema']['test'])
      self.assertIn('tuned_raw', table['results'])
      self.assertIn('--tune=' + mode, result.stdout)
    result = run_entry('eval', '--model_dir=' + model_dir, '--tune=nope')
    self.assertEqual(result.returncode, 2, result.stderr)
    self.assertOneLineError(result, 'tune')

  def test_bad_flags_one_line_and_exit_2(self):
    model_dir = os.path.join(self.get_temp_dir(), 'run')
    cases = [
        (['--algorithm=nope'], 'unknown algorithm'),
        (['--network=nope'], 'unknown network'),
        (['--lr=-1'], '--lr'),
        (['--batch_size=0'], '--batch_size'),
    ]
    for extra, needle in cases:
      result = self.train(model_dir, '--train_steps=2', *extra)
      self.assertEqual(result.returncode, 2, result.stderr)
      self.assertOneLineError(result, needle)
    result = run_entry('train', '--dataset=' + self.split,
                       '--model_dir=' + model_dir)
    self.assertEqual(result.returncode, 2)
    self.assertOneLineError(result, '--data_dir')
    result = run_entry('train', '--data_dir=' + self.data_dir,
                       '--dataset=tiny.1@12-8', '--model_dir=' + model_dir)
    self.assertOneLineError(result, 'tiny.1@12-8')

  @unittest.skipIf(runtime.TF2, tests.NPU_STAND_IN_TF1_ONLY)
  def test_npu_path_runs_with_recording_bridge(self):
    model_dir = os.path.join(self.get_temp_dir(), 'run')
    result = self.train(model_dir, '--algorithm=supervised', '--batch_size=4',
                        '--train_steps=2', '--device=npu',
                        '--precision_mode=allow_mix_precision',
                        env={'PYTHONPATH': FAKE_NPU})
    self.assertSucceeded(result)
    self.assertIn('(npu)', result.stdout)
    result = self.train(model_dir, '--train_steps=2', '--device=npu')
    self.assertOneLineError(result, 'npu_bridge')


class FlagPrecedenceTest(tf.test.TestCase):

  def tearDown(self):
    flags.FLAGS.unparse_flags()
    super(FlagPrecedenceTest, self).tearDown()

  def resolve(self, argv):
    flags.FLAGS(params_lib.reorder_flagfiles(['train'] + argv))
    facts = {'num_classes': 10, 'image_shape': [32, 32, 3],
             'dataset': 'x', 'data_dir': '/d'}
    return params_lib.resolve(flags.FLAGS, facts)

  def test_defaults_then_flagfile_then_explicit(self):
    flagfile = os.path.join(self.get_temp_dir(), 'f.cfg')
    with open(flagfile, 'w') as f:
      f.write('# comment\n--algorithm=sesemi\n--lr=0.1\n--epochs=7\n')
    params = self.resolve(['--lr=0.3', '--flagfile=' + flagfile])
    self.assertEqual(params['algorithm'], 'sesemi')
    self.assertEqual(params['lr'], 0.3)          # explicit beats flagfile
    self.assertEqual(params['epochs'], 7)        # flagfile beats defaults
    self.assertEqual(params['optimizer'], 'sgd')  # SESEMI's default
    self.assertEqual(params['weight_decay_l2'], 5e-4)
    self.assertEqual(params['num_classes'], 10)
    flags.FLAGS.unparse_flags()
    params = self.resolve(['--flagfile=' + flagfile, '--base_lr=0.2'])
    self.assertEqual(params['lr'], 0.2)

  def scaled(self, argv, counts=None):
    """params after train.py's order: resolve, train_steps, scaling."""
    params = self.resolve(argv)
    params['train_steps'] = registry.default_train_steps(params, counts or {})
    return params_lib.scale_schedules(
        params, params_lib.explicit_keys(flags.FLAGS))

  def test_ramps_follow_the_run_length_unless_set(self):
    # MixMatch: 1024 kimg of a 1024-epoch (65536-kimg) run, i.e. 1/64.
    params = self.scaled(['--algorithm=mixmatch', '--train_steps=500'])
    run_kimg = 500 * 64 / 1024.
    self.assertAllClose(params['warmup_kimg'], run_kimg / 64)
    self.assertEqual(params['scaled_keys'], ['warmup_kimg'])
    # Reaches its full weight 1/64 of the way through (step 7.8 of 500).
    with tf.Graph().as_default():
      step = tf.placeholder(tf.int64, [])
      weight = ssl_common.unlabeled_weight(step, 64, 1., params['warmup_kimg'])
      with self.session() as sess:
        self.assertAllClose(sess.run(weight, {step: 4}), 4 / 7.8125)
        self.assertAllClose(sess.run(weight, {step: 8}), 1.)
    for run_steps in (2000, 100000):
      flags.FLAGS.unparse_flags()
      params = self.scaled(['--algorithm=mixmatch',
                            '--train_steps=%d' % run_steps])
      # Warm-up images = 1/64 of the run's labeled images.
      self.assertAllClose(params['warmup_kimg'] * 1024, run_steps * 64 / 64.)
    # The default length keeps the default; RealMix's reference run is 700
    # epochs with the same 1024-kimg warm-up.
    for algorithm in ('mixmatch', 'realmix'):
      flags.FLAGS.unparse_flags()
      params = self.scaled(['--algorithm=' + algorithm])
      self.assertAllClose(params['warmup_kimg'], 1024)
    flags.FLAGS.unparse_flags()
    params = self.scaled(['--algorithm=realmix', '--epochs=70'])
    self.assertAllClose(params['warmup_kimg'], 102.4)
    # Set on the command line or in a flagfile: kept as given.
    flags.FLAGS.unparse_flags()
    params = self.scaled(['--algorithm=mixmatch', '--train_steps=500',
                          '--warmup_kimg=16'])
    self.assertEqual(params['warmup_kimg'], 16)
    self.assertEqual(params['scaled_keys'], [])
    flagfile = os.path.join(self.get_temp_dir(), 'w.cfg')
    with open(flagfile, 'w') as f:
      f.write('--algorithm=realmix\n--warmup_kimg=8\n')
    flags.FLAGS.unparse_flags()
    params = self.scaled(['--flagfile=' + flagfile, '--train_steps=500'])
    self.assertEqual(params['warmup_kimg'], 8)
    # Algorithms whose ramps are fractions of training are left alone.
    flags.FLAGS.unparse_flags()
    params = self.scaled(['--algorithm=ict', '--train_steps=500'])
    self.assertEqual(params['warmup_pos'], 0.4)
    self.assertEqual(params['scaled_keys'], [])

  def test_resume_with_other_length_rescales_only_scaled_ramps(self):
    first = self.scaled(['--algorithm=mixmatch', '--train_steps=500'])
    flags.FLAGS.unparse_flags()
    longer = self.scaled(['--algorithm=mixmatch', '--train_steps=1000'])
    self.assertEqual(params_lib.graph_differences(first, longer), [])
    flags.FLAGS.unparse_flags()
    fixed = self.scaled(['--algorithm=mixmatch', '--train_steps=1000',
                         '--warmup_kimg=3'])
    self.assertEqual(params_lib.graph_differences(first, fixed),
                     ['warmup_kimg'])

  def test_every_flagfile_resolves_through_the_real_flags(self):
    config_dir = os.path.join(ROOT, 'launch', 'configs')
    names = sorted(n for n in os.listdir(config_dir) if n.endswith('.cfg'))
    self.assertGreaterEqual(len(names), 27)
    counts = {'labeled': 1000, 'unlabeled': 49000, 'valid': 0,
              'test': 10000, 'train': 50000}
    for name in names:
      flags.FLAGS.unparse_flags()
      with open(os.path.join(config_dir, name)) as f:
        text = f.read()
      flags.FLAGS(['train', '--flagfile=' + os.path.join(config_dir, name)])
      params = self.resolve_flags()
      self.assertIn('--flagfile=launch/configs/' + name, text, name)
      self.assertIn(flags.FLAGS.dataset, text, name)
      algorithm = registry.get(params['algorithm'])
      params['train_steps'] = registry.default_train_steps(params, counts)
      self.assertGreater(params['train_steps'], 0, name)
      needs = algorithm.input_needs(params)
      self.assertGreater(needs.batch_size, 0, name)

  def resolve_flags(self):
    facts = {'num_classes': 10, 'image_shape': [32, 32, 3],
             'dataset': 'x', 'data_dir': '/d'}
    return params_lib.resolve(flags.FLAGS, facts)

  def test_seed_flags_map_to_npu_config(self):
    sys.path.insert(0, FAKE_NPU)
    try:
      import npu_bridge  # pylint: disable=g-import-not-at-top
      model_dir = self.get_temp_dir()
      params = {'seed': 1}
      cases = [
          ({'precision_mode': 'allow_mix_precision'}, 'NPURunConfig',
           {'precision_mode': 'allow_mix_precision'}),
          ({'over_dump': True}, 'DumpConfig',
           {'enable_dump_debug': True, 'dump_debug_mode': 'all',
            'dump_path': os.path.join(model_dir, 'overflow')}),
          ({'data_dump_flag': True, 'data_dump_step': 7}, 'DumpConfig',
           {'enable_dump': True, 'dump_step': '7', 'dump_mode': 'all',
            'dump_path': os.path.join(model_dir, 'data_dump')}),
          ({'profiling': True}, 'ProfilingConfig', {'enable_profiling': True}),
          ({'iterations_per_loop': 5}, 'NPURunConfig',
           {'iterations_per_loop': 5, 'enable_data_pre_proc': True}),
      ]
      for opts, cls, expected in cases:
        del npu_bridge.RECORD[:]
        opts = dict(opts, device='npu', save_checkpoints_steps=10)
        estimator, device = devices.make_estimator(model_dir, params, opts)
        self.assertEqual(device, 'npu')
        self.assertEqual(type(estimator).__name__, 'NPUEstimator')
        recorded = dict(npu_bridge.RECORD)
        self.assertIn(cls, recorded)
        for key, value in expected.items():
          self.assertEqual(recorded[cls][key], value, (opts, key))
        run_config = recorded['NPURunConfig']
        self.assertEqual(run_config['model_dir'], model_dir)
        self.assertEqual(run_config['save_checkpoints_steps'], 10)
        if cls == 'ProfilingConfig':
          options = json.loads(recorded[cls]['profiling_options'])
          self.assertEqual(options['output'],
                           os.path.join(model_dir, 'profiling'))
          self.assertIs(run_config['profiling_config'].enable_profiling, True)
        if cls == 'DumpConfig':
          self.assertIsNotNone(run_config['dump_config'])
      del npu_bridge.RECORD[:]
      devices.make_estimator(model_dir, params, {'device': 'cpu'})
      self.assertEmpty(npu_bridge.RECORD)
    finally:
      sys.path.remove(FAKE_NPU)
      for name in [m for m in sys.modules if m.startswith('npu_bridge')]:
        del sys.modules[name]


if __name__ == '__main__':
  tf.test.main()
