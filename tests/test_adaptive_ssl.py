"""Tests of UDA, FlexMatch, FreeMatch, SoftMatch, ReMixMatch and ssl_state:
losses against numpy, running statistics (across replicas and a resume),
and core.model_fn in every mode.
"""

import json
import os

from absl.testing import parameterized
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import inputs
from input_pipeline import sources
from input_pipeline.needs import InputNeeds
from model_fns import base
from model_fns import flexmatch
from model_fns import freematch
from model_fns import registry
from model_fns import remixmatch
from model_fns import softmatch
from model_fns import ssl_state
from model_fns import uda
from tests import data_fixtures
from tests import model_test_util as mtu

FIXMATCH_LIKE = (uda, flexmatch, freematch, softmatch)
MODULES = FIXMATCH_LIKE + (remixmatch,)
NAMED = [(m.NAME, m) for m in MODULES]
CLASSES = 5
INDEX_RANGE = 40
POOL = 30


flat_network = mtu.flat_network
np_softmax = mtu.softmax


def np_xe(labels, logits):
  return mtu.sparse_xe(logits, labels)


def make_params(module, **overrides):
  values = dict(num_classes=CLASSES, image_shape=(2, 2, 1), batch_size=4,
                uratio=3, unlabeled_index_range=INDEX_RANGE,
                unlabeled_pool_size=POOL)
  values.update(overrides)
  return mtu.make_params(module, **values)


def make_features(module, params, seed=1):
  features = mtu.synthetic_features(module.input_needs(params), params,
                                    seed=seed)
  u = len(features['unlabeled_views'])
  # Distinct indices spread over the range (FlexMatch's slots).
  features['unlabeled_index'] = (np.arange(u, dtype=np.int64) * 3) % (
      INDEX_RANGE)
  # Sharper logits than unit-normal pixels give, so that thresholds bite.
  features['unlabeled_views'] *= 3.
  return features


class LinearCase(tf.test.TestCase):
  """Runs train_losses with the linear model; fetches terms and state."""

  def run_losses(self, module, params, features, steps=1, step=0,
                 initial_state=None):
    """Runs the loss terms and the update ops `steps` times (no optimizer).

    Returns:
      (list of per-step fetched dicts, (kernel, bias), final state values
      {variable op name: value}).
    """
    with tf.Graph().as_default():
      tf.set_random_seed(1)
      tensors = {k: tf.constant(v) for k, v in features.items()}
      model = base.Model(params, network_fn=flat_network)
      result = module.train_losses(tensors, tensors['label'], params, model)
      fetch = dict(result.terms)
      fetch['total'] = result.total
      fetch.update(result.summaries or {})
      kernel, bias = tf.trainable_variables('model/')
      state = tf.global_variables(ssl_state.STATE_SCOPE + '/')
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(tf.train.get_or_create_global_step().assign(step))
        for name, value in (initial_state or {}).items():
          variable = [v for v in state if v.op.name == name][0]
          sess.run(variable.assign(value))
        history = []
        for _ in range(steps):
          values, _ = sess.run([fetch, result.update_ops])
          # Copies: a fetched value may share its buffer with a ref
          # variable that the next step's assign overwrites in place.
          history.append({k: np.array(v) for k, v in values.items()})
        weights = sess.run((kernel, bias))
        final = dict(zip([v.op.name for v in state], sess.run(state)))
    return history, weights, final

  def logits(self, images, weights):
    kernel, bias = weights
    return images.reshape(len(images), -1) @ kernel + bias


class UdaLossTest(LinearCase):

  def test_kl_on_confident_examples_and_tsa(self):
    params = make_params(uda, confidence=0.6, temperature=0.4, tsa='linear',
                         wu=2., train_steps=100)
    features = make_features(uda, params)
    (got,), w, _ = self.run_losses(uda, params, features, step=50)
    u = features['unlabeled_views']
    weak, strong = self.logits(u[:, 0], w), self.logits(u[:, 1], w)
    mask = (np_softmax(weak).max(1) >= 0.6).astype(float)
    self.assertTrue(0 < mask.sum() < len(mask), mask)
    q = np_softmax(weak / 0.4)
    kl = (q * (np.log(q) - np.log(np_softmax(strong)))).sum(1)
    self.assertAllClose(got['kl'], (mask * kl).mean(), rtol=1e-5)
    self.assertAllClose(got['monitors/mask'], mask.mean())
    # TSA 'linear' half-way: threshold 0.5 * (1 - 1/C) + 1/C.
    logits_x = self.logits(features['image'], w)
    p_label = np_softmax(logits_x)[np.arange(4), features['label']]
    kept = (p_label < 0.5 * (1 - 1. / CLASSES) + 1. / CLASSES).astype(float)
    xe = (kept * np_xe(features['label'], logits_x)).sum() / max(kept.sum(),
                                                                 1.)
    self.assertAllClose(got['xe'], xe, rtol=1e-5)
    self.assertAllClose(got['total'], xe + 2. * (mask * kl).mean(), rtol=1e-5)

  def test_tsa_none_counts_every_labeled_example(self):
    params = make_params(uda)
    features = make_features(uda, params)
    (got,), w, _ = self.run_losses(uda, params, features)
    self.assertEqual(1., got['monitors/tsa_kept'])
    self.assertAllClose(got['xe'], np_xe(
        features['label'], self.logits(features['image'], w)).mean(),
                        rtol=1e-5)


