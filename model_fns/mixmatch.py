"""MixMatch (Berthelot et al. 2019; google-research/mixmatch).

Losses and defaults: docs/algorithms.md.
"""

import collections

import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import base
from model_fns import ssl_common

NAME = 'mixmatch'

DEFAULTS = dict(ssl_common.LIBML_DEFAULTS)
DEFAULTS.update({
    'beta': 0.75,
    'w_match': 75.0,
    'warmup_kimg': 1024,
    'temperature': 0.5,
    'num_augment': 2,
})


def check_params(params):
  """Raises ValueError naming the flag for MixMatch-style settings."""
  if params['num_augment'] < 1:
    raise ValueError('--num_augment must be at least 1, got %r'
                     % params['num_augment'])
  ssl_common.check_positive('beta', params['beta'])
  ssl_common.check_positive('temperature', params['temperature'])
  if params['w_match'] < 0:
    raise ValueError('--w_match must not be negative, got %r'
                     % params['w_match'])


def input_needs(params):
  """B labeled (`labeled_view`) + B unlabeled images in K 'weak' views."""
  check_params(params)
  return needs.InputNeeds(
      batch_size=params['batch_size'], labeled_view=params['labeled_view'],
      unlabeled_ratio=1,
      unlabeled_views=('weak',) * params['num_augment'],
      unlabeled_keeps_labeled=params['unlabeled_keeps_labeled'])


def mixmatch_logits(features, labels, params, model):
  """Steps 1-3 above, shared with RealMix.

  Returns:
    (logits_x [B, classes], targets_x, logits_u [K*B, classes], targets_u,
    update_ops of the first interleaved forward batch).

  Raises:
    ValueError: the unlabeled batch is not the size of the labeled batch
      (interleaving needs equal batches).
  """
  check_params(params)
  images = features['image']
  batch = images.shape.as_list()[0]
  views = ssl_common.split_views(features['unlabeled_views'])
  if any(v.shape.as_list()[0] != batch for v in views):
    raise ValueError('%s needs as many unlabeled images per view as labeled '
                     'ones (%s): got %s'
                     % (params['algorithm'], batch,
                        features['unlabeled_views'].shape))
  guess = ssl_common.guess_labels(model, views, params['temperature'])
  targets = ssl_common.one_hot(labels, params['num_classes'])
  mixed_x, mixed_y, _, _ = ssl_common.mixup(
      tf.concat([images] + views, axis=0),
      tf.concat([targets] + [guess] * len(views), axis=0),
      params['beta'])
  pieces = len(views) + 1
  batches = ssl_common.interleave(tf.split(mixed_x, pieces), batch)
  first, update_ops = base.ops_created_by(model.logits, batches[0], True)
  logits = [first] + [model.logits(b, training=True) for b in batches[1:]]
  logits = ssl_common.interleave(logits, batch)
  mixed_targets = tf.split(mixed_y, pieces)
  return (logits[0], mixed_targets[0], tf.concat(logits[1:], axis=0),
          tf.concat(mixed_targets[1:], axis=0), update_ops)


def train_losses(features, labels, params, model):
  """L_x + w(step) * L_u; terms 'xe' and 'l2u', summary 'monitors/w_match'."""
  logits_x, targets_x, logits_u, targets_u, update_ops = mixmatch_logits(
      features, labels, params, model)
  xe = tf.reduce_mean(ssl_common.softmax_xe(targets_x, logits_x))
  l2u = tf.reduce_mean(tf.square(targets_u - tf.nn.softmax(logits_u)))
  weight = ssl_common.unlabeled_weight(
      tf.train.get_or_create_global_step(), params['batch_size'],
      params['w_match'], params['warmup_kimg'])
  return base.LossResult(
      xe + weight * l2u, collections.OrderedDict([('xe', xe), ('l2u', l2u)]),
      update_ops=update_ops, summaries={'monitors/w_match': weight})
