"""Building blocks shared by the backbones: batch norm, activations, convs.

Variable sharing and the recorded batch-norm moments: docs/architecture.md.
"""

import collections

import tensorflow.compat.v1 as tf

from input_pipeline import runtime

BN_MOMENTS = 'bn_moments'

BatchMoments = collections.namedtuple(
    'BatchMoments',
    ['moving_mean', 'moving_variance', 'batch_mean', 'batch_variance'])


def get_moments(graph=None):
  """The BatchMoments of every training-mode batch_norm call, in call order."""
  graph = graph or tf.get_default_graph()
  columns = [graph.get_collection('%s/%s' % (BN_MOMENTS, field))
             for field in BatchMoments._fields]
  return [BatchMoments(*values) for values in zip(*columns)]


def check_inputs(images, training, network, min_size=1):
  """Checks what every backbone assumes of its arguments.

  Args:
    images: the batch handed to a network's `build`.
    training: the mode flag handed to `build`.
    network: the network's name, for the message.
    min_size: smallest height and width the network accepts.

  Returns:
    (height, width, channels) of `images` as Python ints.

  Raises:
    ValueError: `images` is not a 4-D float32 tensor with static H, W, C,
      or is smaller than min_size.
    TypeError: `training` is not a Python bool.
  """
  if not isinstance(training, bool):
    raise TypeError('network %s: training must be a Python bool, got %r'
                    % (network, training))
  shape = images.shape
  if (images.dtype != tf.float32 or shape.ndims != 4 or
      None in shape.as_list()[1:]):
    raise ValueError('network %s: images must be float32 [B,H,W,C] with '
                     'static H, W, C, got %s %s'
                     % (network, images.dtype.name, shape))
  height, width, channels = shape.as_list()[1:]
  if min(height, width) < min_size:
    raise ValueError('network %s: images must be at least %dx%d, got %dx%d'
                     % (network, min_size, min_size, height, width))
  return height, width, channels


def he_normal():
  """He-normal initializer over fan-in (Keras `he_normal`, SESEMI's nets)."""
  return tf.initializers.variance_scaling(
      scale=2.0, mode='fan_in', distribution='truncated_normal')


def he_normal_fan_out():
  """libml's conv initializer: N(0, 2 / (k * k * filters_out)), untruncated."""
  return tf.initializers.variance_scaling(
      scale=2.0, mode='fan_out', distribution='untruncated_normal')


def warmed_momentum(momentum):
  """`momentum`, warmed up like the EMA: `min(momentum, (1 + n) / (10 + n))`.

  n is the global step, when the graph has one. Without the warm-up the
  moving statistics keep `momentum ** n` of their initial 0 and 1: at 0.999,
  22 % after 1,500 steps, which is what an evaluation of a short run reads.
  Graphs without a global step (unit tests of layers) keep `momentum`.
  """
  step = tf.train.get_global_step()
  if step is None:
    return momentum
  n = tf.cast(step, tf.float32)
  return tf.minimum(float(momentum), (1. + n) / (10. + n))


