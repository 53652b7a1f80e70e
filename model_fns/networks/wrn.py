"""SESEMI's wide residual network WRN-28-2 with max pooling.

Follows vuptran/sesemi networks/wrn.py (depth 28, widening factor 2):

    conv3x3-16 -> BN -> ReLU
    stage 1: widen(32)                 -> 3 x block(32) -> BN -> ReLU
    stage 2: widen(64)  -> maxpool 2   -> 3 x block(64) -> BN -> ReLU
    stage 3: widen(128) -> maxpool 2   -> 3 x block(128) -> BN -> ReLU
    global average pool

    widen(w)(x) = conv3x3-w(ReLU(BN(conv3x3-w(x)))) + conv1x1-w(x)
    block(w)(x) = x + conv3x3-w(ReLU(BN([dropout] conv3x3-w(ReLU(BN(x))))))

Convs have no bias and he-normal (fan-in) kernels; activations are ReLU
(SESEMI's WRN has leakiness 0, so `params['leaky_relu']` is not used).
`params['net_dropout']` is applied between the two convs of every identity
block, where SESEMI's WRN puts its dropout. The embedding has 128 channels.
Images need at least 4 pixels a side.
"""

import tensorflow.compat.v1 as tf

from model_fns.networks import layers

NAME = 'wrn'
_BLOCKS_PER_STAGE = 3
_WIDTHS = (32, 64, 128)


def build(images, training, params):
  """Returns the [B, 128] embedding of `images` (see the module docstring).

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
