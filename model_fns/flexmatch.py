"""FlexMatch (Zhang et al. 2021; USB `flexmatch`): FixMatch with per-class
thresholds from a per-example record.

Losses, state and defaults: docs/algorithms.md.
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

