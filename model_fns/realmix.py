"""RealMix (Nair et al. 2019; uizard-technologies/realmix): MixMatch plus
out-of-distribution masking, training signal annealing and stronger
unlabeled augmentation.

Losses, where it differs from the reference, and defaults: docs/algorithms.md.
"""

import collections

import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import base
from model_fns import mixmatch
from model_fns import ssl_common

NAME = 'realmix'

DEFAULTS = dict(mixmatch.DEFAULTS)
DEFAULTS.update({
    'epochs': 700,
    'percent_mask': -1.0,
    'tsa': 'none',
    'unlabeled_view': 'realmix',
})


def _check_params(params):
  mixmatch.check_params(params)
  if params['percent_mask'] >= 1:
    raise ValueError('--percent_mask must be < 1 (a fraction of the batch; '
                     '<= 0 turns masking off), got %r' % params['percent_mask'])
  ssl_common.check_tsa(params)


def input_needs(params):
  """B labeled + B unlabeled images in K `unlabeled_view` views."""
  _check_params(params)
  return needs.InputNeeds(
      batch_size=params['batch_size'], labeled_view=params['labeled_view'],
      unlabeled_ratio=1,
      unlabeled_views=(params['unlabeled_view'],) * params['num_augment'],
      unlabeled_keeps_labeled=params['unlabeled_keeps_labeled'])


def train_losses(features, labels, params, model):
  """TSA-masked L_x + w(step) * OOD-masked L_u.

  Terms 'xe', 'l2u'; summaries 'monitors/w_match', 'monitors/tsa_kept'
  (fraction of labeled examples counted) and 'monitors/ood_kept' (fraction
  of unlabeled examples kept).
  """
  _check_params(params)
  logits_x, targets_x, logits_u, targets_u, update_ops = (
      mixmatch.mixmatch_logits(features, labels, params, model))
  global_step = tf.train.get_or_create_global_step()
  num_classes = params['num_classes']

  threshold = None
  if params['tsa'] != 'none':
    threshold = ssl_common.tsa_threshold(
        params['tsa'],
        ssl_common.training_progress(global_step, params['train_steps']),
        num_classes)
  tsa_kept = ssl_common.tsa_mask(tf.nn.softmax(logits_x), targets_x,
                                 threshold)
  xe = ssl_common.masked_mean(ssl_common.softmax_xe(targets_x, logits_x),
                              tsa_kept)

  probs_u = tf.nn.softmax(logits_u)
  ood_kept = ssl_common.percentile_mask(probs_u, params['percent_mask'])
  squared = tf.reduce_sum(tf.square(targets_u - probs_u), axis=-1)
  l2u = ssl_common.masked_mean(squared, ood_kept) / float(num_classes)

  weight = ssl_common.unlabeled_weight(
      global_step, params['batch_size'], params['w_match'],
      params['warmup_kimg'])
  return base.LossResult(
      xe + weight * l2u, collections.OrderedDict([('xe', xe), ('l2u', l2u)]),
      update_ops=update_ops,
      summaries={'monitors/w_match': weight,
                 'monitors/tsa_kept': tf.reduce_mean(tsa_kept),
                 'monitors/ood_kept': tf.reduce_mean(ood_kept)})