def np_flexmatch(state, probs, pool, tau, warmup=True):
  """beta, thresholds, mask from the per-example state (numpy)."""
  counts = np.array([(state == c).sum() for c in range(CLASSES)], float)
  denominator = counts.max()
  if warmup:
    denominator = max(denominator, pool - counts.sum())
  beta = counts / denominator if denominator > 0 else np.zeros(CLASSES)
  thresholds = tau * beta / (2. - beta)
  mask = (probs.max(1) >= thresholds[probs.argmax(1)]).astype(float)
  return beta, thresholds, mask


class FlexMatchTest(LinearCase):

  STATE = 'ssl_state/flexmatch_selected_label'

  def test_mask_uses_the_previous_state_then_records(self):
    params = make_params(flexmatch, confidence=0.5)
    features = make_features(flexmatch, params)
    state = -np.ones(INDEX_RANGE + 1, np.float32)
    state[[1, 2, 5, 7, 8, 11, 20]] = [0, 0, 0, 1, 2, 2, 3]
    history, w, final = self.run_losses(
        flexmatch, params, features, steps=2,
        initial_state={self.STATE: state})
    u = features['unlabeled_views']
    probs = np_softmax(self.logits(u[:, 0], w))
    pseudo = probs.argmax(1)
    strong = self.logits(u[:, 1], w)
    index = features['unlabeled_index']
    for step, got in enumerate(history):
      _, _, mask = np_flexmatch(state[:INDEX_RANGE], probs, POOL, 0.5)
      self.assertAllClose(got['monitors/mask'], mask.mean())
      self.assertAllClose(got['xeu'], (mask * np_xe(pseudo, strong)).mean(),
                          rtol=1e-5)
      self.assertAllClose(
          got['monitors/selected'],
          (state[:INDEX_RANGE] >= 0).sum() / float(POOL), msg=str(step))
      selected = probs.max(1) >= 0.5
      state[index[selected]] = pseudo[selected]
    self.assertTrue(0 < selected.sum() < len(selected))
    # The last slot takes the writes of unselected examples.
    self.assertAllEqual(final[self.STATE][:INDEX_RANGE], state[:INDEX_RANGE])

  def test_empty_state_gives_threshold_zero_then_warms_up(self):
    probs = np.array([[0.9, 0.1, 0, 0, 0], [0.2, 0.8, 0, 0, 0]])
    beta, thresholds, mask = np_flexmatch(
        -np.ones(10), probs, 10, 0.95)
    self.assertAllEqual(np.zeros(CLASSES), beta)
    self.assertAllEqual([1., 1.], mask)
    with tf.Graph().as_default(), self.session() as sess:
      counts = tf.constant([3., 1., 0., 0., 0.])
      got = sess.run([
          ssl_state.flexmatch_class_weights(counts, 10, warmup=True),
          ssl_state.flexmatch_class_weights(counts, 10, warmup=False),
          ssl_state.flexmatch_class_weights(tf.zeros([5]), 10, warmup=False),
          ssl_state.flexmatch_thresholds(tf.constant([1., 0.5, 0.]), 0.95)])
    # 6 of 10 never selected: beta = counts / 6 with warm-up, / 3 without.
    self.assertAllClose([0.5, 1 / 6., 0, 0, 0], got[0])
    self.assertAllClose([1., 1 / 3., 0, 0, 0], got[1])
    self.assertAllClose(np.zeros(5), got[2])
    self.assertAllClose([0.95, 0.95 * 0.5 / 1.5, 0.], got[3])

  def test_needs_ask_for_the_index_and_params_for_the_pool(self):
    self.assertTrue(flexmatch.input_needs(make_params(flexmatch))
                    .unlabeled_index)
    params = make_params(flexmatch)
    features = make_features(flexmatch, params)
    with tf.Graph().as_default():
      tensors = {k: tf.constant(v) for k, v in features.items()}
      model = base.Model(params, network_fn=flat_network)
      with self.assertRaisesRegex(ValueError, 'unlabeled_pool_size'):
        flexmatch.train_losses(tensors, tensors['label'],
                               dict(params, unlabeled_pool_size=0), model)
      del tensors['unlabeled_index']
      with self.assertRaisesRegex(ValueError, 'unlabeled_index'):
        flexmatch.train_losses(tensors, tensors['label'], params, model)


