"""libml's pre-activation ResNet (google-research/mixmatch libml/models.py).

Layers: docs/architecture.md.
"""

import math

import tensorflow.compat.v1 as tf

from input_pipeline import runtime
from model_fns.networks import layers

NAME = 'resnet'


def num_scales(params, width):
  """The number of stages for images `width` pixels wide."""
  if params['scales']:
    return params['scales']
  return max(1, int(math.ceil(math.log2(width))) - 2)


def build(images, training, params):
  """Returns the [B, filters * 2^(scales-1)] embedding of `images`.

  Args:
    images: float32 [B, H, W, C], normalised.
    training: Python bool; batch statistics and BN updates.
    params: dict with `bn_momentum`, `leaky_relu`, `filters`, `repeat`,
      `scales`.

  Raises:
    ValueError: `filters` or `repeat` below 1 or `scales` below 0.
  """
  _, width, _ = layers.check_inputs(images, training, NAME)
  for key, low in (('filters', 1), ('repeat', 1), ('scales', 0)):
    if not isinstance(params[key], int) or params[key] < low:
      raise ValueError('network resnet: %s must be an integer >= %d, got %r'
                       % (key, low, params[key]))
  momentum = params['bn_momentum']
  alpha = params['leaky_relu']
  init = layers.he_normal_fan_out()

  def bn_act(x, name):
    return layers.leaky_relu(
        layers.batch_norm(x, training, momentum, name=name), alpha)

  def conv(x, filters, kernel_size, name, strides=1):
    return layers.conv2d(x, filters, kernel_size, name=name, strides=strides,
                         kernel_initializer=init)

  def residual(x0, filters, strides, activate_before_residual, name):
    with tf.variable_scope(name):
      x = bn_act(x0, 'bn1')
      if activate_before_residual:
        x0 = x
      y = conv(x, filters, 3, 'conv1', strides=strides)
      y = conv(bn_act(y, 'bn2'), filters, 3, 'conv2')
      if runtime.dim(x0.shape[-1]) != filters or strides != 1:
        x0 = conv(x0, filters, 1, 'shortcut', strides=strides)
      return x0 + y

  with tf.variable_scope(NAME):
    y = conv(images, 16, 3, 'conv0')
    for scale in range(num_scales(params, width)):
      filters = params['filters'] << scale
      for i in range(params['repeat']):
        first = i == 0
        y = residual(y, filters,
                     strides=2 if first and scale else 1,
                     activate_before_residual=first and scale == 0,
                     name='stage%d_block%d' % (scale + 1, i + 1))
    y = bn_act(y, 'bn_final')
    return layers.global_average_pool(y)
