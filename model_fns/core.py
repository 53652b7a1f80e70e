"""The one Estimator model_fn: the algorithm's losses, then the spec builder.

What each mode builds: docs/architecture.md.
"""

import tensorflow.compat.v1 as tf

from model_fns import base
from model_fns import registry
from model_fns import spec


def _model_fn(features, labels, mode, params, network_fn=None,
              wrap_optimizer=None, process_sum=None):
  model = base.Model(params, network_fn=network_fn, process_sum=process_sum)
  if mode == tf.estimator.ModeKeys.TRAIN:
    algorithm = registry.get(params['algorithm'])
    if labels is None:
      labels = features['label']
    losses = algorithm.train_losses(features, labels, params, model)
    return spec.build_train_spec(losses, model, features, wrap_optimizer)
  if mode == tf.estimator.ModeKeys.EVAL:
    return spec.build_eval_spec(features, labels, model)
  return spec.build_predict_spec(features, model)


def model_fn(features, labels, mode, params):
  """`tf.estimator` model_fn; the trunk is `networks.get(params['network'])`."""
  return _model_fn(features, labels, mode, params)


def make_model_fn(network_fn=None, wrap_optimizer=None, process_sum=None):
  """An Estimator model_fn with what the caller may change.

  Args:
    network_fn: `build(images, training, params) -> embedding [B, D]`;
      default `networks.get(params['network'])`.
    wrap_optimizer: `fn(optimizer) -> optimizer` applied before `minimize`
      (Ascend: distributed gradients, loss scaling).
    process_sum: `fn(tensor) -> tensor` summing over the job's processes
      (Ascend: the HCCL all-reduce), for the eval accuracies and the
      algorithms' running statistics.

  Returns:
    `model_fn(features, labels, mode, params)`: `model_fn` itself when every
    argument is None.
  """
  if network_fn is None and wrap_optimizer is None and process_sum is None:
    return model_fn

  def fn(features, labels, mode, params):
    return _model_fn(features, labels, mode, params, network_fn,
                     wrap_optimizer, process_sum)

  return fn
