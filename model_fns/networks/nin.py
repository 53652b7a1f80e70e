"""SESEMI's max-pooling Network-in-Network (vuptran/sesemi networks/nin.py).

Layers: docs/architecture.md.
"""

import tensorflow.compat.v1 as tf

from model_fns.networks import layers

NAME = 'nin'


def build(images, training, params):
  """Returns the [B, 192] embedding of `images` (docs/architecture.md).

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

  def conv_bn_relu(x, filters, kernel_size, name, pad=0):
    if pad:
      x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    x = layers.conv2d(x, filters, kernel_size, name=name, padding='valid')
    x = layers.batch_norm(x, training, momentum, name=name + '_bn')
    return tf.nn.relu(x)

  with tf.variable_scope(NAME):
    y = conv_bn_relu(images, 192, 5, 'conv1_1', pad=2)
    y = conv_bn_relu(y, 160, 1, 'conv1_2')
    y = conv_bn_relu(y, 96, 1, 'conv1_3')
    y = layers.max_pool(y, 'pool1')
    y = layers.dropout(y, rate, training, 'dropout1')
    y = conv_bn_relu(y, 192, 5, 'conv2_1', pad=2)
    y = conv_bn_relu(y, 192, 1, 'conv2_2')
    y = conv_bn_relu(y, 192, 1, 'conv2_3')
    y = layers.max_pool(y, 'pool2')
    y = layers.dropout(y, rate, training, 'dropout2')
    y = conv_bn_relu(y, 192, 3, 'conv3_1', pad=1)
    y = conv_bn_relu(y, 192, 1, 'conv3_2')
    y = conv_bn_relu(y, 192, 1, 'conv3_3')
    return layers.global_average_pool(y)
