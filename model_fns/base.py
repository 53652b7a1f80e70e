"""What every algorithm module shares: the model wrapper and the loss record.

The algorithm contract (`Model`, `LossResult`): docs/architecture.md.
"""

import collections

import tensorflow.compat.v1 as tf

from input_pipeline import runtime
from model_fns import networks

MODEL_SCOPE = 'model'


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
    process_sum: optional `fn(tensor) -> tensor` summing over the job's
      processes (Ascend ranks); statistics that must agree on every process
      pass it to `ssl_state`.

  Attributes:
    ema: the `tf.train.ExponentialMovingAverage` of the weights once
      `spec.training_ema(model)` made it, else None.
  """

  def __init__(self, params, network_fn=None, process_sum=None):
    self.params = params
    self.process_sum = process_sum
    self.ema = None
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