def np_freematch_stats(probs, steps, momentum):
  time_p, p_model, hist = 1. / CLASSES, np.full(CLASSES, 1. / CLASSES), (
      np.full(CLASSES, 1. / CLASSES))
  for _ in range(steps):
    time_p = momentum * time_p + (1 - momentum) * probs.max(1).mean()
    p_model = momentum * p_model + (1 - momentum) * probs.mean(0)
    hist = momentum * hist + (1 - momentum) * np.eye(CLASSES)[
        probs.argmax(1)].mean(0)
  return time_p, p_model, hist


def np_fairness(mask, probs_s, p_model, hist):
  keep = mask > 0
  p = probs_s[keep]
  mean_s = p.mean(0)
  hist_s = np.eye(CLASSES)[p.argmax(1)].mean(0)
  inv = np.where(hist_s > 0, 1. / np.maximum(hist_s, 1e-12), 0.)
  b = mean_s * inv
  b /= b.sum()
  a = p_model / hist
  a /= a.sum()
  return (a * np.log(b + 1e-12)).sum()


class FreeMatchTest(LinearCase):

  def test_thresholds_mask_and_fairness_over_steps(self):
    params = make_params(freematch, stats_momentum=0.5, fairness_weight=0.1,
                         wu=1.5)
    features = make_features(freematch, params)
    history, w, final = self.run_losses(freematch, params, features, steps=3)
    u = features['unlabeled_views']
    probs = np_softmax(self.logits(u[:, 0], w))
    strong = self.logits(u[:, 1], w)
    masks = []
    for step, got in enumerate(history):
      time_p, p_model, hist = np_freematch_stats(probs, step + 1, 0.5)
      thresholds = time_p * p_model / p_model.max()
      mask = (probs.max(1) >= thresholds[probs.argmax(1)]).astype(float)
      masks.append(mask.sum())
      xeu = (mask * np_xe(probs.argmax(1), strong)).mean()
      fairness = np_fairness(mask, np_softmax(strong), p_model, hist)
      self.assertAllClose(got['monitors/threshold'], time_p, rtol=1e-5)
      self.assertAllClose(got['monitors/mask'], mask.mean())
      self.assertAllClose(got['xeu'], xeu, rtol=1e-5)
      self.assertAllClose(got['fairness'], fairness, rtol=1e-4)
      self.assertAllClose(got['total'], got['xe'] + 1.5 * xeu + 0.1 * fairness,
                          rtol=1e-5)
    self.assertTrue(0 < max(masks) < len(probs), masks)
    time_p, p_model, hist = np_freematch_stats(probs, 3, 0.5)
    self.assertAllClose(final['ssl_state/freematch_threshold'], time_p)
    self.assertAllClose(final['ssl_state/freematch_p_model'], p_model)
    self.assertAllClose(final['ssl_state/freematch_label_hist'], hist)

  def test_fairness_is_zero_without_kept_examples(self):
    with tf.Graph().as_default(), self.session() as sess:
      probs = tf.constant(np_softmax(np.random.RandomState(0).normal(
          size=(6, CLASSES))), tf.float32)
      loss = ssl_state.fairness_loss(tf.zeros([6]), probs,
                                     tf.fill([CLASSES], 0.2),
                                     tf.fill([CLASSES], 0.2))
      grad = tf.gradients(loss, probs)[0]
      value, gradient = sess.run([loss, grad])
    self.assertEqual(0., value)
    self.assertTrue(np.all(np.isfinite(gradient)))


