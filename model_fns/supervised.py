"""Supervised baseline: cross-entropy on the labeled batch only.

Defaults (libml's fully-supervised baseline): docs/algorithms.md.
"""

import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import base
from model_fns import ssl_common

NAME = 'supervised'

DEFAULTS = dict(
    ssl_common.LIBML_DEFAULTS,
    bn_momentum=0.999,
    label_smoothing=0.001,      # targets y - s * (y - 1 / classes)
)


def input_needs(params):
  """`batch_size` labeled images per step, augmented with `labeled_view`."""
  return needs.InputNeeds(batch_size=params['batch_size'],
                          labeled_view=params['labeled_view'])


def train_losses(features, labels, params, model):
  """Mean softmax cross-entropy against label-smoothed one-hot targets."""
  num_classes = params['num_classes']
  targets = tf.one_hot(labels, num_classes)
  smoothing = float(params['label_smoothing'])
  targets -= smoothing * (targets - 1. / num_classes)
  logits = model.logits(features['image'], training=True)
  xe = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits_v2(
      labels=targets, logits=logits))
  return base.LossResult(xe, {'xe': xe})
