"""Running statistics and adaptive pseudo-label weights of ReMixMatch,
FlexMatch, FreeMatch and SoftMatch, written once.

State variables, cross-replica sums and update order: docs/algorithms.md.
"""

import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import base

STATE_SCOPE = 'ssl_state'
_EPS = 1e-6


def state_variable(name, shape, initial):
  """The non-trainable float32 variable `ssl_state/<name>`, filled with `initial`.

  MEAN aggregation: under a mirrored strategy each replica assigns the same
  value (computed from cross-replica sums), whose mean is that value.
  A resource variable: its reads are ordered with its assigns (a TF1 ref
  variable's read aliases the buffer, and a step could see its own update).
  """
  with tf.variable_scope(STATE_SCOPE, reuse=tf.AUTO_REUSE):
    return tf.get_variable(
        name, shape=shape, dtype=tf.float32,
        initializer=tf.constant_initializer(initial), trainable=False,
        collections=[tf.GraphKeys.GLOBAL_VARIABLES], use_resource=True,
        aggregation=tf.VariableAggregation.MEAN)


def _replica_context():
  """The replica context of a strategy with > 1 replicas in sync, or None."""
  if not tf.distribute.has_strategy():
    return None
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync <= 1:
    return None
  return context


def _replica_sum(context, tensor):
  """Sum over the replicas in sync, from the cross-replica context.

  Not `ReplicaContext.all_reduce`: in TF 1.15 graph mode it wraps the
  reduction in a custom gradient that looks up every variable the input
  depends on by name, and fails on a mirrored state variable's replica copy
  (`ssl_state/..../replica_1`). The statistics need no gradient.
  """

  def merge(strategy, value):
    return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

  return context.merge_call(merge, args=(tf.stop_gradient(tensor),))


def cross_replica_sum(tensor, process_sum=None):
  """`tensor` summed over the replicas / processes of the step (see above).

  `process_sum`: the model's sum over processes (`base.Model.process_sum`,
  Ascend ranks), or None.
  """
  context = _replica_context()
  if context is not None:
    return _replica_sum(context, tensor)
  return tensor if process_sum is None else process_sum(tensor)


def global_mean(values, process_sum=None):
  """Mean over axis 0 of `values` `[N, ...]` across every replica's batch."""
  values = tf.cast(values, tf.float32)
  count = tf.cast(tf.shape(values)[0], tf.float32)
  return (cross_replica_sum(tf.reduce_sum(values, axis=0), process_sum) /
          cross_replica_sum(count, process_sum))


def global_mean_and_variance(values, process_sum=None):
  """(mean, unbiased variance) of a `[N]` vector across every replica's batch."""
  values = tf.cast(values, tf.float32)
  n = tf.cast(tf.shape(values)[0], tf.float32)
  sums = cross_replica_sum(tf.stack([n, tf.reduce_sum(values),
                                     tf.reduce_sum(tf.square(values))]),
                           process_sum)
  count, total, squares = sums[0], sums[1], sums[2]
  mean = total / count
  variance = (squares - count * tf.square(mean)) / tf.maximum(count - 1., 1.)
  return mean, tf.maximum(variance, 0.)


def replica_gather(values):
  """Concatenation over the in-sync replicas of each one's `values` `[N, ...]`.

  Without a multi-replica strategy, `values` itself. Under one, each replica
  places its rows in its own slot of a zero tensor and the slots are summed
  (an all-gather made of the all-reduce every strategy has); the result,
  float32, is the same on every replica. Exact for integers below 2**24.
  """
  values = tf.cast(values, tf.float32)
  context = _replica_context()
  if context is None:
    return values
  replicas = context.num_replicas_in_sync
  slot = tf.one_hot(context.replica_id_in_sync_group, replicas)
  slot = tf.reshape(slot, [replicas] + [1] * values.shape.ndims)
  summed = _replica_sum(context, slot * values[None])
  shape = values.shape.as_list()
  return tf.reshape(summed, [replicas * shape[0]] + shape[1:])


def ema_update(variable, batch_value, momentum):
  """`momentum * variable + (1 - momentum) * batch_value`; (new, assign op)."""
  new = (momentum * variable.read_value() +
         (1. - momentum) * tf.stop_gradient(batch_value))
  return new, variable.assign(new)


def ema_update_first_set(variable, batch_value, momentum):
  """Like `ema_update`, but the first update sets the variable to the batch.

  For distributions initialised to zeros: a variable summing to 0 has never
  been updated (USB's DistAlignEMAHook starts p_model at the first batch's
  mean).
  """
  batch_value = tf.stop_gradient(batch_value)
  old = variable.read_value()
  new = tf.where(tf.reduce_sum(old) > 0.,
                 momentum * old + (1. - momentum) * batch_value,
                 batch_value)
  return new, variable.assign(new)


