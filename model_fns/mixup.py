"""MixUp for semi-supervised learning (Zhang et al. 2018; libml `mixup.py`).

Losses and defaults: docs/algorithms.md.
"""

import collections

import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import base
from model_fns import ssl_common

NAME = 'mixup'

DEFAULTS = dict(ssl_common.LIBML_DEFAULTS)
DEFAULTS.update({
    'beta': 0.5,
})


def input_needs(params):
  """B labeled + B unlabeled images in one 'weak' view."""
  ssl_common.check_positive('beta', params['beta'])
  return needs.InputNeeds(
      batch_size=params['batch_size'], labeled_view=params['labeled_view'],
      unlabeled_ratio=1, unlabeled_views=('weak',),
      unlabeled_keeps_labeled=params['unlabeled_keeps_labeled'])


def train_losses(features, labels, params, model):
  """Mixed labeled CE + mixed unlabeled CE; terms 'xe', 'xeu'."""
  beta = params['beta']
  mixed_x, targets_x, _, _ = ssl_common.mixup(
      features['image'], ssl_common.one_hot(labels, params['num_classes']),
      beta)
  logits_x, update_ops = base.ops_created_by(model.logits, mixed_x, True)
  (unlabeled,) = ssl_common.split_views(features['unlabeled_views'])
  guess = tf.stop_gradient(
      tf.nn.softmax(model.logits(unlabeled, training=True)))
  mixed_u, targets_u, _, _ = ssl_common.mixup(unlabeled, guess, beta)
  logits_u = model.logits(mixed_u, training=True)
  xe = tf.reduce_mean(ssl_common.softmax_xe(targets_x, logits_x))
  xeu = tf.reduce_mean(ssl_common.softmax_xe(targets_u, logits_u))
  return base.LossResult(
      xe + xeu, collections.OrderedDict([('xe', xe), ('xeu', xeu)]),
      update_ops=update_ops)
