"""SoftMatch (Chen et al. 2023; USB `softmatch`): FixMatch with a soft
truncated-Gaussian weight per unlabeled example.

Losses, statistics and defaults: docs/algorithms.md.
"""

import collections

import tensorflow.compat.v1 as tf

from model_fns import base
from model_fns import fixmatch
from model_fns import ssl_state

NAME = 'softmatch'

DEFAULTS = dict(fixmatch.DEFAULTS)
DEFAULTS.update({
    'stats_momentum': 0.999,
    'n_sigma': 2.0,
    'dist_align': True,
})


def _check_params(params):
  ssl_state.check_fixmatch_like(params)
  ssl_state.check_momentum(params)
  if not params['n_sigma'] > 0:
    raise ValueError('--n_sigma must be positive, got %r' % params['n_sigma'])


def input_needs(params):
  """FixMatch's needs: weak and strong views of uratio * B images."""
  _check_params(params)
  return ssl_state.fixmatch_like_needs(params)


def soft_mask(probs, params, process_sum=None):
  """(weights [U], assign ops, mu_t, var_t) of this batch (see above)."""
  num_classes = params['num_classes']
  momentum = float(params['stats_momentum'])
  ops = []
  if params['dist_align']:
    p_model = ssl_state.state_variable('softmatch_p_model', [num_classes], 0.)
    p_model, op = ssl_state.ema_update_first_set(
        p_model, ssl_state.global_mean(probs, process_sum), momentum)
    ops.append(op)
    probs = ssl_state.align(probs, 1. / num_classes, p_model)
  max_probs = tf.reduce_max(probs, axis=1)
  batch_mean, batch_var = ssl_state.global_mean_and_variance(max_probs,
                                                             process_sum)
  mean, op = ssl_state.ema_update(
      ssl_state.state_variable('softmatch_mean', [], 1. / num_classes),
      batch_mean, momentum)
  ops.append(op)
  var, op = ssl_state.ema_update(
      ssl_state.state_variable('softmatch_variance', [], 1.), batch_var,
      momentum)
  ops.append(op)
  weights = ssl_state.soft_weights(max_probs, mean, var, params['n_sigma'])
  return weights, ops, mean, var


def train_losses(features, labels, params, model):
  """L_x + wu * L_u; terms 'xe', 'xeu'; summaries 'monitors/mask', 'monitors/mu'."""
  _check_params(params)
  logits_x, logits_weak, logits_strong, update_ops = (
      ssl_state.weak_strong_logits(features, model))
  probs = tf.stop_gradient(tf.nn.softmax(logits_weak))
  weights, stat_ops, mean, _ = soft_mask(probs, params, model.process_sum)
  xe = ssl_state.mean_xe(labels, logits_x)
  xeu = ssl_state.mean_xe(tf.argmax(probs, axis=1), logits_strong, weights)
  return base.LossResult(
      xe + float(params['wu']) * xeu,
      collections.OrderedDict([('xe', xe), ('xeu', xeu)]),
      update_ops=update_ops + stat_ops,
      summaries={'monitors/mask': tf.reduce_mean(weights),
                 'monitors/mu': mean})