def buffer_mean_update(buffer, batch_value):
  """Mean over the last N batches (ReMixMatch's `PMovingAverage`).

  `buffer` is a `[N, ...]` state variable (the N most recent batch values,
  initially filled with a prior); the oldest row is dropped and
  `batch_value` appended. Returns (mean of the new buffer, assign op).
  """
  new = tf.concat([buffer.read_value()[1:],
                   tf.stop_gradient(batch_value)[None]], axis=0)
  return tf.reduce_mean(new, axis=0), buffer.assign(new)


def align(probs, p_target, p_model):
  """Distribution alignment: `probs * (p_target + eps) / (p_model + eps)`.

  Rows renormalised to sum 1 (ReMixMatch; SoftMatch's uniform alignment
  with `p_target` = 1/classes). eps = 1e-6 as in both references.
  """
  scaled = probs * (p_target + _EPS) / (p_model + _EPS)
  return scaled / tf.reduce_sum(scaled, axis=-1, keepdims=True)


class PerExampleState(object):
  """One float32 value per unlabeled record, addressed by its `index`.

  FlexMatch's "last confident prediction" of every unlabeled image: a state
  variable of `index_range + 1` slots, each -1 (never selected) or a class;
  the extra last slot receives the writes of examples that are not
  selected, so every update has the batch's static shape. Under a mirrored
  strategy the indices and values of every replica are gathered first and
  every replica applies all of them (copies stay identical); on Ascend each
  rank keeps the slots of its own input shard and the class counts are
  summed across ranks (the shards are disjoint).
  """

  def __init__(self, name, index_range, initial=-1.):
    if index_range < 1:
      raise ValueError('per-example state needs a positive index range, '
                       'got %r' % (index_range,))
    self.index_range = int(index_range)
    self.variable = state_variable(name, [self.index_range + 1], initial)

  def values(self):
    """The `[index_range]` values (without the spare slot)."""
    return self.variable.read_value()[:self.index_range]

  def class_counts(self, num_classes, process_sum=None):
    """float32 `[num_classes]`: how many slots hold each class.

    Summed across processes by `process_sum` (Ascend ranks); a mirrored
    strategy's copies already hold every replica's updates.
    """
    ids = tf.cast(self.values(), tf.int32)
    ids = tf.where(ids >= 0, ids, tf.fill(tf.shape(ids), num_classes))
    counts = tf.math.unsorted_segment_sum(
        tf.ones_like(ids, tf.float32), ids, num_classes + 1)[:num_classes]
    if _replica_context() is None and process_sum is not None:
      counts = process_sum(counts)
    return counts

  def update(self, index, values, selected, after=()):
    """Sets slot `index[i]` to `values[i]` where `selected[i]`; the assign op.

    Runs after the ops in `after` (the reads of the previous state).
    """
    index = replica_gather(index)
    values = replica_gather(values)
    selected = replica_gather(tf.cast(selected, tf.float32)) > 0.5
    slots = tf.where(selected, tf.cast(index, tf.int32),
                     tf.fill(tf.shape(index), self.index_range))
    with tf.control_dependencies(list(after)):
      new = tf.tensor_scatter_nd_update(self.variable.read_value(),
                                        slots[:, None], values)
      return self.variable.assign(new)


def flexmatch_class_weights(counts, pool_size, warmup=True):
  """FlexMatch's learning effects beta(c) from the per-class counts sigma(c).

  beta(c) = sigma(c) / max(max_c sigma, N - sum sigma) with threshold
  warm-up (`warmup`; N - sum sigma is the number of unlabeled images never
  selected), else sigma(c) / max_c sigma; 0 while nothing was selected.
  """
  denominator = tf.reduce_max(counts)
  if warmup:
    denominator = tf.maximum(denominator,
                             float(pool_size) - tf.reduce_sum(counts))
  return tf.where(denominator > 0., counts / tf.maximum(denominator, 1.),
                  tf.zeros_like(counts))


def flexmatch_thresholds(beta, confidence):
  """Per-class thresholds tau * M(beta) with the convex M(x) = x / (2 - x)."""
  return confidence * beta / (2. - beta)


def class_threshold_mask(probs, thresholds):
  """1.0 where `max_c probs >= thresholds[argmax_c probs]`. No gradient."""
  probs = tf.stop_gradient(probs)
  threshold = tf.gather(thresholds, tf.argmax(probs, axis=-1))
  return tf.cast(tf.reduce_max(probs, axis=-1) >= threshold, tf.float32)


