"""RealMix (Nair et al. 2019; uizard-technologies/realmix `realmix.py`).

MixMatch (see `mixmatch.py`: guess, sharpen, MixUp, interleave, first-batch
batch norm, kimg ramp of `w_match`) plus:

- out-of-distribution masking of L_u (`percent_mask` in (0, 1)): per step,
  the `percent_mask` fraction of mixed unlabeled examples with the lowest
  maximum softmax probability is dropped (`ssl_common.percentile_mask`);
  L_u = sum of kept squared errors / (kept examples * classes), which is
  MixMatch's mean when nothing is dropped. `percent_mask <= 0` (the
  reference's default, -1) turns it off.
- training signal annealing of L_x (`tsa` 'linear' | 'exp' | 'log'; 'none',
  the reference's default, turns it off): a mixed labeled example counts
  while sum_c y_c p_c is below the threshold, which rises from 1/classes to 1
  over `train_steps`; L_x is the mean over counted examples. The reference
  compares the probabilities with `logits * threshold`, which disables the
  annealing in practice; this module does the intended thing
  (`ssl_common.tsa_mask`). Its progress is step / train_steps (the
  reference divides by train_kimg * epochs, mixing units).
- stronger augmentation of the unlabeled images. The reference wrote 50
  cutout/colour-augmented copies of each unlabeled image to disk and then
  applied its usual flip + crop online; here each of the K views is the
  input pipeline's online 'realmix' view (weak flip + crop, colour jitter,
  random cutout), selected by `unlabeled_view` ('weak' gives MixMatch's
  views).

Defaults: the Ascend seed / reference flags: wd 0.02 (decoupled, times lr),
EMA 0.999, beta 0.75, w_match 75, T 0.5, K 2, `resnet` filters 32 repeat 4
scales auto, Adam 0.002, batch 64, 700 epochs of 65536 labeled images.
"""

import collections

import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import base
from model_fns import mixmatch
from model_fns import ssl_common

NAME = 'realmix'

DEFAULTS = dict(mixmatch.DEFAULTS)
DEFAULTS.update({
    'epochs': 700,
    'percent_mask': -1.0,
    'tsa': 'none',
    'unlabeled_view': 'realmix',
})


def _check_params(params):
  mixmatch.check_params(params)
  if params['percent_mask'] >= 1:
    raise ValueError('--percent_mask must be < 1 (a fraction of the batch; '
                     '<= 0 turns masking off), got %r' % params['percent_mask'])
  ssl_common.check_tsa(params)


def input_needs(params):
  """B labeled + B unlabeled images in K `unlabeled_view` views."""
  _check_params(params)
  return needs.InputNeeds(
      batch_size=params['batch_size'], labeled_view=params['labeled_view'],
      unlabeled_ratio=1,
      unlabeled_views=(params['unlabeled_view'],) * params['num_augment'],
      unlabeled_keeps_labeled=params['unlabeled_keeps_labeled'])


def train_losses(features, labels, params, model):
  """TSA-masked L_x + w(step) * OOD-masked L_u.

  Terms 'xe', 'l2u'; summaries 'monitors/w_match', 'monitors/tsa_kept'
  (fraction of labeled examples counted) and 'monitors/ood_kept' (fraction
  of unlabeled examples kept).
  """
  _check_params(params)
  logits_x, targets_x, logits_u, targets_u, update_ops = (
      mixmatch.mixmatch_logits(features, labels, params, model))
  global_step = tf.train.get_or_create_global_step()
  num_classes = params['num_classes']

  threshold = None
  if params['tsa'] != 'none':
    threshold = ssl_common.tsa_threshold(
        params['tsa'],
        ssl_common.training_progress(global_step, params['train_steps']),
        num_classes)
  tsa_kept = ssl_common.tsa_mask(tf.nn.softmax(logits_x), targets_x,
                                 threshold)
  xe = ssl_common.masked_mean(ssl_common.softmax_xe(targets_x, logits_x),
                              tsa_kept)

  probs_u = tf.nn.softmax(logits_u)
  ood_kept = ssl_common.percentile_mask(probs_u, params['percent_mask'])
  squared = tf.reduce_sum(tf.square(targets_u - probs_u), axis=-1)
  l2u = ssl_common.masked_mean(squared, ood_kept) / float(num_classes)

  weight = ssl_common.unlabeled_weight(
      global_step, params['batch_size'], params['w_match'],
      params['warmup_kimg'])
  return base.LossResult(
      xe + weight * l2u, collections.OrderedDict([('xe', xe), ('l2u', l2u)]),
      update_ops=update_ops,
      summaries={'monitors/w_match': weight,
                 'monitors/tsa_kept': tf.reduce_mean(tsa_kept),
                 'monitors/ood_kept': tf.reduce_mean(ood_kept)})
