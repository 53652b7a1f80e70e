"""ReMixMatch (Berthelot et al. 2020; google-research/remixmatch), with
RandAugment standing in for CTAugment.

Losses and defaults: docs/algorithms.md.
"""

import collections

import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import base
from model_fns import ssl_common
from model_fns import ssl_state

NAME = 'remixmatch'

DEFAULTS = dict(ssl_common.LIBML_DEFAULTS)
DEFAULTS.update({
    'beta': 0.75,
    'w_match': 1.5,
    'w_kl': 0.5,
    'w_rot': 0.5,
    'warmup_kimg': 1024,
    'temperature': 0.5,
    'num_strong': 8,
    'dist_align': True,
    'dist_buffer': 128,
})

ROTATIONS = 4
# libml's PData: EMA of the labeled batches' label distribution.
P_DATA_MOMENTUM = 0.999


def _check_params(params):
  if params['num_strong'] < 1:
    raise ValueError('--num_strong must be at least 1, got %r'
                     % params['num_strong'])
  if params['dist_buffer'] < 1:
    raise ValueError('--dist_buffer must be at least 1, got %r'
                     % params['dist_buffer'])
  ssl_common.check_positive('beta', params['beta'])
  ssl_common.check_positive('temperature', params['temperature'])
  for key in ('w_match', 'w_kl', 'w_rot'):
    if params[key] < 0:
      raise ValueError('--%s must not be negative, got %r'
                       % (key, params[key]))


def input_needs(params):
  """B labeled + B unlabeled images in one 'weak' and K 'strong' views."""
  _check_params(params)
  return needs.InputNeeds(
      batch_size=params['batch_size'], labeled_view=params['labeled_view'],
      unlabeled_ratio=1,
      unlabeled_views=('weak',) + ('strong',) * params['num_strong'],
      unlabeled_keeps_labeled=params['unlabeled_keeps_labeled'])


def rotate_quarters(images):
  """(images rotated by k * 90 degrees, labels k): rows i with i % 4 == k.

  The result holds the rows grouped by k (k = 0, 1, 2, 3); labels int64.
  """
  batch = tf.compat.dimension_value(images.shape[0])
  rotated, labels = [], []
  for k in range(ROTATIONS):
    rows = list(range(k, batch, ROTATIONS))
    if rows:
      rotated.append(tf.image.rot90(tf.gather(images, rows), k))
      labels.append(tf.fill([len(rows)], tf.constant(k, tf.int64)))
  return tf.concat(rotated, axis=0), tf.concat(labels, axis=0)


def guess(probs_weak, labels_onehot, params, process_sum=None):
  """(sharpened aligned guess, assign ops updating p_model and p_data).

  Uses the distributions as of before this batch; the updates wait for the
  guess.
  """
  num_classes = params['num_classes']
  probs_weak = tf.stop_gradient(probs_weak)
  aligned = probs_weak
  ops = []
  if params['dist_align']:
    buffer = ssl_state.state_variable(
        'remixmatch_p_model', [params['dist_buffer'], num_classes],
        1. / num_classes)
    p_data_var = ssl_state.state_variable('remixmatch_p_data', [num_classes],
                                          1. / num_classes)
    p_model = tf.reduce_mean(buffer.read_value(), axis=0)
    p_data = p_data_var.read_value()
    aligned = ssl_state.align(probs_weak, p_data, p_model)
  target = tf.stop_gradient(ssl_common.sharpen(aligned,
                                               params['temperature']))
  if params['dist_align']:
    with tf.control_dependencies([target]):
      _, op = ssl_state.buffer_mean_update(
          buffer, ssl_state.global_mean(probs_weak, process_sum))
      ops.append(op)
      _, op = ssl_state.ema_update(
          p_data_var, ssl_state.global_mean(labels_onehot, process_sum),
          P_DATA_MOMENTUM)
      ops.append(op)
  return target, ops


def train_losses(features, labels, params, model):
  """Terms 'xe', 'xeu', 'kl', 'rot'; summaries 'monitors/w_match'."""
  _check_params(params)
  images = features['image']
  batch = tf.compat.dimension_value(images.shape[0])
  views = ssl_common.split_views(features['unlabeled_views'])
  if any(tf.compat.dimension_value(v.shape[0]) != batch for v in views):
    raise ValueError('remixmatch needs as many unlabeled images per view as '
                     'labeled ones (%s): got %s'
                     % (batch, features['unlabeled_views'].shape))
  weak, strong = views[0], views[1:]
  num_classes = params['num_classes']
  targets_x = ssl_common.one_hot(labels, num_classes)

  # Passes whose batch-norm updates are dropped: guess, pre-mixup, rotation.
  target, stat_ops = guess(tf.nn.softmax(model.logits(weak, training=True)),
                           targets_x, params, model.process_sum)
  kl = tf.reduce_mean(ssl_common.softmax_xe(
      target, model.logits(strong[0], training=True)))
  rotated, rotation_labels = rotate_quarters(strong[0])
  rotation_logits = model.head(model.embed(rotated, True), ROTATIONS,
                               'rotation', True)
  rot = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=rotation_labels, logits=rotation_logits))

  unlabeled = [weak] + strong
  mixed_x, mixed_y, _, _ = ssl_common.mixup(
      tf.concat([images] + unlabeled, axis=0),
      tf.concat([targets_x] + [target] * len(unlabeled), axis=0),
      params['beta'])
  pieces = len(unlabeled) + 1
  batches = ssl_common.interleave(tf.split(mixed_x, pieces), batch)
  logits = [model.logits(b, training=True) for b in batches[:-1]]
  last, update_ops = base.ops_created_by(model.logits, batches[-1], True)
  logits = ssl_common.interleave(logits + [last], batch)
  mixed_targets = tf.split(mixed_y, pieces)
  xe = tf.reduce_mean(ssl_common.softmax_xe(mixed_targets[0], logits[0]))
  xeu = tf.reduce_mean(ssl_common.softmax_xe(
      tf.concat(mixed_targets[1:], axis=0), tf.concat(logits[1:], axis=0)))

  ramp = ssl_common.unlabeled_weight(
      tf.train.get_or_create_global_step(), params['batch_size'], 1.,
      params['warmup_kimg'])
  total = (xe + ramp * (float(params['w_match']) * xeu +
                        float(params['w_kl']) * kl) +
           float(params['w_rot']) * rot)
  return base.LossResult(
      total,
      collections.OrderedDict([('xe', xe), ('xeu', xeu), ('kl', kl),
                               ('rot', rot)]),
      update_ops=update_ops + stat_ops,
      summaries={'monitors/w_match': ramp * float(params['w_match'])})

