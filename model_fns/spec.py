"""The shared spec builder: everything about training that is not a loss.

Optimizer, schedule, weight decay, batch-norm updates, EMA, logged tensors,
metrics and PREDICT/export outputs: docs/architecture.md.
"""

import collections
import math

import tensorflow.compat.v1 as tf

from model_fns import base

LOG_COLLECTION = 'train_log'
OPTIMIZERS = ('sgd', 'adam')
SCHEDULES = ('constant', 'poly', 'cosine')
MAX_IMAGE_SUMMARIES = 3


def learning_rate(global_step, params):
  """The learning rate at `global_step` (the step about to be taken).

  `constant`: lr. `poly` (SESEMI, per step):
  `lr * (1 - step / train_steps) ^ lr_decay_power`. `cosine` (FixMatch):
  `lr * cos(cosine_factor * pi * step / train_steps)`. Progress is clipped to
  1 past `train_steps`. With `warmup_steps > 0` the scheduled value is
  multiplied by `min(1, step / warmup_steps)` (linear warm-up from 0).

  Raises:
    ValueError: unknown `lr_schedule`, or a decaying schedule without a
      positive `train_steps`.
  """
  schedule = params['lr_schedule']
  if schedule not in SCHEDULES:
    raise ValueError('unknown lr_schedule %r; known: %s'
                     % (schedule, ', '.join(SCHEDULES)))
  step = tf.cast(global_step, tf.float32)
  lr = tf.constant(float(params['lr']), tf.float32)
  if schedule != 'constant':
    if params['train_steps'] <= 0:
      raise ValueError('lr_schedule %r needs a positive train_steps'
                       % schedule)
    progress = tf.minimum(step / float(params['train_steps']), 1.)
    if schedule == 'poly':
      lr *= tf.pow(1. - progress, float(params['lr_decay_power']))
    else:
      lr *= tf.cos(float(params['cosine_factor']) * math.pi * progress)
  if params['warmup_steps'] > 0:
    lr *= tf.minimum(step / float(params['warmup_steps']), 1.)
  return lr


def make_optimizer(params, lr):
  """`sgd` (`momentum`, Nesterov if `nesterov`) or `adam` (TF defaults).

  Raises:
    ValueError: unknown `optimizer`.
  """
  name = params['optimizer']
  if name == 'sgd':
    return tf.train.MomentumOptimizer(lr, params['momentum'],
                                      use_nesterov=params['nesterov'])
  if name == 'adam':
    return tf.train.AdamOptimizer(lr)
  raise ValueError('unknown optimizer %r; known: %s'
                   % (name, ', '.join(OPTIMIZERS)))


def kernel_variables():
  """The trainable conv and dense weights ('.../kernel') under scope 'model'.

  Biases and batch-norm parameters are excluded. Networks must therefore name
  their weight variables 'kernel' (tf.layers does). Matched on `v.name`: a
  mirrored variable's `op` is its copy on the current replica's device
  ('.../kernel/replica_1' under tf.distribute).
  """
  return [v for v in tf.trainable_variables(base.MODEL_SCOPE + '/')
          if v.name.rsplit(':', 1)[0].endswith('/kernel')]


def l2_loss(params, variables=None):
  """`weight_decay_l2 * sum_k sum(k ** 2)` over `variables` (default: kernels).

  This is the convention of Keras' `l2(c)` regulariser used by the SESEMI
  reference (`c * sum(w ** 2)`, no 1/2), so SESEMI's 5e-4 is
  `weight_decay_l2=5e-4`. libml/FixMatch add `wd * sum(tf.nn.l2_loss(w))` =
  `wd * sum(w ** 2) / 2`: their wd=5e-4 is `weight_decay_l2=2.5e-4` here.
  """
  if variables is None:
    variables = kernel_variables()
  squares = [tf.reduce_sum(tf.square(v)) for v in variables]
  total = tf.add_n(squares) if squares else tf.constant(0.)
  return float(params['weight_decay_l2']) * total


def decoupled_decay_ops(variables, rate):
  """Ops `v <- v * (1 - rate)` for each variable (rate: float or tensor).

  The spec builder runs them after the optimizer step on `kernel_variables()`
  with `rate = weight_decay * lr` (libml's MixMatch convention).
  """
  return [tf.assign(v, v * (1. - rate)) for v in variables]


def ema_getter(ema):
  """A variable-scope custom getter returning `ema`'s shadow when it has one.

  Variables without a shadow (batch-norm moving statistics) are returned
  unchanged, so the raw and EMA models share them.
  """

  def custom_getter(getter, name, *args, **kwargs):
    # TensorFlow passes the next getter by the keyword 'getter'.
    var = getter(name, *args, **kwargs)
    average = ema.average(var)
    return var if average is None else average

  return custom_getter


