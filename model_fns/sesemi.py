"""SESEMI (Tran 2019): supervised cross-entropy plus a self-supervised proxy
task of 6 transforms.

Losses, batch sizes, variants and defaults: docs/algorithms.md.
"""

import collections

import tensorflow.compat.v1 as tf

from input_pipeline import augment
from input_pipeline import needs
from model_fns import base

NAME = 'sesemi'
NUM_PROXY_LABELS = augment.NUM_PROXY   # the pipeline's 6 transforms
VARIANTS = ('ssl', 'supervised')

DEFAULTS = {
    'network': 'convnet',
    'batch_size': 16,
    'epochs': 50,
    'optimizer': 'sgd',
    'momentum': 0.9,
    'nesterov': True,
    'lr': 0.05,
    'lr_schedule': 'poly',
    'lr_decay_power': 0.5,
    'warmup_steps': 0,
    'weight_decay_l2': 5e-4,
    'weight_decay': 0.0,
    'ema_decay': 0.0,
    'head_dropout': 0.2,        # the reference's super_dropout
    'net_dropout': 0.0,
    'bn_momentum': 0.99,        # Keras' default
    'normalization': 'gcn',
    'aug_flip': True,
    'aug_shift': 2,
    'aug_noise_std': 0.15,
    'unlabeled_keeps_labeled': True,
    'sesemi_variant': 'ssl',
}


def _variant(params):
  variant = params['sesemi_variant']
  if variant not in VARIANTS:
    raise ValueError('sesemi_variant must be one of %s, got %r'
                     % (', '.join(VARIANTS), variant))
  return variant


def input_needs(params):
  """6 x batch_size labeled images and batch_size proxy source images."""
  batch = params['batch_size']
  if _variant(params) == 'ssl':
    return needs.InputNeeds(
        batch_size=NUM_PROXY_LABELS * batch, labeled_view='sesemi',
        unlabeled_batch=batch, proxy='unlabeled', proxy_batch=batch,
        unlabeled_keeps_labeled=params['unlabeled_keeps_labeled'])
  return needs.InputNeeds(batch_size=NUM_PROXY_LABELS * batch,
                          labeled_view='sesemi', proxy='labeled',
                          proxy_batch=batch)


def train_steps(params, counts):
  """`(pool // batch_size) * epochs`; the pool: docs/algorithms.md.

  Args:
    params: resolved params.
    counts: dict part -> number of images (`labeled`, `unlabeled`,
      `train`, ...), as in `input_pipeline.sources.DataSource.counts`.
  """
  if _variant(params) == 'ssl':
    pool = counts['unlabeled']
    # A plain dataset name has labeled = unlabeled = the whole train split;
    # the pipeline then adds no labeled files to the pool (sources.py).
    same_part = counts['labeled'] == counts['unlabeled'] == counts['train']
    if params['unlabeled_keeps_labeled'] and not same_part:
      pool += counts['labeled']
  else:
    pool = counts['labeled']
  return (pool // params['batch_size']) * params['epochs']


def train_losses(features, labels, params, model):
  """Supervised plus proxy cross-entropy (weights 1 and 1), batch means.

  Batch-norm moving statistics are updated from the supervised branch only
  (`LossResult.update_ops`): they serve inference on upright, unflipped
  class images, which the rotated and flipped proxy batch is not. Both
  branches normalise with their own batch moments in training
  (docs/training_choices.md).
  """
  logits, update_ops = base.ops_created_by(model.logits, features['image'],
                                           True)
  proxy_logits = model.head(
      model.embed(features['proxy_image'], training=True), NUM_PROXY_LABELS,
      'proxy', training=True)
  xe = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits))
  xe_proxy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=features['proxy_label'], logits=proxy_logits))
  terms = collections.OrderedDict([('xe', xe), ('xe_proxy', xe_proxy)])
  return base.LossResult(xe + xe_proxy, terms, update_ops=update_ops)
