"""FlexMatch (Zhang et al. 2021, arXiv 2110.08263; USB `flexmatch`).

FixMatch (`fixmatch.py`: one forward pass over labeled, weak and strong
views, hard pseudo-labels from the weak view) with curriculum pseudo-labelling:
a per-class threshold instead of the fixed `confidence`.

  sigma(c)  = number of unlabeled images whose last prediction with
              max probability >= tau was class c (per-example state,
              indexed by the record's `index`; -1 = never);
  beta(c)   = sigma(c) / max(max_c sigma, N - sum_c sigma)   (threshold
              warm-up, `thresh_warmup`; without: sigma(c) / max_c sigma),
              N = the unlabeled pool's size;
  tau(c)    = tau * beta(c) / (2 - beta(c))   (the convex mapping);
  mask      = max q >= tau(argmax q), q = softmax(weak logits);
  L_u       = mean over the unlabeled batch of mask * CE(argmax q, strong);
  loss      = L_x + `wu` * L_u.

As in the USB reference, the mask uses the state as of before this batch,
then the batch's confident predictions (max q >= tau) are recorded.

The state is one slot per record index (`ssl_state.PerExampleState`), sized
by `unlabeled_index_range`; `unlabeled_pool_size` is N. launch/train.py
sets both from the data (`sources.unlabeled_pool`), as this module asks for
the records' `index` (`InputNeeds.unlabeled_index`).

Defaults: FixMatch's (SGD Nesterov 0.03, cosine decay, L2 5e-4 in libml's
convention, EMA 0.999, uratio 7, batch 64, 2^20 steps) with tau 0.95 and
threshold warm-up on, as in the paper and USB.
"""

import collections

import tensorflow.compat.v1 as tf

from model_fns import base
from model_fns import fixmatch
from model_fns import ssl_state

NAME = 'flexmatch'

DEFAULTS = dict(fixmatch.DEFAULTS)
DEFAULTS.update({
    'confidence': 0.95,
    'thresh_warmup': True,
})


def _check_params(params):
  ssl_state.check_fixmatch_like(params)


def input_needs(params):
  """FixMatch's needs, plus the unlabeled records' `index`."""
  _check_params(params)
  return ssl_state.fixmatch_like_needs(params, unlabeled_index=True)


def _pool(params, features):
  for key in ('unlabeled_index_range', 'unlabeled_pool_size'):
    if params.get(key, 0) <= 0:
      raise ValueError('flexmatch needs params[%r], the unlabeled pool\'s '
                       'size (launch/train.py sets it from the data)' % key)
  if 'unlabeled_index' not in features:
    raise ValueError('flexmatch needs the feature unlabeled_index (the '
                     'unlabeled records\' index; InputNeeds.unlabeled_index)')
  return params['unlabeled_index_range'], params['unlabeled_pool_size']


def train_losses(features, labels, params, model):
  """L_x + wu * L_u; terms 'xe', 'xeu'; summaries 'monitors/mask', 'monitors/selected'."""
  _check_params(params)
  index_range, pool_size = _pool(params, features)
  logits_x, logits_weak, logits_strong, update_ops = (
      ssl_state.weak_strong_logits(features, model))
  num_classes = params['num_classes']
  confidence = float(params['confidence'])

  probs = tf.stop_gradient(tf.nn.softmax(logits_weak))
  pseudo = tf.argmax(probs, axis=1)
  state = ssl_state.PerExampleState('flexmatch_selected_label', index_range)
  counts = state.class_counts(num_classes, model.process_sum)
  beta = ssl_state.flexmatch_class_weights(counts, pool_size,
                                           params['thresh_warmup'])
  thresholds = ssl_state.flexmatch_thresholds(beta, confidence)
  mask = ssl_state.class_threshold_mask(probs, thresholds)
  selected = tf.reduce_max(probs, axis=1) >= confidence
  record = state.update(features['unlabeled_index'], tf.cast(pseudo, tf.float32),
                        selected, after=[mask, counts])

  xe = ssl_state.mean_xe(labels, logits_x)
  xeu = ssl_state.mean_xe(pseudo, logits_strong, mask)
  return base.LossResult(
      xe + float(params['wu']) * xeu,
      collections.OrderedDict([('xe', xe), ('xeu', xeu)]),
      update_ops=update_ops + [record],
      summaries={'monitors/mask': tf.reduce_mean(mask),
                 'monitors/selected': tf.reduce_sum(counts) / float(pool_size)})

