"""UDA (Xie et al. 2020; google-research/uda): FixMatch's views with a KL
consistency instead of hard pseudo-labels.

Losses and defaults: docs/algorithms.md.
"""

import collections

import tensorflow.compat.v1 as tf

from model_fns import base
from model_fns import fixmatch
from model_fns import ssl_common
from model_fns import ssl_state

NAME = 'uda'

DEFAULTS = dict(fixmatch.DEFAULTS)
DEFAULTS.update({
    'confidence': 0.8,
    'temperature': 0.4,
    'tsa': 'none',
})


def _check_params(params):
  ssl_state.check_fixmatch_like(params)
  ssl_common.check_positive('temperature', params['temperature'])
  ssl_common.check_tsa(params)


def input_needs(params):
  """FixMatch's needs: weak and strong views of uratio * B images."""
  _check_params(params)
  return ssl_state.fixmatch_like_needs(params)


def train_losses(features, labels, params, model):
  """Terms 'xe', 'kl'; summaries 'monitors/mask', 'monitors/tsa_kept'."""
  _check_params(params)
  logits_x, logits_weak, logits_strong, update_ops = (
      ssl_state.weak_strong_logits(features, model))
  num_classes = params['num_classes']

  threshold = None
  if params['tsa'] != 'none':
    threshold = ssl_common.tsa_threshold(
        params['tsa'],
        ssl_common.training_progress(tf.train.get_or_create_global_step(),
                                     params['train_steps']),
        num_classes)
  targets_x = ssl_common.one_hot(labels, num_classes)
  tsa_kept = ssl_common.tsa_mask(tf.nn.softmax(logits_x), targets_x,
                                 threshold)
  xe = ssl_common.masked_mean(ssl_common.softmax_xe(targets_x, logits_x),
                              tsa_kept)

  weak = tf.stop_gradient(logits_weak)
  mask = ssl_common.confidence_mask(tf.nn.softmax(weak), params['confidence'])
  kl = tf.reduce_mean(mask * ssl_common.kl_divergence_from_logits(
      weak / float(params['temperature']), logits_strong))
  return base.LossResult(
      xe + float(params['wu']) * kl,
      collections.OrderedDict([('xe', xe), ('kl', kl)]),
      update_ops=update_ops,
      summaries={'monitors/mask': tf.reduce_mean(mask),
                 'monitors/tsa_kept': tf.reduce_mean(tsa_kept)})
