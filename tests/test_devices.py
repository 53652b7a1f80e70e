"""runner/devices.session_config: thread settings per TensorFlow build."""

import os
from unittest import mock

import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from input_pipeline import runtime
from runner import devices


class SessionConfigTest(tf.test.TestCase):

  def test_zero_is_tensorflows_choice_on_a_stock_build(self):
    with mock.patch.object(devices, 'mkl_enabled', return_value=False):
      config = devices.session_config({})
    self.assertEqual(config.inter_op_parallelism_threads, 0)
    self.assertEqual(config.intra_op_parallelism_threads, 0)
    self.assertTrue(config.allow_soft_placement)

  def test_mkl_build_runs_one_op_at_a_time_unless_told(self):
    with mock.patch.object(devices, 'mkl_enabled', return_value=True):
      default = devices.session_config({'inter_op_threads': 0})
      explicit = devices.session_config({'inter_op_threads': 3,
                                         'intra_op_threads': 2})
    self.assertEqual(default.inter_op_parallelism_threads, 1)
    self.assertEqual(default.intra_op_parallelism_threads, os.cpu_count())
    self.assertEqual(explicit.inter_op_parallelism_threads, 3)
    self.assertEqual(explicit.intra_op_parallelism_threads, 2)

  def test_mkl_detection_matches_this_build(self):
    from tensorflow.python.framework import test_util  # pylint: disable=g-import-not-at-top
    self.assertEqual(devices.mkl_enabled(), bool(test_util.IsMklEnabled()))
    if runtime.TF2:  # TF 2.x on x86 runs oneDNN unless told not to.
      self.assertEqual(devices.mkl_enabled(),
                       os.environ.get('TF_ENABLE_ONEDNN_OPTS') != '0')

  def test_xla_sets_the_jit_level(self):
    config = devices.session_config({'xla': True})
    self.assertEqual(config.graph_options.optimizer_options.global_jit_level,
                     tf.OptimizerOptions.ON_1)



class MixedPrecisionTest(tf.test.TestCase):
  """--precision_mode=allow_mix_precision off the NPU."""

  OPTS = {'precision_mode': 'allow_mix_precision', 'device': 'auto'}

  def test_gpu_gets_the_automatic_mixed_precision_rewrite(self):
    with mock.patch.object(runtime, 'gpu_available', return_value=True):
      config = devices.session_config(self.OPTS)
      note = devices.precision_note(self.OPTS, 'cpu')
    self.assertEqual(config.graph_options.rewrite_options.auto_mixed_precision,
                     rewriter_config_pb2.RewriterConfig.ON)
    self.assertIsNone(note)
    # The rewrite reaches every session of the run (RunConfig).
    args = devices.run_config_args('/tmp/m', {'seed': 1}, self.OPTS,
                                   session=config)
    self.assertEqual(args['session_config'].graph_options.rewrite_options
                     .auto_mixed_precision,
                     rewriter_config_pb2.RewriterConfig.ON)

  def test_cpu_is_unchanged_and_says_so_in_one_line(self):
    with mock.patch.object(runtime, 'gpu_available', return_value=False):
      config = devices.session_config(self.OPTS)
      note = devices.precision_note(self.OPTS, 'cpu')
    self.assertEqual(config.graph_options.rewrite_options.auto_mixed_precision,
                     rewriter_config_pb2.RewriterConfig.DEFAULT)
    self.assertRegex(note, r'^note: --precision_mode=allow_mix_precision has '
                     r'no effect on CPU')
    self.assertNotIn('\n', note)

  def test_npu_and_no_flag_are_untouched(self):
    with mock.patch.object(runtime, 'gpu_available', return_value=True):
      npu = devices.session_config(dict(self.OPTS, device='npu'))
      plain = devices.session_config({})
    for config in (npu, plain):
      self.assertEqual(
          config.graph_options.rewrite_options.auto_mixed_precision,
          rewriter_config_pb2.RewriterConfig.DEFAULT)
    self.assertIsNone(devices.precision_note(self.OPTS, 'npu'))
    self.assertIsNone(devices.precision_note({}, 'cpu'))

  def test_mixed_precision_graph_really_runs_float16_on_gpu(self):
    if not runtime.gpu_available():
      self.skipTest('no GPU here: the rewrite only acts on GPU kernels')
    with tf.Graph().as_default():
      x = tf.random.normal([64, 64])
      y = tf.matmul(x, x)
      with tf.Session(config=devices.session_config(self.OPTS)) as sess:
        run_metadata = tf.RunMetadata()
        sess.run(y, options=tf.RunOptions(
            trace_level=tf.RunOptions.FULL_TRACE), run_metadata=run_metadata)
    graphs = ''.join(str(g) for g in run_metadata.partition_graphs)
    self.assertIn('DT_HALF', graphs)


if __name__ == '__main__':
  tf.test.main()
