"""Stand-in for npu_bridge.estimator.npu.npu_optimizer (runs on the CPU)."""

import os

import tensorflow.compat.v1 as tf

import npu_bridge
from npu_bridge.hccl import hccl_ops


class NPUDistributedOptimizer(tf.train.Optimizer):
  """Averages the gradients over the ranks (hccl allreduce sum / RANK_SIZE).

  Like CANN's, it reads RANK_SIZE itself and passes gradients through when it
  is unset or 1.
  """

  def __init__(self, optimizer, is_weight_update_sharding=False, name=None):
    if not isinstance(optimizer, tf.train.Optimizer):
      raise TypeError('NPUDistributedOptimizer wraps a tf.train.Optimizer, '
                      'got %r' % (optimizer,))
    if not isinstance(is_weight_update_sharding, bool):
      raise TypeError('is_weight_update_sharding must be a bool')
    npu_bridge.record('NPUDistributedOptimizer', dict(
        optimizer=type(optimizer).__name__,
        is_weight_update_sharding=is_weight_update_sharding, name=name))
    self._optimizer = optimizer
    super(NPUDistributedOptimizer, self).__init__(
        name=name or 'Distributed' + type(optimizer).__name__,
        use_locking=False)

  def compute_gradients(self, *args, **kwargs):
    gradients = self._optimizer.compute_gradients(*args, **kwargs)
    size = int(os.environ.get('RANK_SIZE', '1'))
    if size <= 1:
      return gradients
    with tf.name_scope(self._name + '_Allreduce'):
      return [(None if g is None else
               hccl_ops.allreduce(g, 'sum') / tf.cast(size, g.dtype), v)
              for g, v in gradients]

  def apply_gradients(self, grads_and_vars, global_step=None, name=None):
    return self._optimizer.apply_gradients(grads_and_vars, global_step, name)

  def get_slot(self, *args, **kwargs):
    return self._optimizer.get_slot(*args, **kwargs)

  def get_slot_names(self, *args, **kwargs):
    return self._optimizer.get_slot_names(*args, **kwargs)

  def variables(self, *args, **kwargs):
    return self._optimizer.variables(*args, **kwargs)
