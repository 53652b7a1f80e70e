"""Graph ops shared by the MixMatch family (guessing, sharpening, MixUp,
interleaving, ramps, masks), each tested against numpy.

Conventions: docs/architecture.md; the algorithms: docs/algorithms.md.
"""

import collections
import math

import tensorflow.compat.v1 as tf

from model_fns import base
from model_fns import spec

# Settings every libml algorithm (MixMatch and its baselines) shares: Adam
# 0.002, decoupled weight decay 0.02 (times lr), EMA 0.999, WRN-28-2 (libml
# ResNet, filters 32, repeat 4, scales auto), batch 64, 1024 epochs of 65536
# labeled images (train_kimg 65536), images scaled to [-1, 1], and an
# unlabeled pool without the labeled images.
LIBML_DEFAULTS = {
    'network': 'resnet',
    'filters': 32,
    'repeat': 4,
    'scales': 0,
    'normalization': 'minus_one_one',
    'batch_size': 64,
    'epochs': 1024,
    'optimizer': 'adam',
    'lr': 0.002,
    'lr_schedule': 'constant',
    'weight_decay': 0.02,
    'weight_decay_l2': 0.0,
    'ema_decay': 0.999,
    'unlabeled_keeps_labeled': False,
    'labeled_view': 'weak',
}

TSA_SCHEDULES = ('none', 'linear', 'exp', 'log')
# UDA's TSA scale: exp(-5) ~ 0.7% of the way at the start of 'exp'.
_TSA_SCALE = 5.


def split_views(unlabeled_views):
  """Unlabeled views: `[U,V,H,W,C]` -> a list of V tensors `[U,H,W,C]`."""
  return tf.unstack(unlabeled_views, axis=1)


def sharpen(p, temperature):
  """`p ** (1 / temperature)` renormalised over the last axis."""
  powered = tf.pow(p, 1. / temperature)
  return powered / tf.reduce_sum(powered, axis=-1, keepdims=True)


def guess_labels(model, views, temperature):
  """MixMatch's label guess for the unlabeled batch.

  Runs the classifier in training mode on each view separately (as libml
  does, so each view has its own batch-norm statistics), averages the
  softmax over the views, sharpens with `temperature` and stops gradients.

  Args:
    model: `base.Model`.
    views: list of K tensors `[U,H,W,C]` (augmentations of the same images).
    temperature: sharpening temperature T.

  Returns:
    float32 `[U, classes]` targets, rows summing to 1.
  """
  probs = [tf.nn.softmax(model.logits(view, training=True)) for view in views]
  mean = tf.add_n(probs) / float(len(probs))
  return tf.stop_gradient(sharpen(mean, temperature))


def mixup(x, y, beta, seed=None):
  """MixUp of every example with a random partner of the same batch.

  `lam ~ Beta(beta, beta)` per example (drawn as `g1 / (g1 + g2)` with
  `g1, g2 ~ Gamma(beta)`), `lam <- max(lam, 1 - lam)` so the mixed example
  stays closest to its own input, partner = a random permutation of the
  batch (an example may be its own partner), and

      x' = lam * x + (1 - lam) * x[perm],   y' = lam * y + (1 - lam) * y[perm].

  Args:
    x: float32 `[N, ...]` inputs (static rank).
    y: float32 `[N, classes]` targets.
    beta: Beta distribution parameter (> 0).
    seed: optional op seed (draws stay reproducible under a graph seed).

  Returns:
    (x', y', lam, perm): mixed inputs and targets, lam float32 `[N]`,
    perm int32 `[N]`.
  """
  n = tf.shape(x)[0]
  seeds = (None, None, None) if seed is None else (seed, seed + 1, seed + 2)
  g1 = tf.random.gamma([n], alpha=beta, seed=seeds[0])
  g2 = tf.random.gamma([n], alpha=beta, seed=seeds[1])
  # Both draws can underflow to 0 for tiny beta: lam is then 0 -> 1 below.
  lam = g1 / tf.maximum(g1 + g2, 1e-30)
  lam = tf.maximum(lam, 1. - lam)
  perm = tf.random.shuffle(tf.range(n), seed=seeds[2])

  def mix(t):
    lam_t = tf.reshape(lam, [-1] + [1] * (t.shape.ndims - 1))
    return lam_t * t + (1. - lam_t) * tf.gather(t, perm)

  return mix(x), mix(y), lam, perm


