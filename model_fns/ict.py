"""Interpolation Consistency Training (Verma et al. 2019; libml `ict.py`).

Losses and defaults: docs/algorithms.md.
"""


import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import ssl_common

NAME = 'ict'

DEFAULTS = dict(ssl_common.LIBML_DEFAULTS)
DEFAULTS.update({
    'beta': 0.5,
    'consistency_weight': 50.0,
    'warmup_pos': 0.4,
})


def input_needs(params):
  """B labeled + B unlabeled images in one 'weak' view."""
  ssl_common.check_teacher_decay(params)
  ssl_common.check_positive('beta', params['beta'])
  return needs.InputNeeds(
      batch_size=params['batch_size'], labeled_view=params['labeled_view'],
      unlabeled_ratio=1, unlabeled_views=('weak',),
      unlabeled_keeps_labeled=params['unlabeled_keeps_labeled'])


def train_losses(features, labels, params, model):
  """L_x + w * ramp * L_u; terms 'xe', 'mt'; summary 'monitors/ramp'."""
  ssl_common.check_teacher_decay(params)
  xe, update_ops = ssl_common.labeled_xe(features, labels, model)
  (unlabeled,) = ssl_common.split_views(features['unlabeled_views'])
  teacher = ssl_common.teacher_logits(model, unlabeled)
  mixed_u, mixed_targets, _, _ = ssl_common.mixup(
      unlabeled, tf.nn.softmax(teacher), params['beta'])
  student = tf.nn.softmax(model.logits(mixed_u, training=True))
  mt = tf.reduce_mean(tf.square(mixed_targets - student))
  return ssl_common.ramped_consistency(xe, 'mt', mt, params, update_ops)
