"""The one Estimator model_fn: the algorithm's losses, then the spec builder.

What each mode builds: docs/architecture.md.
"""

import tensorflow.compat.v1 as tf

from model_fns import base
from model_fns import registry
from model_fns import spec


def _model_fn(features, labels, mode, params, network_fn):
  model = base.Model(params, network_fn=network_fn)
  if mode == tf.estimator.ModeKeys.TRAIN:
    algorithm = registry.get(params['algorithm'])
    if labels is None:
      labels = features['label']
    losses = algorithm.train_losses(features, labels, params, model)
    return spec.build_train_spec(losses, params, features)
  if mode == tf.estimator.ModeKeys.EVAL:
    return spec.build_eval_spec(features, labels, params, model)
  return spec.build_predict_spec(features, params, model)


def model_fn(features, labels, mode, params):
  """`tf.estimator` model_fn; the trunk is `networks.get(params['network'])`."""
  return _model_fn(features, labels, mode, params, network_fn=None)


def model_fn_with_network(network_fn):
  """A model_fn like `model_fn` whose trunk is `network_fn` (tests).

  Args:
    network_fn: `build(images, training, params) -> embedding [B, D]`.
  """

  def fn(features, labels, mode, params):
    return _model_fn(features, labels, mode, params, network_fn=network_fn)

  return fn
