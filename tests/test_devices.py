"""launch/devices.session_config: thread settings per TensorFlow build."""

import os
from unittest import mock

import tensorflow.compat.v1 as tf

from launch import devices


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

  def test_xla_sets_the_jit_level(self):
    config = devices.session_config({'xla': True})
    self.assertEqual(config.graph_options.optimizer_options.global_jit_level,
                     tf.OptimizerOptions.ON_1)


if __name__ == '__main__':
  tf.test.main()