class SoftMatchTest(LinearCase):

  def test_aligned_soft_weights_over_steps(self):
    params = make_params(softmatch, stats_momentum=0.5, n_sigma=2.)
    features = make_features(softmatch, params)
    history, w, final = self.run_losses(softmatch, params, features, steps=3)
    u = features['unlabeled_views']
    probs = np_softmax(self.logits(u[:, 0], w))
    strong = self.logits(u[:, 1], w)
    p_model, mu, var = None, 1. / CLASSES, 1.
    for got in history:
      batch = probs.mean(0)
      p_model = batch if p_model is None else 0.5 * p_model + 0.5 * batch
      aligned = probs * (1. / CLASSES + 1e-6) / (p_model + 1e-6)
      aligned /= aligned.sum(1, keepdims=True)
      top = aligned.max(1)
      mu = 0.5 * mu + 0.5 * top.mean()
      var = 0.5 * var + 0.5 * top.var(ddof=1)
      weights = np.exp(-np.minimum(top - mu, 0.) ** 2 / (2 * var / 4.))
      xeu = (weights * np_xe(probs.argmax(1), strong)).mean()
      self.assertAllClose(got['monitors/mu'], mu, rtol=1e-5)
      self.assertAllClose(got['monitors/mask'], weights.mean(), rtol=1e-5)
      self.assertAllClose(got['xeu'], xeu, rtol=1e-5)
    self.assertTrue(np.any(weights < 1) and np.any(weights == 1), weights)
    self.assertAllClose(final['ssl_state/softmatch_p_model'], p_model)
    self.assertAllClose(final['ssl_state/softmatch_mean'], mu)
    self.assertAllClose(final['ssl_state/softmatch_variance'], var)

  def test_without_alignment(self):
    params = make_params(softmatch, dist_align=False)
    features = make_features(softmatch, params)
    (got,), w, final = self.run_losses(softmatch, params, features)
    probs = np_softmax(self.logits(features['unlabeled_views'][:, 0], w))
    self.assertNotIn('ssl_state/softmatch_p_model', final)
    mu = 0.999 / CLASSES + 0.001 * probs.max(1).mean()
    self.assertAllClose(got['monitors/mu'], mu, rtol=1e-5)


class ReMixMatchTest(tf.test.TestCase):

  def run_steps(self, params, features, steps, step):
    with tf.Graph().as_default():
      tf.set_random_seed(1)
      tensors = {k: tf.constant(v) for k, v in features.items()}
      model = base.Model(params, network_fn=flat_network)
      result = remixmatch.train_losses(tensors, tensors['label'], params,
                                       model)
      fetch = dict(result.terms, total=result.total)
      weights = {v.op.name: v for v in tf.trainable_variables('model/')}
      state = tf.global_variables(ssl_state.STATE_SCOPE + '/')
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(tf.train.get_or_create_global_step().assign(step))
        history = []
        for _ in range(steps):
          values, _ = sess.run([fetch, result.update_ops])
          history.append({k: np.array(v) for k, v in values.items()})
        weights = sess.run(weights)
        final = dict(zip([v.op.name for v in state], sess.run(state)))
    return history, weights, final

  def test_losses_alignment_and_rotation_without_mixing(self):
    params = make_params(remixmatch, num_strong=2, beta=1e-6, warmup_kimg=1,
                         dist_buffer=2, temperature=0.5, w_match=1.5,
                         w_kl=0.5, w_rot=0.25, image_shape=(2, 2, 1))
    features = mtu.synthetic_features(remixmatch.input_needs(params), params,
                                      seed=3)
    features['unlabeled_views'] *= 3.
    # step 1000 * 4 images > 1 kimg: the ramp is at 1.
    history, w, final = self.run_steps(params, features, 2, step=1000)

    def logits(images, head='classifier'):
      return (images.reshape(len(images), -1) @ w['model/%s/kernel' % head] +
              w['model/%s/bias' % head])

    u = features['unlabeled_views']
    x, labels = features['image'], features['label']
    q = np_softmax(logits(u[:, 0]))
    onehot = np.eye(CLASSES)[labels]
    p_model_rows = [np.full(CLASSES, 1. / CLASSES)] * 2
    p_data = np.full(CLASSES, 1. / CLASSES)
    rotated = np.concatenate([np.rot90(u[k::4, 1], k, axes=(1, 2))
                              for k in range(4)])
    rotation_labels = np.concatenate([[k] * len(u[k::4]) for k in range(4)])
    rot = np_xe(rotation_labels, logits(rotated, 'rotation')).mean()
    for got in history:
      p_model = np.mean(p_model_rows, axis=0)
      aligned = q * (p_data + 1e-6) / (p_model + 1e-6)
      aligned /= aligned.sum(1, keepdims=True)
      target = aligned ** 2
      target /= target.sum(1, keepdims=True)

      def soft_xe(t, z):
        return -(t * np.log(np_softmax(z))).sum(1).mean()

      kl = soft_xe(target, logits(u[:, 1]))
      xeu = np.mean([soft_xe(target, logits(u[:, v])) for v in range(3)])
      xe = np_xe(labels, logits(x)).mean()
      self.assertAllClose(got['kl'], kl, rtol=1e-5)
      self.assertAllClose(got['rot'], rot, rtol=1e-5)
      self.assertAllClose(got['xeu'], xeu, rtol=1e-5)
      self.assertAllClose(got['xe'], xe, rtol=1e-5)
      self.assertAllClose(got['total'],
                          xe + 1.5 * xeu + 0.5 * kl + 0.25 * rot, rtol=1e-5)
      p_model_rows = p_model_rows[1:] + [q.mean(0)]
      p_data = 0.999 * p_data + 0.001 * onehot.mean(0)
    self.assertAllClose(final['ssl_state/remixmatch_p_model'],
                        np.stack(p_model_rows))
    self.assertAllClose(final['ssl_state/remixmatch_p_data'], p_data)

  def test_rotations(self):
    images = np.arange(5 * 3 * 3, dtype=np.float32).reshape(5, 3, 3, 1)
    with tf.Graph().as_default(), self.session() as sess:
      rotated, labels = sess.run(remixmatch.rotate_quarters(
          tf.constant(images)))
    self.assertAllEqual([0, 0, 1, 2, 3], labels)
    order = [0, 4, 1, 2, 3]
    for row, (i, k) in enumerate(zip(order, labels)):
      self.assertAllEqual(np.rot90(images[i], k), rotated[row])


