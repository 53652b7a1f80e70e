"""Π-model (Laine & Aila 2017; google-research/mixmatch `pi_model.py`).

Losses and defaults: docs/algorithms.md.
"""


import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import ssl_common

NAME = 'pi_model'

DEFAULTS = dict(ssl_common.LIBML_DEFAULTS)
DEFAULTS.update({
    'consistency_weight': 10.0,
    'warmup_pos': 0.4,
})


def input_needs(params):
  """B labeled + B unlabeled images in two 'weak' views."""
  return needs.InputNeeds(
      batch_size=params['batch_size'], labeled_view=params['labeled_view'],
      unlabeled_ratio=1, unlabeled_views=('weak', 'weak'),
      unlabeled_keeps_labeled=params['unlabeled_keeps_labeled'])


def train_losses(features, labels, params, model):
  """L_x + w * ramp * L_u; terms 'xe', 'pm'; summary 'monitors/ramp'."""
  xe, update_ops = ssl_common.labeled_xe(features, labels, model)
  view_1, view_2 = ssl_common.split_views(features['unlabeled_views'])
  target = tf.stop_gradient(tf.nn.softmax(model.logits(view_1, training=True)))
  student = tf.nn.softmax(model.logits(view_2, training=True))
  pm = tf.reduce_mean(tf.square(target - student))
  return ssl_common.ramped_consistency(xe, 'pm', pm, params, update_ops)
