"""Stand-in for npu_bridge.hccl.hccl_ops (CANN's signatures; one process).

There is no HCCL world here, so a collective stands for RANK_SIZE ranks that
all hold the same tensor: `allreduce(x, 'sum')` is `x * RANK_SIZE` (RANK_SIZE
from the environment, as HCCL's world group is sized by it), 'max' and 'min'
are `x`, 'prod' is `x ** RANK_SIZE`. Code that all-reduces a ratio instead of
its numerator and denominator therefore gets a wrong number, as it would on
devices whose ranks disagree.
"""

import os

import tensorflow.compat.v1 as tf

import npu_bridge

REDUCTIONS = ('sum', 'max', 'min', 'prod')


def world_size():
  return int(os.environ.get('RANK_SIZE', '1'))


def allreduce(tensor, reduction, fusion=1, fusion_id=-1,
              group='hccl_world_group'):
  """Records the call (input tensor name, dtype, shape) and reduces."""
  if reduction not in REDUCTIONS:
    raise ValueError('reduction must be one of %s, got %r'
                     % (REDUCTIONS, reduction))
  for name, value in (('fusion', fusion), ('fusion_id', fusion_id)):
    if not isinstance(value, int) or isinstance(value, bool):
      raise TypeError('%s must be an int, got %r' % (name, value))
  if not isinstance(group, str):
    raise TypeError('group must be a str, got %r' % (group,))
  tensor = tf.convert_to_tensor(tensor)
  npu_bridge.record('hccl_ops.allreduce', dict(
      tensor=tensor.name, dtype=tensor.dtype.name,
      shape=tensor.shape.as_list(), reduction=reduction, fusion=fusion,
      fusion_id=fusion_id, group=group))
  size = world_size()
  with tf.name_scope('HcomAllReduce'):
    if reduction == 'sum':
      return tensor * tf.cast(size, tensor.dtype)
    if reduction == 'prod':
      return tensor ** size
    return tf.identity(tensor)
