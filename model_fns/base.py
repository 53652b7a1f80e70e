"""What every algorithm module shares: the model wrapper and the loss record.

The algorithm contract (`Model`, `LossResult`): docs/architecture.md.
"""

import collections

import tensorflow.compat.v1 as tf

from input_pipeline import runtime
from model_fns import networks
from model_fns import registry

MODEL_SCOPE = 'model'

# Libml's unit of training length: an "epoch" is 65536 labeled images.
LIBML_EPOCH_IMAGES = 65536


class LossResult(
    collections.namedtuple('LossResult',
                           ('total', 'terms', 'update_ops', 'summaries'))):
  """An algorithm's training objective.

  Fields:
    total: scalar tensor minimised by the optimizer (without L2; the spec
      builder adds `weight_decay_l2`).
    terms: ordered dict name -> scalar tensor, logged and summarised as
      `losses/<name>` (e.g. 'xe', 'xe_proxy').
    update_ops: None to run every op in `UPDATE_OPS` with the step, or a list
      restricting the batch-norm updates (see `ops_created_by`).
    summaries: None or a dict summary name -> scalar tensor, written with
      `tf.summary.scalar` under exactly that name (e.g. 'monitors/mask').
  """
  __slots__ = ()

  def __new__(cls, total, terms, update_ops=None, summaries=None):
    return super(LossResult, cls).__new__(cls, total, terms, update_ops,
                                          summaries)


class Model(object):
  """The shared trunk plus named dense heads, all under scope 'model'.

  Args:
    params: the resolved params dict (reads `network`, `num_classes`,
      `head_dropout` and whatever the network reads).
    network_fn: optional `build(images, training, params) -> [B, D]` used
      instead of `networks.get(params['network'])` (tests use a tiny one).
  """

  def __init__(self, params, network_fn=None):
    self.params = params
    self._network_fn = network_fn or networks.get(params['network'])

  def embed(self, images, training):
    """Runs the trunk; returns the pooled embedding [B, D]."""
    with tf.variable_scope(MODEL_SCOPE, reuse=tf.AUTO_REUSE):
      return self._network_fn(images, training, self.params)

  def head(self, embedding, units, name, training, dropout=0.):
    """Dense layer `name` (scope model/<name>) on `embedding`.

    Dropout with rate `dropout` is applied to the embedding first, in
    training only.
    """
    with tf.variable_scope(MODEL_SCOPE, reuse=tf.AUTO_REUSE):
      if dropout > 0:
        embedding = tf.layers.dropout(embedding, rate=dropout,
                                      training=training)
      return tf.layers.dense(embedding, units, name=name,
                             kernel_initializer=runtime.dense_initializer())

  def logits(self, images, training):
    """Class logits [B, num_classes]: embed -> dropout -> dense 'classifier'."""
    return self.head(self.embed(images, training), self.params['num_classes'],
                     'classifier', training,
                     dropout=self.params['head_dropout'])


def ops_created_by(fn, *args, **kwargs):
  """Calls `fn(*args, **kwargs)`; returns (its result, the UPDATE_OPS it added).

  For algorithms that keep only one forward pass's batch-norm updates
  (MixMatch keeps the first interleaved batch's): pass the returned list as
  `LossResult.update_ops`.
  """
  before = set(tf.get_collection(tf.GraphKeys.UPDATE_OPS))
  result = fn(*args, **kwargs)
  created = [op for op in tf.get_collection(tf.GraphKeys.UPDATE_OPS)
             if op not in before]
  return result, created


def default_train_steps(params, counts):
  """Number of training steps (the schedule length) for resolved params.

  `params['train_steps']` wins when positive. Otherwise the algorithm module
  named by `params['algorithm']` decides when it defines
  `train_steps(params, counts)` (SESEMI counts epochs over its image pool);
  the fallback is libml's convention, `epochs` units of 65536 labeled images:
  `epochs * 65536 // batch_size`.

  Args:
    params: resolved params dict.
    counts: dict part -> number of images (`labeled`, `unlabeled`, `valid`,
      `test`, `train`), as in `input_pipeline.sources.DataSource.counts`.

  Returns:
    A positive int.

  Raises:
    ValueError: neither `train_steps` nor `epochs` is positive.
  """
  if params['train_steps'] > 0:
    return int(params['train_steps'])
  if params['epochs'] <= 0:
    raise ValueError('set --train_steps or --epochs to a positive value')
  module = registry.get(params['algorithm'])
  if hasattr(module, 'train_steps'):
    steps = module.train_steps(params, counts)
  else:
    steps = params['epochs'] * LIBML_EPOCH_IMAGES // params['batch_size']
  return max(1, int(steps))
