r"""The machine's reference rate: a bare WRN-28-2 training step, no product code.

  python benchmarks/bare_step.py [--batch_size=64] [--steps=5] [--warmup=3] [--xla]

What it measures and why: docs/benchmarks.md.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from runner import cli

FLAGS = flags.FLAGS
flags.DEFINE_integer('batch_size', 64, 'Images a step.')
flags.DEFINE_integer('steps', 5, 'Timed steps.')
flags.DEFINE_integer('warmup', 3, 'Untimed steps first.')
flags.DEFINE_bool('xla', False, 'XLA JIT (global_jit_level ON_1).')
flags.DEFINE_integer('filters', 32, 'Width of the first stage.')


def wrn_train_op(images, labels, filters):
  """WRN-28-2-shaped network, loss and Adam step on `images`."""

  def bn_act(x):
    x = tf.layers.batch_normalization(x, training=True, fused=True,
                                      momentum=0.999)
    return tf.nn.leaky_relu(x, 0.1)

  def conv(x, width, stride=1, kernel=3):
    return tf.layers.conv2d(x, width, kernel, stride, padding='same')

  x = conv(images, 16)
  for scale in range(3):
    width = filters << scale
    for block in range(4):
      stride = 2 if block == 0 and scale else 1
      a = bn_act(x)
      shortcut = x if x.shape[-1] == width and stride == 1 else conv(
          a, width, stride, 1)
      x = shortcut + conv(bn_act(conv(a, width, stride)), width)
  logits = tf.layers.dense(tf.reduce_mean(bn_act(x), [1, 2]), 10)
  loss = tf.losses.sparse_softmax_cross_entropy(labels, logits)
  with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
    return tf.train.AdamOptimizer(0.002).minimize(loss)


def main(argv):
  del argv
  if min(FLAGS.batch_size, FLAGS.steps, FLAGS.warmup, FLAGS.filters) < 1:
    raise cli.UsageError('--batch_size, --steps, --warmup and --filters must '
                         'be at least 1')
  rng = np.random.RandomState(0)
  with tf.Graph().as_default():
    images = tf.constant(rng.rand(FLAGS.batch_size, 32, 32, 3)
                         .astype(np.float32))
    labels = tf.constant(rng.randint(0, 10, FLAGS.batch_size))
    train_op = wrn_train_op(images, labels, FLAGS.filters)
    config = tf.ConfigProto()
    if FLAGS.xla:
      config.graph_options.optimizer_options.global_jit_level = (
          tf.OptimizerOptions.ON_1)
    with tf.Session(config=config) as sess:
      sess.run(tf.global_variables_initializer())
      for _ in range(FLAGS.warmup):
        sess.run(train_op)
      start = time.time()
      for _ in range(FLAGS.steps):
        sess.run(train_op)
      seconds = (time.time() - start) / FLAGS.steps
  result = {'benchmark': 'bare_step', 'tensorflow': tf.__version__,
            'batch_size': FLAGS.batch_size, 'filters': FLAGS.filters,
            'xla': FLAGS.xla, 's_per_step': round(seconds, 6),
            'img_s': round(FLAGS.batch_size / seconds, 2)}
  print('bare WRN-28-2 step, TensorFlow %s%s, batch %d: %.3f s/step, '
        '%.1f img/s' % (tf.__version__, ' + XLA' if FLAGS.xla else '',
                        FLAGS.batch_size, seconds, result['img_s']))
  print(json.dumps(result, sort_keys=True))


if __name__ == '__main__':
  cli.run(main)
