"""UDA (Xie et al. 2020, arXiv 1904.12848; google-research/uda `image/`).

One forward pass over labeled, weak and strong (RandAugment + cutout)
views, as FixMatch; the unlabeled loss is a consistency between
distributions instead of hard pseudo-labels:

  q     = softmax(weak logits / T), no gradient (sharpening, T 0.4);
  mask  = max softmax(weak logits) >= `confidence` (0.8);
  L_u   = mean over the unlabeled batch of mask * KL(q || softmax(strong));
  L_x   = mean CE over the labeled examples still counted by training
          signal annealing (`tsa` 'linear' | 'exp' | 'log'; 'none', the
          CIFAR-10 scripts' setting, counts all): an example counts while
          the probability of its label is below a threshold rising from
          1/classes to 1 over `train_steps` (`ssl_common.tsa_threshold`);
  loss  = L_x + `wu` * L_u.

Defaults: the UDA CIFAR-10 scripts' T 0.4, confidence 0.8, unlabeled ratio
7, lambda_u 1, no TSA; optimizer, schedule, weight decay, EMA and batch are
FixMatch's (as in the FixMatch paper's UDA baseline, the numbers this
toolkit compares against).
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