class AlignmentTest(tf.test.TestCase):

  def test_align_and_buffer_mean(self):
    probs = np_softmax(np.random.RandomState(2).normal(size=(3, 4)))
    target = np.array([0.1, 0.2, 0.3, 0.4])
    model = np.array([0.4, 0.3, 0.2, 0.1])
    expected = probs * (target + 1e-6) / (model + 1e-6)
    expected /= expected.sum(1, keepdims=True)
    with tf.Graph().as_default(), self.session() as sess:
      aligned = ssl_state.align(tf.constant(probs), tf.constant(target),
                                tf.constant(model))
      buffer = ssl_state.state_variable('test_buffer', [3, 2], 0.5)
      mean, op = ssl_state.buffer_mean_update(buffer, tf.constant([1., 0.]))
      sess.run(tf.global_variables_initializer())
      got = sess.run(aligned)
      means = [sess.run([mean, op])[0] for _ in range(4)]
    self.assertAllClose(expected, got)
    self.assertAllClose([[2 / 3., 1 / 3.], [5 / 6., 1 / 6.], [1., 0.],
                         [1., 0.]], means)


def _train_params(module):
  # confidence 0.15: a fresh 10-class model is rarely more confident, and
  # FlexMatch records only confident predictions.
  return make_params(module, image_shape=(8, 8, 3), num_classes=10,
                     batch_size=4, uratio=2, train_steps=20, tsa='linear',
                     confidence=0.15, num_strong=2)


def _train_features(module, params):
  features = mtu.synthetic_features(module.input_needs(params), params)
  features['unlabeled_index'] = np.arange(8, dtype=np.int64) * 5
  return features


class ModelFnTest(tf.test.TestCase, parameterized.TestCase):

  def test_registered(self):
    for module in MODULES:
      self.assertIs(module, registry.get(module.NAME))

  @parameterized.named_parameters(*NAMED)
  def test_train_steps_eval_and_predict(self, module):
    params = _train_params(module)
    history = mtu.run_train_steps(_train_features(module, params), params,
                                  steps=3)
    self.assertTrue(np.all(np.isfinite([h['loss'] for h in history])))
    self.assertNotEqual(history[0]['xe'], history[-1]['xe'])
    metrics = mtu.run_eval(
        mtu.synthetic_features(None, params, mode=mtu.EVAL), params)
    self.assertCountEqual(['accuracy', 'ema/accuracy', 'loss'], metrics)
    self.assertTrue(np.isfinite(metrics['loss']))
    predictions, exports = mtu.run_predict(
        mtu.synthetic_features(None, params, mode=mtu.PREDICT), params)
    self.assertEqual((4, 10), predictions['probabilities'].shape)
    self.assertLen(exports, 1)

  @parameterized.named_parameters(*NAMED)
  def test_training_graph_has_static_shapes(self, module):
    params = _train_params(module)
    features = _train_features(module, params)
    with tf.Graph().as_default() as graph:
      mtu.build_spec(features, mtu.TRAIN, params)
      for op in graph.get_operations():
        if op.name.startswith('gradients/'):
          continue  # Shape bookkeeping of tf.gradients (host-side).
        if op.type.startswith('FusedBatchNorm'):
          continue  # Its reserve-space outputs are opaque to shape inference.
        for output in op.outputs:
          if output.dtype == tf.resource or output.dtype._is_ref_dtype:  # pylint: disable=protected-access
            continue
          self.assertTrue(output.shape.is_fully_defined(),
                          '%s: %s' % (output.name, output.shape))

  @parameterized.named_parameters(('flexmatch', flexmatch),
                                  ('freematch', freematch),
                                  ('softmatch', softmatch),
                                  ('remixmatch', remixmatch))
  def test_resume_continues_the_statistics(self, module):
    # beta -> 0: MixUp's lambda is 1, so ReMixMatch's random draws (which
    # restart with the session) do not change the steps.
    params = dict(_train_params(module), beta=1e-6)
    features = _train_features(module, params)
    path = os.path.join(self.get_temp_dir(), module.NAME, 'ckpt')

    def run(steps, restore=False, save=False):
      with tf.Graph().as_default():
        tf.set_random_seed(0)
        estimator_spec, _ = mtu.build_spec(features, mtu.TRAIN, params)
        state = tf.global_variables(ssl_state.STATE_SCOPE + '/')
        self.assertNotEmpty(state)
        self.assertEqual([], [v for v in state if v in tf.trainable_variables()])
        saver = tf.train.Saver()
        with self.session() as sess:
          sess.run(tf.global_variables_initializer())
          if restore:
            saver.restore(sess, path)
          for _ in range(steps):
            sess.run(estimator_spec.train_op)
          if save:
            saver.save(sess, path)
          return dict(zip([v.op.name for v in state], sess.run(state)))

    straight = run(2)
    first = run(1, save=True)
    resumed = run(1, restore=True)
    for name, value in straight.items():
      if module is flexmatch:
        # Fixed features: the same records are selected at every step.
        self.assertTrue(np.any(value[:-1] >= 0), name)
      else:
        self.assertGreater(np.abs(first[name] - value).max(), 0, name)
      self.assertAllClose(value, resumed[name], rtol=1e-4, atol=1e-6,
                          msg=name)


