"""Stand-in for npu_bridge.estimator.npu.npu_loss_scale_optimizer.

CANN checks the device's float-status register for overflow; on the CPU the
stand-in checks that every gradient is finite. With `is_distributed` the
overflow flag is all-reduced (hccl sum) as CANN does, so every rank skips
the same steps.
"""

import tensorflow.compat.v1 as tf

import npu_bridge
from npu_bridge.estimator.npu import npu_loss_scale_manager as managers
from npu_bridge.hccl import hccl_ops


class NPULossScaleOptimizer(tf.train.Optimizer):
  """loss x scale -> gradients / scale; a step with an overflow is skipped
  and the manager updates the scale."""

  def __init__(self, opt, loss_scale_manager, is_distributed=False):
    if not isinstance(opt, tf.train.Optimizer):
      raise TypeError('NPULossScaleOptimizer wraps a tf.train.Optimizer, got '
                      '%r' % (opt,))
    if not isinstance(loss_scale_manager,
                      (managers.FixedLossScaleManager,
                       managers.ExponentialUpdateLossScaleManager)):
      raise TypeError('loss_scale_manager must be an npu_bridge loss scale '
                      'manager, got %r' % (loss_scale_manager,))
    if not isinstance(is_distributed, bool):
      raise TypeError('is_distributed must be a bool, got %r'
                      % (is_distributed,))
    npu_bridge.record('NPULossScaleOptimizer', dict(
        opt=type(opt).__name__,
        loss_scale_manager=type(loss_scale_manager).__name__,
        is_distributed=is_distributed))
    self._opt = opt
    self._loss_scale_manager = loss_scale_manager
    self._is_distributed = is_distributed
    super(NPULossScaleOptimizer, self).__init__(
        name='NPULossScaleOptimizer', use_locking=False)

  def compute_gradients(self, loss, var_list=None, **kwargs):
    scale = self._loss_scale_manager.get_loss_scale()
    grads = self._opt.compute_gradients(loss * tf.cast(scale, loss.dtype),
                                        var_list=var_list, **kwargs)
    inverse = 1. / scale
    return [(None if g is None else g * tf.cast(inverse, g.dtype), v)
            for g, v in grads]

  def _check_overflow(self):
    manager = self._loss_scale_manager
    return (not isinstance(manager, managers.FixedLossScaleManager) or
            manager.get_enable_overflow_check())

  def apply_gradients(self, grads_and_vars, global_step=None, name=None):
    grads_and_vars = list(grads_and_vars)
    if not self._check_overflow():
      return self._opt.apply_gradients(grads_and_vars, global_step, name)
    grads = [g for g, _ in grads_and_vars if g is not None]
    finite = tf.reduce_all([tf.reduce_all(tf.is_finite(g)) for g in grads])
    if self._is_distributed:
      status = tf.cast(tf.logical_not(finite), tf.float32)[None]
      finite = tf.reduce_all(tf.equal(
          hccl_ops.allreduce(status, 'sum', fusion=0), 0.))
    update = tf.cond(
        finite,
        lambda: self._opt.apply_gradients(grads_and_vars, global_step, name),
        tf.no_op)
    return tf.group(update,
                    self._loss_scale_manager.update_loss_scale(finite))

  def get_slot(self, *args, **kwargs):
    return self._opt.get_slot(*args, **kwargs)

  def get_slot_names(self, *args, **kwargs):
    return self._opt.get_slot_names(*args, **kwargs)

  def variables(self, *args, **kwargs):
    return self._opt.variables(*args, **kwargs)
