"""input_pipeline/runtime.py: what differs between TF 1.15 and TF 2.15."""

import tensorflow.compat.v1 as tf

from input_pipeline import runtime

runtime.graph_mode()


class _FakeOpError(Exception):

  def __init__(self, message):
    super().__init__(message)
    self.message = message


class RuntimeTest(tf.test.TestCase):

  def test_version_facts(self):
    self.assertEqual(runtime.VERSION, tf.__version__)
    self.assertEqual(runtime.TF2, int(tf.__version__.split('.')[0]) >= 2)
    self.assertIsInstance(runtime.onednn_enabled(), bool)

  def test_graph_mode_is_on(self):
    self.assertFalse(tf.executing_eagerly())

  def test_dim_gives_ints_and_none(self):
    with tf.Graph().as_default():
      x = tf.placeholder(tf.float32, [None, 3])
      self.assertIsNone(runtime.dim(x.shape[0]))
      self.assertEqual(runtime.dim(x.shape[-1]), 3)
      self.assertIsInstance(runtime.dim(x.shape[-1]), int)

  def test_error_line_of_tf1_messages_is_the_first_line(self):
    message = ('corrupted record at 0\n\t [[node IteratorGetNext (defined at '
               'ops.py:1748) ]]')
    self.assertEqual(runtime.error_line(_FakeOpError(message)),
                     'corrupted record at 0')

  def test_error_line_of_tf2_messages_is_the_cause(self):
    message = ('Graph execution error:\n\nDetected at node \'IteratorGetNext\''
               ' defined at (most recent call last):\n    File "x.py", line 6,'
               ' in <module>\nNode: \'IteratorGetNext\'\ncorrupted record at 0'
               '\n\t [[{{node IteratorGetNext}}]]')
    self.assertEqual(runtime.error_line(_FakeOpError(message)),
                     'corrupted record at 0')

  def test_error_line_of_a_real_error_names_the_cause(self):
    with tf.Graph().as_default():
      x = tf.placeholder(tf.float32, [2])
      y = tf.debugging.check_numerics(x, 'bad loss')
      with self.session() as sess:
        with self.assertRaises(tf.errors.InvalidArgumentError) as caught:
          sess.run(y, {x: [float('nan'), 1.]})
    self.assertEqual(runtime.error_line(caught.exception),
                     'bad loss : Tensor had NaN values')

  def test_dense_initializer_follows_the_graph_seed(self):
    def kernel(seed):
      with tf.Graph().as_default():
        tf.set_random_seed(seed)
        tf.layers.dense(tf.zeros([1, 4]), 3, name='d',
                        kernel_initializer=runtime.dense_initializer())
        with self.session() as sess:
          sess.run(tf.global_variables_initializer())
          return sess.run(tf.global_variables('d/kernel')[0])
    self.assertAllEqual(kernel(1), kernel(1))
    self.assertNotAllClose(kernel(1), kernel(2))

  def test_tfds_gcs_switch_is_restored(self):
    from tensorflow_datasets.core.utils import gcs_utils  # pylint: disable=g-import-not-at-top
    name = ('is_gcs_disabled' if hasattr(gcs_utils, 'is_gcs_disabled')
            else '_is_gcs_disabled')
    before = getattr(gcs_utils, name)
    token = runtime.disable_tfds_gcs()
    disabled = getattr(gcs_utils, name)
    self.assertTrue(disabled() if callable(disabled) else disabled)
    runtime.restore_tfds_gcs(token)
    self.assertIs(getattr(gcs_utils, name), before)


if __name__ == '__main__':
  tf.test.main()