def interleave_offsets(batch, num_groups):
  """Boundaries of `num_groups` near-equal slices of `batch` rows (libml).

  The remainder goes to the last slices. Returns `num_groups + 1` ints.
  """
  groups = [batch // num_groups] * num_groups
  for i in range(batch - sum(groups)):
    groups[-i - 1] += 1
  offsets = [0]
  for g in groups:
    offsets.append(offsets[-1] + g)
  return offsets


def interleave(xy, batch):
  """libml's interleave: spreads the first batch's rows over all batches.

  `xy` is a list of n + 1 tensors of `batch` rows each (the labeled batch
  first). Each is cut into n + 1 slices; slice i of batch 0 is swapped with
  slice i of batch i (i = 1..n). Forward batch 0 then holds a share of every
  batch, so its batch-norm statistics (the only ones MixMatch keeps) are
  representative of the whole step. The map is its own inverse: call it
  again on the per-batch outputs to restore the original order.

  Args:
    xy: list of tensors, each with static or dynamic first dimension `batch`.
    batch: rows per tensor (a Python int).

  Returns:
    List of tensors with the same shapes.
  """
  n = len(xy) - 1
  offsets = interleave_offsets(batch, n + 1)
  pieces = [[v[offsets[p]:offsets[p + 1]] for p in range(n + 1)] for v in xy]
  for i in range(1, n + 1):
    pieces[0][i], pieces[i][i] = pieces[i][i], pieces[0][i]
  return [tf.concat(p, axis=0) for p in pieces]


def unlabeled_weight(global_step, batch_size, w_match, warmup_kimg):
  """MixMatch's ramp: `w_match * clip(step * batch / (kimg * 1024), 0, 1)`.

  kimg is `warmup_kimg`; libml counts labeled images (step * batch_size).
  `warmup_kimg <= 0` means no ramp.
  """
  if warmup_kimg <= 0:
    return tf.constant(float(w_match))
  images = tf.cast(global_step, tf.float32) * float(batch_size)
  return float(w_match) * tf.clip_by_value(
      images / (float(warmup_kimg) * 1024.), 0., 1.)


def position_ramp(global_step, train_steps, warmup_pos):
  """libml baselines' ramp: `clip(step / (warmup_pos * train_steps), 0, 1)`.

  `warmup_pos` is the fraction of training (0.4 in libml) at which the
  consistency weight reaches its full value; `warmup_pos <= 0` means no
  ramp.

  Raises:
    ValueError: a ramp is asked for without a positive `train_steps`.
  """
  if warmup_pos <= 0:
    return tf.constant(1.)
  if train_steps <= 0:
    raise ValueError('warmup_pos needs a positive train_steps (set '
                     '--train_steps or --epochs)')
  step = tf.cast(global_step, tf.float32)
  return tf.clip_by_value(step / (float(warmup_pos) * float(train_steps)),
                          0., 1.)


def training_progress(global_step, train_steps):
  """`clip(step / train_steps, 0, 1)`; raises ValueError if train_steps <= 0."""
  if train_steps <= 0:
    raise ValueError('this schedule needs a positive train_steps (set '
                     '--train_steps or --epochs)')
  return tf.clip_by_value(
      tf.cast(global_step, tf.float32) / float(train_steps), 0., 1.)


def tsa_threshold(schedule, progress, num_classes):
  """Training-signal-annealing threshold (UDA, Xie et al. 2019).

  With t = `progress` in [0, 1]: 'linear' a = t, 'exp' a = exp((t - 1) * 5),
  'log' a = 1 - exp(-t * 5); threshold = a * (1 - 1/K) + 1/K, so it moves
  from about 1/K to 1 over training. 'none' returns None (no annealing;
  `tsa_mask` then keeps everything).

  Raises:
    ValueError: unknown schedule.
  """
  if schedule not in TSA_SCHEDULES:
    raise ValueError('tsa must be one of %s, got %r'
                     % (', '.join(TSA_SCHEDULES), schedule))
  if schedule == 'none':
    return None
  t = tf.cast(progress, tf.float32)
  if schedule == 'linear':
    alpha = t
  elif schedule == 'exp':
    alpha = tf.exp((t - 1.) * _TSA_SCALE)
  else:
    alpha = 1. - tf.exp(-t * _TSA_SCALE)
  start = 1. / num_classes
  return alpha * (1. - start) + start


def tsa_mask(probs, targets, threshold):
  """1.0 where the probability of the target, sum_c y_c p_c, is < threshold.

  This is the intended TSA for MixUp targets: an example's supervised loss
  counts only while the probability the model gives its (mixed) label is
  below the threshold. The RealMix reference compares against
  `logits * threshold` instead, which does not anneal anything; this
  function does the intended thing. `threshold=None` (schedule 'none') keeps
  every example. The mask carries no gradient.

  Args:
    probs: float32 `[N, classes]` softmax of the model.
    targets: float32 `[N, classes]` (one-hot or mixed) labels.
    threshold: scalar tensor or None.

  Returns:
    float32 `[N]` of 0/1.
  """
  if threshold is None:
    return tf.ones_like(probs[:, 0])
  p_target = tf.reduce_sum(targets * probs, axis=-1)
  return tf.stop_gradient(tf.cast(p_target < threshold, tf.float32))


def masked_mean(values, mask):
  """`sum(values * mask) / max(sum(mask), 1)` (UDA's normalisation)."""
  return tf.reduce_sum(values * mask) / tf.maximum(tf.reduce_sum(mask), 1.)


def percentile_mask(probs, percent):
  """RealMix's out-of-distribution mask over one batch.

  Drops the `floor(N * percent)` examples with the lowest maximum softmax
  probability (ties broken by position) and keeps the rest. `percent <= 0`
  keeps everything. (The reference thresholds at the sorted value at that
  index with a strict '>', which also drops that example and every tie; this
  drops exactly the stated fraction.) No gradient.

  Args:
    probs: float32 `[N, classes]`.
    percent: Python float in (-inf, 1).

  Returns:
    float32 `[N]` of 0/1.

  Raises:
    ValueError: `percent >= 1` (it would drop the whole batch).
  """
  if percent >= 1:
    raise ValueError('percent_mask must be < 1, got %r' % percent)
  if percent <= 0:
    return tf.ones_like(probs[:, 0])
  confidence = tf.reduce_max(probs, axis=-1)
  n = tf.shape(confidence)[0]
  dropped = tf.cast(tf.floor(tf.cast(n, tf.float32) * percent), tf.int32)
  order = tf.argsort(confidence, stable=True)
  rank = tf.scatter_nd(order[:, None], tf.range(n), [n])
  return tf.stop_gradient(tf.cast(rank >= dropped, tf.float32))


def confidence_mask(probs, threshold):
  """FixMatch's mask: 1.0 where `max_c probs >= threshold`. No gradient."""
  return tf.stop_gradient(
      tf.cast(tf.reduce_max(probs, axis=-1) >= threshold, tf.float32))


def kl_divergence_from_logits(p_logits, q_logits):
  """Per-example KL(p || q) of the softmax distributions, `[N]`."""
  log_p = tf.nn.log_softmax(p_logits)
  return tf.reduce_sum(tf.exp(log_p) * (log_p - tf.nn.log_softmax(q_logits)),
                       axis=-1)


def entropy_from_logits(logits):
  """Per-example entropy of the softmax distribution, `[N]`."""
  log_p = tf.nn.log_softmax(logits)
  return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)


