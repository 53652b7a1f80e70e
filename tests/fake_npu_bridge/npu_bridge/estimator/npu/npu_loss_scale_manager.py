"""Stand-in for npu_bridge.estimator.npu.npu_loss_scale_manager.

CANN's classes extend tf.contrib.mixed_precision's managers; these implement
the same state (`loss_scale`, good and bad step counters) and update rule
without tf.contrib.
"""

import numbers

import tensorflow.compat.v1 as tf

import npu_bridge


def _check_number(name, value, minimum):
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError('%s must be a number, got %r' % (name, value))
  if value < minimum:
    raise ValueError('%s must be at least %s, got %r' % (name, minimum, value))


def _check_int(name, value):
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError('%s must be an int, got %r' % (name, value))
  if value < 1:
    raise ValueError('%s must be positive, got %r' % (name, value))


def _variable(name, value, dtype):
  return tf.get_variable(name, initializer=tf.constant(value, dtype),
                         trainable=False, use_resource=False)


class FixedLossScaleManager(object):
  """A constant loss scale; overflowing steps are skipped if checked."""

  def __init__(self, loss_scale, enable_overflow_check=True):
    _check_number('loss_scale', loss_scale, 1)
    if not isinstance(enable_overflow_check, bool):
      raise TypeError('enable_overflow_check must be a bool')
    npu_bridge.record('FixedLossScaleManager', dict(
        loss_scale=loss_scale, enable_overflow_check=enable_overflow_check))
    self._loss_scale = tf.convert_to_tensor(loss_scale, tf.float32,
                                            name='loss_scale')
    self._enable_overflow_check = enable_overflow_check

  def get_enable_overflow_check(self):
    return self._enable_overflow_check

  def get_loss_scale(self):
    return self._loss_scale

  def update_loss_scale(self, finite_grads):
    del finite_grads
    return tf.no_op()


class ExponentialUpdateLossScaleManager(object):
  """Scale x incr_ratio after incr_every_n_steps finite steps in a row;
  x decr_ratio (not below 1) after decr_every_n_nan_or_inf overflowing
  steps; each change resets both counters."""

  def __init__(self, init_loss_scale, incr_every_n_steps,
               decr_every_n_nan_or_inf=2, incr_ratio=2, decr_ratio=0.8):
    _check_number('init_loss_scale', init_loss_scale, 1)
    _check_int('incr_every_n_steps', incr_every_n_steps)
    _check_int('decr_every_n_nan_or_inf', decr_every_n_nan_or_inf)
    _check_number('incr_ratio', incr_ratio, 1)
    _check_number('decr_ratio', decr_ratio, 0)
    if decr_ratio > 1:
      raise ValueError('decr_ratio must be at most 1, got %r' % decr_ratio)
    npu_bridge.record('ExponentialUpdateLossScaleManager', dict(
        init_loss_scale=init_loss_scale,
        incr_every_n_steps=incr_every_n_steps,
        decr_every_n_nan_or_inf=decr_every_n_nan_or_inf,
        incr_ratio=incr_ratio, decr_ratio=decr_ratio))
    self._incr_every_n_steps = incr_every_n_steps
    self._decr_every_n_nan_or_inf = decr_every_n_nan_or_inf
    self._incr_ratio = float(incr_ratio)
    self._decr_ratio = float(decr_ratio)
    self._loss_scale = _variable('loss_scale', float(init_loss_scale),
                                 tf.float32)
    self._num_good_steps = _variable('good_steps', 0, tf.int32)
    self._num_bad_steps = _variable('bad_steps', 0, tf.int32)

  def get_loss_scale(self):
    return self._loss_scale

  def _reset_stats(self):
    return tf.group(tf.assign(self._num_good_steps, 0),
                    tf.assign(self._num_bad_steps, 0))

  def update_loss_scale(self, finite_grads):
    """The op that updates the scale and counters after one step."""

    def finite():
      def increase():
        grown = self._loss_scale * self._incr_ratio
        value = tf.where(grown < 3.4e38, grown, self._loss_scale)
        return tf.group(tf.assign(self._loss_scale, value),
                        self._reset_stats())
      return tf.cond(self._num_good_steps + 1 >= self._incr_every_n_steps,
                     increase,
                     lambda: tf.group(tf.assign_add(self._num_good_steps, 1),
                                      tf.assign(self._num_bad_steps, 0)))

    def overflow():
      def decrease():
        value = tf.maximum(1., self._loss_scale * self._decr_ratio)
        return tf.group(tf.assign(self._loss_scale, value),
                        self._reset_stats())
      return tf.cond(
          self._num_bad_steps + 1 >= self._decr_every_n_nan_or_inf, decrease,
          lambda: tf.group(tf.assign_add(self._num_bad_steps, 1),
                           tf.assign(self._num_good_steps, 0)))

    return tf.cond(finite_grads, finite, overflow)
