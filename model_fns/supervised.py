"""Supervised baseline: cross-entropy on the labeled batch only.

Defaults reproduce libml's fully-supervised baseline
(google-research/mixmatch `fully_supervised/fs_baseline.py`): ResNet
(WRN-28-2 with the common filters/repeat), Adam lr 0.002 constant, decoupled
weight decay 0.02 (times lr), EMA 0.999, label smoothing 0.001, batch 64,
`train_kimg` 65536 = 1024 epochs of 65536 images. Comparisons at another
recipe's settings (e.g. SESEMI's) set the rest from a flagfile;
`labeled_view` selects the labeled augmentation ('sesemi' for that one).
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