def _unit_l2(d):
  """Scales each example of `d` to L2 norm 1 (max-abs first, for range)."""
  axes = list(range(1, d.shape.ndims))
  d /= 1e-12 + tf.reduce_max(tf.abs(d), axes, keepdims=True)
  return d / tf.sqrt(1e-6 + tf.reduce_sum(tf.square(d), axes, keepdims=True))


def vat_perturbation(logits_fn, x, logits, xi, eps, iterations=1, seed=None):
  """VAT's adversarial perturbation (Miyato et al. 2018), power iteration.

  Starts from a Gaussian direction d, and `iterations` times sets
  d <- grad_d KL(softmax(logits) || softmax(logits_fn(x + xi * d/|d|))).
  Returns `eps * d / |d|` per example (L2 norm `eps`), without gradient.

  Args:
    logits_fn: maps inputs shaped like `x` to logits.
    x: float32 `[N, ...]` inputs.
    logits: `[N, classes]` logits of `x` (treated as constant).
    xi: finite-difference step (libml 1e-6).
    eps: norm of the returned perturbation.
    iterations: power iterations (>= 1).
    seed: optional op seed of the random start.

  Returns:
    float32 tensor shaped like `x`.
  """
  target = tf.stop_gradient(logits)
  d = tf.random.normal(tf.shape(x), seed=seed)
  for _ in range(iterations):
    d = xi * _unit_l2(d)
    kl = kl_divergence_from_logits(target, logits_fn(x + d))
    d = tf.stop_gradient(tf.gradients(tf.reduce_mean(kl), [d])[0])
  return eps * _unit_l2(d)


