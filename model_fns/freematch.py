"""FreeMatch (Wang et al. 2023; USB `freematch`): FixMatch with self-adaptive
thresholds and a fairness term.

Losses, statistics and defaults: docs/algorithms.md.
"""

import collections

import tensorflow.compat.v1 as tf

from model_fns import base
from model_fns import fixmatch
from model_fns import ssl_state

NAME = 'freematch'

DEFAULTS = dict(fixmatch.DEFAULTS)
DEFAULTS.update({
    'stats_momentum': 0.999,
    'fairness_weight': 0.01,
})


def _check_params(params):
  ssl_state.check_fixmatch_like(params)
  ssl_state.check_momentum(params)
  if params['fairness_weight'] < 0:
    raise ValueError('--fairness_weight must not be negative, got %r'
                     % params['fairness_weight'])


def input_needs(params):
  """FixMatch's needs: weak and strong views of uratio * B images."""
  _check_params(params)
  return ssl_state.fixmatch_like_needs(params)


def update_statistics(probs, num_classes, momentum, process_sum=None):
  """FreeMatch's running statistics after this batch; (stats dict, assign ops).

  Keys: 'threshold' (tau_t), 'p_model', 'label_hist'; variables
  `ssl_state/freematch_{threshold,p_model,label_hist}`.
  """
  prior = 1. / num_classes
  stats, ops = {}, []
  batch = {
      'threshold': ssl_state.global_mean(tf.reduce_max(probs, axis=1),
                                        process_sum),
      'p_model': ssl_state.global_mean(probs, process_sum),
      'label_hist': ssl_state.global_mean(
          tf.one_hot(tf.argmax(probs, axis=1), num_classes), process_sum),
  }
  for key, shape in (('threshold', []), ('p_model', [num_classes]),
                     ('label_hist', [num_classes])):
    variable = ssl_state.state_variable('freematch_' + key, shape, prior)
    stats[key], op = ssl_state.ema_update(variable, batch[key], momentum)
    ops.append(op)
  return stats, ops


def train_losses(features, labels, params, model):
  """Terms 'xe', 'xeu', 'fairness'; summaries 'monitors/mask', 'monitors/threshold'."""
  _check_params(params)
  logits_x, logits_weak, logits_strong, update_ops = (
      ssl_state.weak_strong_logits(features, model))
  probs = tf.stop_gradient(tf.nn.softmax(logits_weak))
  stats, stat_ops = update_statistics(probs, params['num_classes'],
                                      float(params['stats_momentum']),
                                      model.process_sum)
  thresholds = ssl_state.freematch_thresholds(stats['threshold'],
                                              stats['p_model'])
  mask = ssl_state.class_threshold_mask(probs, thresholds)

  xe = ssl_state.mean_xe(labels, logits_x)
  xeu = ssl_state.mean_xe(tf.argmax(probs, axis=1), logits_strong, mask)
  fairness = ssl_state.fairness_loss(mask, tf.nn.softmax(logits_strong),
                                     stats['p_model'], stats['label_hist'])
  total = (xe + float(params['wu']) * xeu +
           float(params['fairness_weight']) * fairness)
  return base.LossResult(
      total,
      collections.OrderedDict([('xe', xe), ('xeu', xeu),
                               ('fairness', fairness)]),
      update_ops=update_ops + stat_ops,
      summaries={'monitors/mask': tf.reduce_mean(mask),
                 'monitors/threshold': stats['threshold']})