def training_ema(model):
  """The model's one EMA of its weights (decay `ema_decay`), `model.ema`.

  Creates the shadow variables (`<variable>/ExponentialMovingAverage`) of
  every trainable variable that exists now and returns the
  `tf.train.ExponentialMovingAverage`; later calls with the same model return
  the same object. `build_train_spec` updates its averages after the
  optimizer step and eval/predict read it, so an algorithm whose loss uses
  the EMA model (Mean Teacher, ICT: `ssl_common.teacher_logits`) reads the
  weights that eval reports and export serves, as of before this step's
  update. Call it at the top-level variable scope (shadow names depend on
  it) after the model's variables exist.

  It warms up with TensorFlow's `num_updates` rule: the update after n
  completed steps (n = the global step) uses the decay
  `min(ema_decay, (1 + n) / (10 + n))`, so a short run's EMA does not keep
  most of the initial weights (without it, 0.999 keeps 0.999^n of them:
  19% after 1,670 steps).

  Raises:
    ValueError: `ema_decay` is not in (0, 1).
  """
  ema = _model_ema(model)
  # Creates the missing shadow variables; the returned update op is unused
  # (build_train_spec makes the one that runs after the step).
  _apply_ema(ema, tf.trainable_variables())
  return ema


def _model_ema(model):
  """`model.ema`, created (without shadow variables) on first use."""
  if model.ema is None:
    decay = model.params['ema_decay']
    if not 0 < decay < 1:
      raise ValueError('the EMA model needs 0 < ema_decay < 1, got %r'
                       % decay)
    model.ema = tf.train.ExponentialMovingAverage(
        decay, num_updates=tf.train.get_or_create_global_step())
  return model.ema


def _apply_ema(ema, variables):
  """`ema.apply(variables)`, run once for all replicas under a strategy.

  In a tf.distribute replica context (the model_fn of a strategy) the
  shadow variables are created and updated from the cross-replica context
  (merge_call): one mirrored shadow per weight, each copy updated from its
  device's copy of the weight, which the synchronous optimizer step keeps
  identical across replicas. Without a strategy this is `ema.apply`.
  """
  context = tf.distribute.get_replica_context()
  if not tf.distribute.has_strategy() or context is None:
    return ema.apply(variables)
  return context.merge_call(lambda _: ema.apply(variables))


def _log_and_summarise(terms, total, lr, summaries, features):
  """Names the logged tensors, fills LOG_COLLECTION and writes summaries."""
  named = collections.OrderedDict(terms)
  named['loss'] = total
  named['lr'] = lr
  with tf.name_scope('train/'):
    for name, value in named.items():
      tf.add_to_collection(LOG_COLLECTION, tf.identity(value, name=name))
  for name, value in terms.items():
    tf.summary.scalar('losses/' + name, value)
  tf.summary.scalar('losses/total', total)
  tf.summary.scalar('lr', lr)
  for name, value in (summaries or {}).items():
    tf.summary.scalar(name, value)
  if features is not None and 'image' in features:
    tf.summary.image('images/labeled', features['image'],
                     max_outputs=MAX_IMAGE_SUMMARIES)


def build_train_spec(losses, model, features=None, wrap_optimizer=None):
  """EstimatorSpec for TRAIN from an algorithm's `LossResult`.

  Args:
    losses: `base.LossResult`.
    model: the `base.Model` the losses were built with; its `params` hold the
      optimizer, schedule, regularisation and EMA keys of
      `hparams.COMMON_DEFAULTS`, and `train_steps` for decaying schedules.
    features: the training features dict; its 'image' is summarised.
    wrap_optimizer: optional `fn(optimizer) -> optimizer` applied before
      `minimize` (Ascend: NPUDistributedOptimizer, NPULossScaleOptimizer).

  Returns:
    `tf.estimator.EstimatorSpec` whose train_op performs the step described
    in docs/architecture.md ("Details by module").
  """
  params = model.params
  global_step = tf.train.get_or_create_global_step()
  lr = learning_rate(global_step, params)
  terms = collections.OrderedDict(losses.terms)
  total = losses.total
  if params['weight_decay_l2'] > 0:
    terms['l2'] = l2_loss(params)
    total += terms['l2']
  _log_and_summarise(terms, total, lr, losses.summaries, features)

  if losses.update_ops is None:
    update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
  else:
    update_ops = list(losses.update_ops)
  optimizer = make_optimizer(params, lr)
  if wrap_optimizer is not None:
    optimizer = wrap_optimizer(optimizer)
  # Every forward read (loss terms, an EMA teacher) happens before any
  # variable is updated, even where a gradient does not need the value.
  with tf.control_dependencies(update_ops + [total] + list(terms.values())):
    last = optimizer.minimize(total, var_list=tf.trainable_variables())
  if params['weight_decay'] > 0:
    with tf.control_dependencies([last]):
      last = tf.group(*decoupled_decay_ops(
          kernel_variables(), float(params['weight_decay']) * lr))
  if params['ema_decay'] > 0:
    ema = _model_ema(model)
    with tf.control_dependencies([last]):
      last = _apply_ema(ema, tf.trainable_variables())
  with tf.control_dependencies([last]):
    train_op = tf.assign_add(global_step, 1)
  return tf.estimator.EstimatorSpec(tf.estimator.ModeKeys.TRAIN, loss=total,
                                    train_op=train_op)