def teacher_logits(model, images):
  """Logits of the EMA "teacher" of the model (Mean Teacher, ICT).

  The teacher is the spec builder's EMA model, as in libml: the trainable
  weights are replaced by the shadow variables of `spec.training_ema` (decay
  `ema_decay`, names `<variable>/ExponentialMovingAverage`), the very
  averages eval reports as `ema/accuracy` and export serves. It runs in
  training mode (batch statistics, as in libml) and its gradients are
  stopped. In a training step it reads the averages as of before the step;
  `spec.build_train_spec` updates them from the post-step weights.

  Args:
    model: `base.Model` whose variables already exist (call `model.logits`
      on the labeled batch first), at the top-level variable scope.
    images: `[N,H,W,C]` teacher input.

  Returns:
    float32 `[N, classes]` teacher logits without gradient.
  """
  getter = spec.ema_getter(spec.training_ema(model))
  with tf.variable_scope(tf.get_variable_scope(), custom_getter=getter,
                         reuse=True):
    return tf.stop_gradient(model.logits(images, training=True))


def labeled_xe(features, labels, model):
  """libml baselines' supervised term, from the step's first forward pass.

  Returns:
    (mean CE of `labels` under the labeled batch's logits, the batch-norm
    update ops of that pass: libml keeps only these).
  """
  logits, update_ops = base.ops_created_by(model.logits, features['image'],
                                           True)
  xe = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(labels, tf.int64), logits=logits))
  return xe, update_ops


def one_hot(labels, num_classes):
  """float32 one-hot targets from int labels."""
  return tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)


def softmax_xe(targets, logits):
  """Per-example softmax cross-entropy with (soft) `targets`, `[N]`."""
  return tf.nn.softmax_cross_entropy_with_logits_v2(
      labels=tf.stop_gradient(targets), logits=logits)


def check_fraction(name, value):
  """Raises ValueError unless 0 <= value <= 1 (`name` is the flag)."""
  if not 0 <= value <= 1:
    raise ValueError('--%s must be in [0, 1], got %r' % (name, value))


def check_teacher_decay(params):
  """Raises ValueError unless `ema_decay` (an EMA teacher's) is in (0, 1)."""
  if not 0 < params['ema_decay'] < 1:
    raise ValueError('%s needs --ema_decay in (0, 1) for its teacher, got %r'
                     % (params['algorithm'], params['ema_decay']))


def check_positive(name, value):
  """Raises ValueError unless value > 0 and finite (`name` is the flag)."""
  if not value > 0 or math.isinf(value):
    raise ValueError('--%s must be positive, got %r' % (name, value))


def check_tsa(params):
  """Raises ValueError for an unknown `tsa` schedule, or one without a
  training length to anneal over."""
  if params['tsa'] not in TSA_SCHEDULES:
    raise ValueError('--tsa must be one of %s, got %r'
                     % (', '.join(TSA_SCHEDULES), params['tsa']))
  if params['tsa'] != 'none' and params['train_steps'] <= 0:
    raise ValueError('--tsa=%s needs the training length (--train_steps or '
                     '--epochs)' % params['tsa'])


def ramped_consistency(xe, name, consistency, params, update_ops):
  """libml's baselines' objective: xe + consistency_weight * ramp * consistency.

  The ramp rises over the first `warmup_pos` of training
  (`position_ramp`); the terms are logged as `xe` and `name`.
  """
  ramp = position_ramp(tf.train.get_or_create_global_step(),
                       params['train_steps'], params['warmup_pos'])
  return base.LossResult(
      xe + float(params['consistency_weight']) * ramp * consistency,
      collections.OrderedDict([('xe', xe), (name, consistency)]),
      update_ops=update_ops, summaries={'monitors/ramp': ramp})
