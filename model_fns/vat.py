"""Virtual Adversarial Training (Miyato et al. 2018; libml `vat.py`).

Losses and defaults: docs/algorithms.md.
"""

import collections

import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import base
from model_fns import ssl_common

NAME = 'vat'

DEFAULTS = dict(ssl_common.LIBML_DEFAULTS)
DEFAULTS.update({
    'vat_weight': 0.3,
    'vat_eps': 6.0,
    'vat_xi': 1e-6,
    'entmin_weight': 0.06,
    'warmup_pos': 0.4,
})


def _check_params(params):
  ssl_common.check_positive('vat_eps', params['vat_eps'])
  ssl_common.check_positive('vat_xi', params['vat_xi'])


def input_needs(params):
  """B labeled + B unlabeled images in one 'weak' view."""
  _check_params(params)
  return needs.InputNeeds(
      batch_size=params['batch_size'], labeled_view=params['labeled_view'],
      unlabeled_ratio=1, unlabeled_views=('weak',),
      unlabeled_keeps_labeled=params['unlabeled_keeps_labeled'])


def train_losses(features, labels, params, model):
  """L_x + w * ramp * L_vat + we * L_ent; terms 'xe', 'vat', 'entmin'."""
  _check_params(params)
  xe, update_ops = ssl_common.labeled_xe(features, labels, model)
  (unlabeled,) = ssl_common.split_views(features['unlabeled_views'])
  logits_u = model.logits(unlabeled, training=True)
  r_adv = ssl_common.vat_perturbation(
      lambda x: model.logits(x, training=True), unlabeled, logits_u,
      xi=params['vat_xi'], eps=params['vat_eps'])
  logits_adv = model.logits(unlabeled + r_adv, training=True)
  vat = tf.reduce_mean(ssl_common.kl_divergence_from_logits(
      tf.stop_gradient(logits_u), logits_adv))
  entmin = tf.reduce_mean(ssl_common.entropy_from_logits(logits_u))
  ramp = ssl_common.position_ramp(tf.train.get_or_create_global_step(),
                                  params['train_steps'], params['warmup_pos'])
  total = (xe + float(params['vat_weight']) * ramp * vat +
           float(params['entmin_weight']) * entmin)
  return base.LossResult(
      total,
      collections.OrderedDict([('xe', xe), ('vat', vat), ('entmin', entmin)]),
      update_ops=update_ops, summaries={'monitors/ramp': ramp})
