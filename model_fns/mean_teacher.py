"""Mean Teacher (Tarvainen & Valpola 2017; google-research/mixmatch).

Losses and defaults: docs/algorithms.md.
"""


import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import ssl_common

NAME = 'mean_teacher'

DEFAULTS = dict(ssl_common.LIBML_DEFAULTS)
DEFAULTS.update({
    'consistency_weight': 50.0,
    'warmup_pos': 0.4,
})


def input_needs(params):
  """B labeled + B unlabeled images in two 'weak' views."""
  ssl_common.check_teacher_decay(params)
  return needs.InputNeeds(
      batch_size=params['batch_size'], labeled_view=params['labeled_view'],
      unlabeled_ratio=1, unlabeled_views=('weak', 'weak'),
      unlabeled_keeps_labeled=params['unlabeled_keeps_labeled'])


def train_losses(features, labels, params, model):
  """L_x + w * ramp * L_u; terms 'xe', 'mt'; summary 'monitors/ramp'."""
  ssl_common.check_teacher_decay(params)
  xe, update_ops = ssl_common.labeled_xe(features, labels, model)
  view_1, view_2 = ssl_common.split_views(features['unlabeled_views'])
  teacher = ssl_common.teacher_logits(model, view_1)
  student = tf.nn.softmax(model.logits(view_2, training=True))
  mt = tf.reduce_mean(tf.square(tf.nn.softmax(teacher) - student))
  return ssl_common.ramped_consistency(xe, 'mt', mt, params, update_ops)