def inference_logits(model, images, with_ema):
  """Inference logits of the raw model and, if `with_ema`, of the EMA one.

  Eval, predict and launch/eval.py read the models through it. The EMA
  shadow variables are created as in training (`training_ema`), so they get
  the training names and are restored from the checkpoint.

  Returns:
    (raw logits `inference/logits`, EMA logits `inference/ema_logits` or
    None).
  """
  raw = tf.identity(model.logits(images, training=False),
                    name='inference/logits')
  if not with_ema:
    return raw, None
  getter = ema_getter(training_ema(model))
  with tf.variable_scope(tf.get_variable_scope(), custom_getter=getter,
                         reuse=True):
    ema_logits = model.logits(images, training=False)
  return raw, tf.identity(ema_logits, name='inference/ema_logits')


def build_eval_spec(features, labels, model):
  """EstimatorSpec for EVAL: raw and EMA accuracy from one pass.

  Metrics: `accuracy` (raw weights) and, only when `ema_decay > 0`,
  `ema/accuracy` (there is no separate EMA model otherwise; launch shows
  '-'). Both are weighted by `features['mask']` (padding of the last batch)
  when present; images with label -1 get weight 0. Loss: the raw model's
  mean cross-entropy over the weighted images. With `model.process_sum`
  (Ascend ranks) the accuracies are summed across processes.
  """
  params = model.params
  if labels is None:
    labels = features['label']
  labels = tf.cast(labels, tf.int64)
  weights = tf.cast(labels >= 0, tf.float32)
  if 'mask' in features:
    weights *= tf.cast(features['mask'], tf.float32)
  safe_labels = tf.maximum(labels, 0)
  raw, ema = inference_logits(model, features['image'],
                              with_ema=params['ema_decay'] > 0)
  xe = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels,
                                                      logits=raw)
  loss = tf.reduce_sum(xe * weights) / tf.maximum(tf.reduce_sum(weights), 1.)
  metrics = {'accuracy': _accuracy(safe_labels, raw, weights, 'accuracy',
                                  model.process_sum)}
  if ema is not None:
    metrics['ema/accuracy'] = _accuracy(safe_labels, ema, weights,
                                        'ema_accuracy', model.process_sum)
  return tf.estimator.EstimatorSpec(tf.estimator.ModeKeys.EVAL, loss=loss,
                                    eval_metric_ops=metrics)


def _accuracy(labels, logits, weights, name, process_sum=None):
  """Weighted accuracy metric, summed across processes by `process_sum`.

  Without `process_sum` this is `tf.metrics.accuracy`. With it, the metric
  keeps its own running totals (local metric variables `total`, `count`
  under scope `name`) and its value is
  `process_sum(total) / process_sum(count)`; the update op's value is this
  process's running accuracy.
  """
  predictions = tf.argmax(logits, axis=1)
  if process_sum is None:
    return tf.metrics.accuracy(labels, predictions, weights=weights)
  correct = tf.cast(tf.equal(labels, predictions), tf.float32)
  with tf.variable_scope(None, default_name=name):
    total, count = [
        tf.Variable(0., trainable=False, name=key,
                    collections=[tf.GraphKeys.LOCAL_VARIABLES,
                                 tf.GraphKeys.METRIC_VARIABLES])
        for key in ('total', 'count')]
  update = tf.div_no_nan(
      tf.assign_add(total, tf.reduce_sum(correct * weights)),
      tf.assign_add(count, tf.reduce_sum(weights)))
  return tf.div_no_nan(process_sum(total), process_sum(count)), update


def build_predict_spec(features, model):
  """EstimatorSpec for PREDICT with `logits`, `probabilities`, `classes`.

  Uses the EMA weights when `ema_decay > 0` and `predict_with_ema`, else the
  raw ones. The same dict is the default serving signature's outputs.
  """
  params = model.params
  raw, ema = inference_logits(
      model, features['image'],
      with_ema=params['ema_decay'] > 0 and params['predict_with_ema'])
  logits = raw if ema is None else ema
  predictions = {
      'logits': logits,
      'probabilities': tf.nn.softmax(logits),
      'classes': tf.argmax(logits, axis=1),
  }
  signatures = tf.saved_model.signature_constants
  return tf.estimator.EstimatorSpec(
      tf.estimator.ModeKeys.PREDICT, predictions=predictions,
      export_outputs={signatures.DEFAULT_SERVING_SIGNATURE_DEF_KEY:
                      tf.estimator.export.PredictOutput(predictions)})