def freematch_thresholds(global_threshold, p_model):
  """FreeMatch's tau_t(c) = p_model(c) / max_c p_model * tau_t."""
  return global_threshold * p_model / tf.reduce_max(p_model)


def soft_weights(max_probs, mean, variance, n_sigma):
  """SoftMatch's truncated Gaussian weights.

  1 where `max_probs >= mean`, else
  exp(-(max_probs - mean)^2 / (2 * variance / n_sigma^2)). No gradient.
  """
  below = tf.minimum(tf.stop_gradient(max_probs) - mean, 0.)
  return tf.exp(-tf.square(below) /
                (2. * tf.maximum(variance, 1e-12) / float(n_sigma) ** 2))


def _sum_normalize(x):
  return x / tf.maximum(tf.reduce_sum(x, axis=-1, keepdims=True), 1e-12)


def _safe_inverse(x):
  """1 / x where x > 0, else 0."""
  return tf.where(x > 0., 1. / tf.maximum(x, 1e-12), tf.zeros_like(x))


def fairness_loss(mask, probs_strong, p_model, label_hist):
  """FreeMatch's self-adaptive fairness term L_f.

  Over the unlabeled examples with mask 1: p_bar = their mean strong-view
  prediction, h_bar = the histogram of their strong-view argmax; with the
  running p_model and label_hist, L_f = -H(SumNorm(p_model / label_hist),
  SumNorm(p_bar / h_bar)) = sum_c a_c log(b_c + 1e-12) (the paper's formula
  as the USB reference computes it; 1/0 read as 0). Gradients flow through
  p_bar only. 0 when no example is kept.
  """
  mask = tf.stop_gradient(mask)
  kept = tf.reduce_sum(mask)
  classes = tf.compat.dimension_value(probs_strong.shape[-1])
  mean_s = tf.reduce_sum(mask[:, None] * probs_strong, 0) / tf.maximum(kept,
                                                                       1.)
  hist_s = tf.reduce_sum(
      mask[:, None] * tf.one_hot(tf.argmax(probs_strong, -1), classes), 0)
  hist_s = tf.stop_gradient(hist_s / tf.maximum(kept, 1.))
  target = _sum_normalize(tf.stop_gradient(p_model) *
                          _safe_inverse(tf.stop_gradient(label_hist)))
  predicted = _sum_normalize(mean_s * _safe_inverse(hist_s))
  loss = tf.reduce_sum(target * tf.log(predicted + 1e-12))
  return tf.where(kept > 0., loss, 0.)


def weak_strong_logits(features, model):
  """FixMatch's one training-mode forward pass over labeled, weak, strong.

  Returns:
    (logits_x [B, C], logits_weak [U, C], logits_strong [U, C], the
    batch-norm update ops of that pass).
  """
  images = features['image']
  weak, strong = tf.unstack(features['unlabeled_views'], axis=1)
  batch = tf.compat.dimension_value(images.shape[0])
  logits, update_ops = base.ops_created_by(
      model.logits, tf.concat([images, weak, strong], axis=0), True)
  logits_weak, logits_strong = tf.split(logits[batch:], 2)
  return logits[:batch], logits_weak, logits_strong, update_ops


def mean_xe(labels, logits, weights=None):
  """Mean over the batch of `weights *` sparse cross-entropy (weights 1)."""
  xe = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(labels, tf.int64), logits=logits)
  if weights is not None:
    xe *= weights
  return tf.reduce_mean(xe)


def check_momentum(params):
  """Raises ValueError unless `stats_momentum` is in [0, 1)."""
  if not 0 <= params['stats_momentum'] < 1:
    raise ValueError('--stats_momentum must be in [0, 1), got %r'
                     % params['stats_momentum'])


def check_fixmatch_like(params):
  """Raises ValueError naming the flag: `uratio` >= 1, `confidence` in [0, 1]."""
  if params['uratio'] < 1:
    raise ValueError('--uratio must be at least 1, got %r' % params['uratio'])
  if not 0 <= params['confidence'] <= 1:
    raise ValueError('--confidence must be in [0, 1], got %r'
                     % params['confidence'])


def fixmatch_like_needs(params, **extra):
  """B labeled + uratio * B unlabeled images in ('weak', 'strong') views."""
  return needs.InputNeeds(
      batch_size=params['batch_size'], labeled_view=params['labeled_view'],
      unlabeled_ratio=params['uratio'], unlabeled_views=('weak', 'strong'),
      unlabeled_keeps_labeled=params['unlabeled_keeps_labeled'], **extra)
