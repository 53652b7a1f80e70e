"""Shared helpers for model_fn tests: params, synthetic features, and
train / eval / predict runs on a tiny network, plus numpy softmax and
cross-entropy. Use: docs/architecture.md.
"""

import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import augment
from model_fns import base
from model_fns import core
from model_fns import hparams
from model_fns import spec
from model_fns.networks import layers

TRAIN = tf.estimator.ModeKeys.TRAIN
EVAL = tf.estimator.ModeKeys.EVAL
PREDICT = tf.estimator.ModeKeys.PREDICT


def tiny_network(images, training, params):
  """conv3x3(4) -> batch norm -> ReLU -> global average pool: [B, 4].

  Built from `networks.layers` like the real networks (same batch norm,
  UPDATE_OPS and BN_MOMENTS), only much smaller.
  """
  with tf.variable_scope('tiny'):
    x = layers.conv2d(images, 4, 3, name='conv')
    x = layers.batch_norm(x, training, params['bn_momentum'], name='bn')
    return tf.reduce_mean(tf.nn.relu(x), axis=[1, 2])


class RecordingModel(base.Model):
  """A `base.Model` that records every head's output, in call order.

  `outputs` is a list of (head name, tensor), e.g. [('classifier', logits),
  ('proxy', proxy_logits)], so a test can fetch the logits an algorithm's
  loss was computed from and recompute the loss in numpy.
  """

  def __init__(self, params, network_fn=tiny_network):
    super(RecordingModel, self).__init__(params, network_fn=network_fn)
    self.outputs = []

  def head(self, embedding, units, name, training, dropout=0.):
    output = super(RecordingModel, self).head(embedding, units, name,
                                              training, dropout=dropout)
    self.outputs.append((name, output))
    return output


def make_params(module, num_classes=10, image_shape=(8, 8, 3), **overrides):
  """COMMON_DEFAULTS < module.DEFAULTS < data facts, test settings < overrides.

  Sets `algorithm` to `module.NAME`, `num_classes`, `image_shape` and
  `train_steps` 100 (so decaying schedules are defined).
  """
  params = dict(hparams.COMMON_DEFAULTS)
  params.update(module.DEFAULTS)
  params.update(algorithm=module.NAME, num_classes=num_classes,
                image_shape=list(image_shape), train_steps=100,
                dataset='synthetic', data_dir='')
  params.update(overrides)
  return params


def synthetic_features(input_needs, params, mode=TRAIN, batch=4, seed=0):
  """A numpy features dict shaped as the input pipeline's (architecture.md).

  Args:
    input_needs: the algorithm's `InputNeeds` (TRAIN only; ignored else).
    params: reads `image_shape` and `num_classes`.
    mode: TRAIN, EVAL (`image`, `label`, `index`, `mask` with the last image
      masked out as padding) or PREDICT (`image`, `index`).
    batch: images per EVAL/PREDICT batch.
    seed: numpy seed.

  Returns:
    dict name -> numpy array. TRAIN adds `unlabeled_views` [U, V, H, W, C]
    and `unlabeled_label` when the needs have unlabeled images and views,
    and `proxy_image` [P*6, H, W, C] / `proxy_label` (0..5 repeated) when
    `proxy` is set.
  """
  rng = np.random.RandomState(seed)
  shape = tuple(params['image_shape'])
  classes = params['num_classes']

  def images(n):
    return rng.normal(size=(n,) + shape).astype(np.float32)

  def labels(n):
    return rng.randint(0, classes, size=n).astype(np.int64)

  if mode != TRAIN:
    features = {'image': images(batch),
                'index': np.arange(batch, dtype=np.int64)}
    if mode == EVAL:
      features['label'] = labels(batch)
      features['mask'] = np.ones(batch, np.float32)
      features['mask'][-1] = 0.
    return features
  features = {'image': images(input_needs.batch_size),
              'label': labels(input_needs.batch_size)}
  views = len(input_needs.unlabeled_views)
  if input_needs.num_unlabeled and views:
    n = input_needs.num_unlabeled
    features['unlabeled_views'] = rng.normal(
        size=(n, views) + shape).astype(np.float32)
    features['unlabeled_label'] = labels(n)
  if input_needs.proxy:
    n = input_needs.proxy_batch * augment.NUM_PROXY
    features['proxy_image'] = images(n)
    features['proxy_label'] = np.tile(
        np.arange(augment.NUM_PROXY, dtype=np.int64), input_needs.proxy_batch)
  return features


