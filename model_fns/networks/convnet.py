"""SESEMI's 13-layer max-pooling ConvNet (vuptran/sesemi networks/convnet.py).

Layers: docs/architecture.md.
"""

import tensorflow.compat.v1 as tf

from model_fns.networks import layers

NAME = 'convnet'


def build(images, training, params):
  """Returns the [B, 128] embedding of `images` (docs/architecture.md).

  Args:
    images: float32 [B, H, W, C], normalised.
    training: Python bool; batch statistics, BN updates and dropout.
    params: dict with `bn_momentum`, `leaky_relu`, `net_dropout`.
  """
  height, width, _ = layers.check_inputs(images, training, NAME)
  momentum = params['bn_momentum']
  alpha = params['leaky_relu']
  rate = params['net_dropout']

  def conv_bn_act(x, filters, kernel_size, name, padding='same'):
    x = layers.conv2d(x, filters, kernel_size, name=name, padding=padding)
    x = layers.batch_norm(x, training, momentum, name=name + '_bn')
    return layers.leaky_relu(x, alpha)

  with tf.variable_scope(NAME):
    y = images
    for i in range(3):
      y = conv_bn_act(y, 128, 3, 'conv1_%d' % (i + 1))
    y = layers.max_pool(y, 'pool1')
    y = layers.dropout(y, rate, training, 'dropout1')
    for i in range(3):
      y = conv_bn_act(y, 256, 3, 'conv2_%d' % (i + 1))
    y = layers.max_pool(y, 'pool2')
    y = layers.dropout(y, rate, training, 'dropout2')
    padding = 'valid' if min(height // 4, width // 4) >= 3 else 'same'
    y = conv_bn_act(y, 512, 3, 'conv3_1', padding=padding)
    y = conv_bn_act(y, 256, 1, 'conv3_2')
    y = conv_bn_act(y, 128, 1, 'conv3_3')
    return layers.global_average_pool(y)