class CrossReplicaTest(tf.test.TestCase):
  """Two CPU replicas of a MirroredStrategy see one global batch."""

  def test_statistics_and_records_are_global(self):
    rows = np.arange(12, dtype=np.float32).reshape(2, 3, 2) / 10.
    index = np.array([[0, 2, 4], [1, 3, 5]], np.int64)
    config = tf.ConfigProto(device_count={'CPU': 2})
    with tf.Graph().as_default():
      strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
      with strategy.scope():
        state = ssl_state.PerExampleState('test_record', 6)
        # A statistic of values that depend on a state variable (SoftMatch's
        # aligned probabilities): TF 1.15's all_reduce could not take it.
        prior = ssl_state.state_variable('test_prior', [2], 2.)

        def step():
          replica = tf.distribute.get_replica_context().replica_id_in_sync_group
          mine = tf.gather(tf.constant(rows), replica)
          mean = ssl_state.global_mean(mine * prior.read_value()) / 2.
          mean_max, var_max = ssl_state.global_mean_and_variance(mine[:, 0])
          update = state.update(tf.gather(tf.constant(index), replica),
                                tf.gather(tf.constant(index), replica) * 10,
                                tf.constant([True, False, True]))
          with tf.control_dependencies([update]):
            return tf.identity(mean), tf.identity(mean_max), tf.identity(
                var_max)

        run = getattr(strategy, 'run', None) or strategy.experimental_run_v2
        outputs = run(step)
        results = [strategy.experimental_local_results(o) for o in outputs]
      with tf.Session(config=config) as sess:
        sess.run(tf.global_variables_initializer())
        got = sess.run(results)
        record = sess.run(strategy.experimental_local_results(
            state.variable))
    flat = rows.reshape(6, 2)
    for replica in range(2):
      self.assertAllClose(flat.mean(0), got[0][replica])
      self.assertAllClose(flat[:, 0].mean(), got[1][replica])
      self.assertAllClose(flat[:, 0].var(ddof=1), got[2][replica])
    for copy in record:
      # Selected: positions 0 and 2 of each replica (indices 0, 4, 1, 5).
      self.assertAllEqual([0, 10, -1, -1, 40, 50], copy[:6])


TINY_NET = data_fixtures.TINY_NET
run_entry = data_fixtures.run_entry
CONFIG_DIR = os.path.join(data_fixtures.ROOT, 'launch', 'configs')


