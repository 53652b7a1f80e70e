"""FixMatch (Sohn et al. 2020; google-research/fixmatch).

Losses and defaults: docs/algorithms.md.
"""

import collections

import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import base
from model_fns import ssl_common

NAME = 'fixmatch'

DEFAULTS = {
    'network': 'resnet',
    'filters': 32,
    'repeat': 4,
    'scales': 0,
    'normalization': 'minus_one_one',
    'batch_size': 64,
    'epochs': 1024,
    'optimizer': 'sgd',
    'momentum': 0.9,
    'nesterov': True,
    'lr': 0.03,
    'lr_schedule': 'cosine',
    'cosine_factor': 7.0 / 16.0,
    'weight_decay': 0.0,
    'weight_decay_l2': 2.5e-4,
    'ema_decay': 0.999,
    'unlabeled_keeps_labeled': True,
    'labeled_view': 'weak',
    'uratio': 7,
    'confidence': 0.95,
    'wu': 1.0,
}


def _check_params(params):
  if params['uratio'] < 1:
    raise ValueError('--uratio must be at least 1, got %r' % params['uratio'])
  ssl_common.check_fraction('confidence', params['confidence'])


def input_needs(params):
  """B labeled + uratio * B unlabeled images in ('weak', 'strong') views."""
  _check_params(params)
  return needs.InputNeeds(
      batch_size=params['batch_size'], labeled_view=params['labeled_view'],
      unlabeled_ratio=params['uratio'], unlabeled_views=('weak', 'strong'),
      unlabeled_keeps_labeled=params['unlabeled_keeps_labeled'])


def train_losses(features, labels, params, model):
  """L_x + wu * L_u; terms 'xe', 'xeu'; summary 'monitors/mask'."""
  _check_params(params)
  images = features['image']
  weak, strong = ssl_common.split_views(features['unlabeled_views'])
  batch = tf.shape(images)[0]
  logits, update_ops = base.ops_created_by(
      model.logits, tf.concat([images, weak, strong], axis=0), True)
  logits_x = logits[:batch]
  logits_weak, logits_strong = tf.split(logits[batch:], 2)

  xe = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(labels, tf.int64), logits=logits_x))
  pseudo = tf.stop_gradient(tf.nn.softmax(logits_weak))
  mask = ssl_common.confidence_mask(pseudo, params['confidence'])
  xeu = tf.reduce_mean(mask * tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.argmax(pseudo, axis=1), logits=logits_strong))
  return base.LossResult(
      xe + float(params['wu']) * xeu,
      collections.OrderedDict([('xe', xe), ('xeu', xeu)]),
      update_ops=update_ops, summaries={'monitors/mask': tf.reduce_mean(mask)})
