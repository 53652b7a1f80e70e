"""Pseudo-Label (Lee 2013; google-research/mixmatch `pseudo_label.py`).

Losses and defaults: docs/algorithms.md.
"""

import collections

import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import base
from model_fns import ssl_common

NAME = 'pseudo_label'

DEFAULTS = dict(ssl_common.LIBML_DEFAULTS)
DEFAULTS.update({
    'consistency_weight': 1.0,
    'confidence': 0.95,
    'warmup_pos': 0.4,
})


def input_needs(params):
  """B labeled + B unlabeled images in one 'weak' view."""
  ssl_common.check_fraction('confidence', params['confidence'])
  return needs.InputNeeds(
      batch_size=params['batch_size'], labeled_view=params['labeled_view'],
      unlabeled_ratio=1, unlabeled_views=('weak',),
      unlabeled_keeps_labeled=params['unlabeled_keeps_labeled'])


def train_losses(features, labels, params, model):
  """L_x + w * ramp * L_u; terms 'xe', 'pl'; summaries ramp and mask."""
  xe, update_ops = ssl_common.labeled_xe(features, labels, model)
  (unlabeled,) = ssl_common.split_views(features['unlabeled_views'])
  logits_u = model.logits(unlabeled, training=True)
  mask = ssl_common.confidence_mask(tf.nn.softmax(logits_u),
                                    params['confidence'])
  pl = tf.reduce_mean(mask * tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.argmax(logits_u, axis=1), logits=logits_u))
  ramp = ssl_common.position_ramp(tf.train.get_or_create_global_step(),
                                  params['train_steps'], params['warmup_pos'])
  return base.LossResult(
      xe + float(params['consistency_weight']) * ramp * pl,
      collections.OrderedDict([('xe', xe), ('pl', pl)]),
      update_ops=update_ops,
      summaries={'monitors/ramp': ramp, 'monitors/mask': tf.reduce_mean(mask)})