class FlagfileTest(tf.test.TestCase, parameterized.TestCase):

  def resolve(self, name):
    """(comments, params) of a flagfile over the module's defaults."""
    comments, values = [], {}
    with open(os.path.join(CONFIG_DIR, name)) as f:
      for line in f:
        line = line.strip()
        if line.startswith('#'):
          comments.append(line)
        elif line:
          key, value = line[2:].split('=', 1)
          values[key] = value
    module = registry.get(values['algorithm'])
    params = make_params(module, train_steps=0)
    for key, value in values.items():
      if key == 'dataset':
        params[key] = value
        continue
      self.assertIn(key, params, '%s: unknown flag --%s' % (name, key))
      default = params[key]
      if isinstance(default, bool):
        params[key] = {'true': True, 'false': False}[value]
      else:
        params[key] = type(default)(value)
    params['train_steps'] = registry.default_train_steps(params, {})
    module.input_needs(params)
    return '\n'.join(comments), params

  def test_cifar10_flagfiles_and_fashion_mnist_presets(self):
    for module in MODULES:
      for labels in (40, 250, 4000):
        name = '%s_cifar10_%d.cfg' % (module.NAME, labels)
        comments, params = self.resolve(name)
        self.assertEqual(module.NAME, params['algorithm'])
        self.assertEqual('cifar10.1@%d-0' % labels, params['dataset'])
        self.assertIn('--flagfile=launch/configs/' + name, comments)
        self.assertEqual(2 ** 20,
                         params['train_steps'])
        for key, value in module.DEFAULTS.items():
          self.assertEqual(value, params[key], (name, key))
      _, params = self.resolve('fmnist_%s.cfg' % module.NAME)
      self.assertEqual('fashion_mnist.1@1000-5000', params['dataset'])
      self.assertEqual((16, 2, 2, 32, 3000),
                       (params['filters'], params['repeat'], params['scales'],
                        params['batch_size'], params['train_steps']))
      if module is not remixmatch:
        self.assertEqual(3, params['uratio'])

  def test_paper_defaults(self):
    self.assertEqual((0.8, 0.4, 'none', 1.0),
                     tuple(uda.DEFAULTS[k] for k in (
                         'confidence', 'temperature', 'tsa', 'wu')))
    self.assertEqual((0.95, True), (flexmatch.DEFAULTS['confidence'],
                                    flexmatch.DEFAULTS['thresh_warmup']))
    self.assertEqual((0.999, 0.01), (freematch.DEFAULTS['stats_momentum'],
                                     freematch.DEFAULTS['fairness_weight']))
    self.assertEqual((0.999, 2.0, True),
                     tuple(softmatch.DEFAULTS[k] for k in (
                         'stats_momentum', 'n_sigma', 'dist_align')))
    self.assertEqual(
        (8, 0.75, 1.5, 0.5, 0.5, 1024, 0.5, True, 128, 'adam', 0.002, 0.02,
         False),
        tuple(remixmatch.DEFAULTS[k] for k in (
            'num_strong', 'beta', 'w_match', 'w_kl', 'w_rot', 'warmup_kimg',
            'temperature', 'dist_align', 'dist_buffer', 'optimizer', 'lr',
            'weight_decay', 'unlabeled_keeps_labeled')))
    self.assertEqual(('weak',) + ('strong',) * 8, remixmatch.input_needs(
        make_params(remixmatch)).unlabeled_views)
    for module in FIXMATCH_LIKE:
      d = module.DEFAULTS
      self.assertEqual(
          ('sgd', 0.03, 'cosine', 2.5e-4, 0.999, 7, 64, 1024, True),
          tuple(d[k] for k in ('optimizer', 'lr', 'lr_schedule',
                               'weight_decay_l2', 'ema_decay', 'uratio',
                               'batch_size', 'epochs',
                               'unlabeled_keeps_labeled')), module.NAME)

  @parameterized.named_parameters(
      ('uratio', uda, {'uratio': 0}, '--uratio'),
      ('tsa', uda, {'tsa': 'linear_schedule'}, '--tsa'),
      ('temperature', uda, {'temperature': 0.}, '--temperature'),
      ('confidence', flexmatch, {'confidence': 1.5}, '--confidence'),
      ('momentum', freematch, {'stats_momentum': 1.}, '--stats_momentum'),
      ('fairness', freematch, {'fairness_weight': -1.}, '--fairness_weight'),
      ('n_sigma', softmatch, {'n_sigma': 0.}, '--n_sigma'),
      ('num_strong', remixmatch, {'num_strong': 0}, '--num_strong'),
      ('w_rot', remixmatch, {'w_rot': -1.}, '--w_rot'))
  def test_bad_params_raise(self, module, overrides, flag):
    with self.assertRaisesRegex(ValueError, flag):
      module.input_needs(make_params(module, **overrides))