def build_spec(features, mode, params, network_fn=tiny_network):
  """Calls the model_fn on constant tensors in the current graph.

  Returns:
    (EstimatorSpec, dict name -> feature tensor).
  """
  tensors = {k: tf.constant(v) for k, v in features.items()}
  if network_fn is None:
    fn = core.model_fn
  else:
    fn = core.make_model_fn(network_fn)
  return fn(tensors, tensors.get('label'), mode, params), tensors


def _logged_tensors():
  """spec.LOG_COLLECTION as short name ('xe', 'loss', 'lr', ...) -> tensor."""
  return {t.op.name.split('/', 1)[1]: t
          for t in tf.get_collection(spec.LOG_COLLECTION)}


def run_train_steps(features, params, steps=2, network_fn=tiny_network,
                    seed=0):
  """Runs `steps` TRAIN steps in a fresh graph and session.

  Returns:
    A list with one dict per step, mapping each logged tensor's short name
    (`spec.LOG_COLLECTION`: the loss terms, 'l2' when on, 'loss', 'lr') to
    its value in that step, computed before the step's update.
  """
  with tf.Graph().as_default():
    tf.set_random_seed(seed)
    estimator_spec, _ = build_spec(features, TRAIN, params, network_fn)
    logged = _logged_tensors()
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      history = []
      for _ in range(steps):
        values, _ = sess.run([logged, estimator_spec.train_op])
        history.append({k: float(v) for k, v in values.items()})
  return history


def evaluate_losses(module, features, params, network_fn=tiny_network,
                    seed=0):
  """Builds `module`'s TRAIN graph and fetches, in one run without a step:

  Returns:
    (logged, outputs, kernels): `logged` maps each logged tensor's short
    name ('xe', 'l2', 'loss', 'lr', ...) to its value; `outputs` is the
    `RecordingModel.outputs` list with numpy values (same dropout sample as
    the losses); `kernels` the values of `spec.kernel_variables()`, so the
    L2 term can be recomputed in numpy.
  """
  with tf.Graph().as_default():
    tf.set_random_seed(seed)
    tensors = {k: tf.constant(v) for k, v in features.items()}
    model = RecordingModel(params, network_fn=network_fn)
    losses = module.train_losses(tensors, tensors['label'], params, model)
    spec.build_train_spec(losses, model, tensors)
    logged = _logged_tensors()
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      logged, outputs, kernels = sess.run(
          [logged, [t for _, t in model.outputs], spec.kernel_variables()])
  names = [name for name, _ in model.outputs]
  return ({k: float(v) for k, v in logged.items()},
          list(zip(names, outputs)), kernels)


def run_eval(features, params, network_fn=tiny_network, seed=0):
  """One EVAL batch with freshly initialised weights; returns metric values.

  Returns:
    dict with 'loss' and every metric name (e.g. 'accuracy').
  """
  with tf.Graph().as_default():
    tf.set_random_seed(seed)
    estimator_spec, _ = build_spec(features, EVAL, params, network_fn)
    metrics = estimator_spec.eval_metric_ops
    with tf.Session() as sess:
      sess.run([tf.global_variables_initializer(),
                tf.local_variables_initializer()])
      loss, _ = sess.run([estimator_spec.loss,
                          [op for _, op in metrics.values()]])
      values = sess.run({k: v for k, (v, _) in metrics.items()})
  values['loss'] = float(loss)
  return values


def run_predict(features, params, network_fn=tiny_network, seed=0):
  """One PREDICT batch with freshly initialised weights.

  Returns:
    (predictions dict name -> numpy array, export_outputs of the spec).
  """
  with tf.Graph().as_default():
    tf.set_random_seed(seed)
    estimator_spec, _ = build_spec(features, PREDICT, params, network_fn)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      predictions = sess.run(estimator_spec.predictions)
  return predictions, estimator_spec.export_outputs


def flat_network(images, training, params):
  """A network without weights: the flattened images are the embedding."""
  del training, params
  return tf.layers.flatten(images)


def softmax(logits):
  """Numpy softmax over the last axis."""
  z = logits - logits.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def sparse_xe(logits, labels):
  """Numpy per-example cross-entropy of integer `labels` under `logits`."""
  log_p = np.log(softmax(logits.astype(np.float64)))
  return -log_p[np.arange(len(labels)), labels]
