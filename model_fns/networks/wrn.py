"""SESEMI's wide residual network WRN-28-2 with max pooling (vuptran/sesemi
networks/wrn.py).

Layers: docs/architecture.md.
"""

import tensorflow.compat.v1 as tf

from model_fns.networks import layers

NAME = 'wrn'
_BLOCKS_PER_STAGE = 3
_WIDTHS = (32, 64, 128)


def build(images, training, params):
  """Returns the [B, 128] embedding of `images` (docs/architecture.md).

  Args:
    images: float32 [B, H, W, C], normalised.
    training: Python bool; batch statistics, BN updates and dropout.
    params: dict with `bn_momentum`, `net_dropout`.

  Raises:
    ValueError: the images are smaller than 4x4.
  """
  layers.check_inputs(images, training, NAME, min_size=4)
  momentum = params['bn_momentum']
  rate = params['net_dropout']

  def conv(x, filters, kernel_size, name):
    return layers.conv2d(x, filters, kernel_size, name=name, use_bias=False)

  def bn_relu(x, name):
    return tf.nn.relu(layers.batch_norm(x, training, momentum, name=name))

  def widen(x, filters, name):
    with tf.variable_scope(name):
      y = bn_relu(conv(x, filters, 3, 'conv1'), 'bn1')
      y = conv(y, filters, 3, 'conv2')
      return y + conv(x, filters, 1, 'shortcut')

  def block(x, filters, name):
    with tf.variable_scope(name):
      y = conv(bn_relu(x, 'bn1'), filters, 3, 'conv1')
      y = layers.dropout(y, rate, training, 'dropout')
      y = conv(bn_relu(y, 'bn2'), filters, 3, 'conv2')
      return x + y

  with tf.variable_scope(NAME):
    y = bn_relu(conv(images, 16, 3, 'conv0'), 'bn0')
    for stage, filters in enumerate(_WIDTHS):
      prefix = 'stage%d' % (stage + 1)
      y = widen(y, filters, prefix + '_widen')
      if stage:
        y = layers.max_pool(y, prefix + '_pool')
      for i in range(_BLOCKS_PER_STAGE):
        y = block(y, filters, '%s_block%d' % (prefix, i + 1))
      y = bn_relu(y, prefix + '_bn')
    return layers.global_average_pool(y)