class ProcessSumTest(tf.test.TestCase):
  """Ascend ranks: statistics go through the model's process_sum."""

  def test_statistics_and_counts_use_the_hook(self):
    calls = []

    def two_ranks(tensor):  # Two ranks that saw the same batch.
      calls.append(tensor)
      return 2. * tensor

    values = np.array([[0.1, 0.9], [0.6, 0.4], [0.3, 0.7]], np.float32)
    with tf.Graph().as_default(), self.session() as sess:
      mean = ssl_state.global_mean(tf.constant(values), two_ranks)
      mean_max, var_max = ssl_state.global_mean_and_variance(
          tf.constant(values.max(1)), two_ranks)
      state = ssl_state.PerExampleState('test_counts', 5)
      counts = state.class_counts(2, two_ranks)
      sess.run(tf.global_variables_initializer())
      sess.run(state.variable.assign([0., 1., 1., -1., -1., -1.]))
      got = sess.run([mean, mean_max, var_max, counts])
    self.assertNotEmpty(calls)
    self.assertAllClose(values.mean(0), got[0])
    self.assertAllClose(values.max(1).mean(), got[1])
    # Six values (each rank's three): the unbiased variance of the doubled set.
    self.assertAllClose(np.concatenate([values.max(1)] * 2).var(ddof=1),
                        got[2])
    self.assertAllClose([2., 4.], got[3])


class DataTest(data_fixtures.TinyDataTestCase):
  """The records' index reaches FlexMatch; launch sizes its state."""

  def test_unlabeled_index_feature_and_pool(self):
    source = sources.resolve(self.data_dir, self.split)
    parts = source.split['parts']
    self.assertEqual(
        (parts['unlabeled']['count'],
         max(parts['unlabeled']['indices']) + 1),
        sources.unlabeled_pool(source, keeps_labeled=False))
    everything = parts['unlabeled']['indices'] + parts['labeled']['indices']
    self.assertEqual((len(everything), max(everything) + 1),
                     sources.unlabeled_pool(source, keeps_labeled=True))
    whole = sources.resolve(self.data_dir, 'tiny')
    self.assertEqual((64, 64), sources.unlabeled_pool(whole, True))
    params = dict(mtu.make_params(flexmatch), normalization='zero_one')
    for keeps in (False, True):
      needs = InputNeeds(2, 'weak', unlabeled_ratio=3,
                         unlabeled_views=('weak', 'strong'),
                         unlabeled_keeps_labeled=keeps, unlabeled_index=True)
      with tf.Graph().as_default():
        dataset = inputs.train_input_fn(source, needs, params, seed=1)()
        shapes, _ = tf.data.get_output_shapes(dataset)
        self.assertEqual([6], shapes['unlabeled_index'].as_list())
        features, _ = tf.data.make_one_shot_iterator(dataset).get_next()
        with self.session() as sess:
          seen = np.concatenate([sess.run(features['unlabeled_index'])
                                 for _ in range(6)])
      allowed = everything if keeps else parts['unlabeled']['indices']
      self.assertTrue(set(seen) <= set(allowed), seen)
    without = InputNeeds(2, 'weak', unlabeled_ratio=3,
                         unlabeled_views=('weak', 'strong'))
    with tf.Graph().as_default():
      shapes, _ = tf.data.get_output_shapes(
          inputs.train_input_fn(source, without, params, seed=1)())
    self.assertNotIn('unlabeled_index', shapes)

  def test_flexmatch_trains_and_resumes(self):
    model_dir = os.path.join(self.get_temp_dir(), 'flexmatch')

    def train(steps):
      result = run_entry(
          'train', '--data_dir=' + self.data_dir, '--dataset=' + self.split,
          '--model_dir=' + model_dir, '--algorithm=flexmatch',
          '--batch_size=2', '--uratio=2', '--confidence=0.3',
          '--train_steps=%d' % steps, '--save_checkpoints_steps=2',
          '--log_every_steps=2', *TINY_NET)
      self.assertEqual(0, result.returncode, result.stderr[-3000:])
      return tf.train.load_variable(
          model_dir, 'ssl_state/flexmatch_selected_label')

    first = train(2)
    with open(os.path.join(model_dir, 'params.json')) as f:
      params = json.load(f)
    source = sources.resolve(self.data_dir, self.split)
    self.assertEqual(
        sources.unlabeled_pool(source, True),
        (params['unlabeled_pool_size'], params['unlabeled_index_range']))
    self.assertEqual((params['unlabeled_index_range'] + 1,), first.shape)
    second = train(4)
    recorded = first[:-1] >= 0
    # Records made before the restart are still there (or overwritten by a
    # newer confident prediction), and more were added.
    self.assertTrue(np.all(second[:-1][recorded] >= 0))
    self.assertGreaterEqual((second[:-1] >= 0).sum(), recorded.sum())
    self.assertGreater((second[:-1] >= 0).sum(), 0)


if __name__ == '__main__':
  tf.test.main()