def batch_norm(x, training, momentum, epsilon=1e-3, name='bn', center=True,
               scale=True):
  """Batch normalisation over the last axis of a 2-D or 4-D (NHWC) tensor.

  Variables (under variable scope `name`): `gamma` and `beta` (trainable,
  created only when `scale` / `center`), `moving_mean` and `moving_variance`
  (non-trainable, in GLOBAL_VARIABLES and MOVING_AVERAGE_VARIABLES; averaged
  across replicas on read under a distribution strategy).

  Training mode normalises with the batch mean and the biased batch variance,
  adds to UPDATE_OPS the assignments
  `moving <- m * moving + (1 - m) * batch` with `m = warmed_momentum(momentum)`,
  and adds a
  `BatchMoments` to the `BN_MOMENTS` collection. The variance fed to the
  moving average (and recorded as `batch_variance`) is the unbiased one,
  `n / (n - 1)` times the biased variance over the n values per channel, as
  TensorFlow's fused batch norm (and so tf.layers / Keras batch norm, which
  the reference implementations use) does. Inference mode normalises with the
  moving statistics and adds nothing to any collection.

  Args:
    x: float32 tensor [B, D] or [B, H, W, C] with a static last dimension.
    training: Python bool.
    momentum: moving-average momentum in [0, 1].
    epsilon: added to the variance before the square root.
    name: variable scope of the layer's variables.
    center: learn an offset `beta`.
    scale: learn a scale `gamma`.

  Returns:
    The normalised tensor, same shape as `x`.

  Raises:
    ValueError: `x` is not 2-D or 4-D or its channel count is unknown.
  """
  rank = x.shape.ndims
  channels = runtime.dim(x.shape[-1]) if rank else None
  if rank not in (2, 4) or channels is None:
    raise ValueError('batch_norm %s: needs a 2-D or 4-D input with a known '
                     'channel count, got shape %s' % (name, x.shape))
  with tf.variable_scope(name):
    ones, zeros = tf.ones_initializer(), tf.zeros_initializer()
    gamma = (tf.get_variable('gamma', [channels], initializer=ones)
             if scale else tf.ones([channels]))
    beta = (tf.get_variable('beta', [channels], initializer=zeros)
            if center else tf.zeros([channels]))
    stat_args = dict(
        trainable=False,
        collections=[tf.GraphKeys.GLOBAL_VARIABLES,
                     tf.GraphKeys.MOVING_AVERAGE_VARIABLES],
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.MEAN)
    moving_mean = tf.get_variable(
        'moving_mean', [channels], initializer=zeros, **stat_args)
    moving_variance = tf.get_variable(
        'moving_variance', [channels], initializer=ones, **stat_args)

    if not training:
      if rank == 4:
        y, _, _ = tf.nn.fused_batch_norm(
            x, gamma, beta, mean=moving_mean, variance=moving_variance,
            epsilon=epsilon, is_training=False)
        return y
      return tf.nn.batch_normalization(
          x, moving_mean, moving_variance, beta, gamma, epsilon)

    if rank == 4:
      # The fused op returns the unbiased variance for the moving average.
      y, batch_mean, batch_variance = tf.nn.fused_batch_norm(
          x, gamma, beta, epsilon=epsilon, is_training=True)
    else:
      batch_mean, biased_variance = tf.nn.moments(x, axes=[0])
      y = tf.nn.batch_normalization(
          x, batch_mean, biased_variance, beta, gamma, epsilon)
      n = tf.cast(tf.shape(x)[0], tf.float32)
      batch_variance = biased_variance * n / tf.maximum(n - 1., 1.)

    decay = 1. - warmed_momentum(momentum)
    update_mean = tf.assign_sub(
        moving_mean, (moving_mean - batch_mean) * decay, name='update_mean')
    update_variance = tf.assign_sub(
        moving_variance, (moving_variance - batch_variance) * decay,
        name='update_variance')
    tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, update_mean)
    tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, update_variance)
    moments = BatchMoments(moving_mean, moving_variance, batch_mean,
                           batch_variance)
    for field, value in zip(BatchMoments._fields, moments):
      tf.add_to_collection('%s/%s' % (BN_MOMENTS, field), value)
    return y


def leaky_relu(x, alpha):
  """max(x, alpha * x); plain ReLU when alpha is 0."""
  if alpha == 0:
    return tf.nn.relu(x)
  return tf.nn.leaky_relu(x, alpha=alpha)


def conv2d(x, filters, kernel_size, name, strides=1, padding='same',
           use_bias=True, kernel_initializer=None):
  """2-D convolution (`tf.compat.v1.layers.conv2d`) with an explicit name.

  Args:
    x: [B, H, W, C] input.
    filters: output channels.
    kernel_size: square kernel side.
    name: layer name; the variables are `<name>/kernel` and `<name>/bias`.
    strides: square stride.
    padding: 'same' or 'valid'.
    use_bias: add a bias.
    kernel_initializer: defaults to `he_normal()`.

  Returns:
    [B, H', W', filters] output.
  """
  return tf.layers.conv2d(
      x, filters, kernel_size, strides=strides, padding=padding,
      use_bias=use_bias,
      kernel_initializer=kernel_initializer or he_normal(), name=name)


def max_pool(x, name):
  """2x2 max pooling with stride 2 and 'valid' padding (odd sizes floor)."""
  return tf.layers.max_pooling2d(x, 2, 2, padding='valid', name=name)


def dropout(x, rate, training, name):
  """Dropout at `rate` in training; the identity (no op) otherwise."""
  if not training or rate <= 0:
    return x
  return tf.layers.dropout(x, rate=rate, training=True, name=name)


def global_average_pool(x):
  """Mean over the spatial axes of [B, H, W, C]: returns [B, C]."""
  return tf.reduce_mean(x, axis=[1, 2])
