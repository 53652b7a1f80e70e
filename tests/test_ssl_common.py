"""Tests for model_fns.ssl_common against numpy written from the formulas."""

import math

import numpy as np
from scipy import stats
import tensorflow.compat.v1 as tf

from model_fns import base
from model_fns import spec
from model_fns import ssl_common
from tests import model_test_util as mtu

np_softmax = mtu.softmax


def np_sharpen(p, t):
  q = p ** (1. / t)
  return q / q.sum(axis=-1, keepdims=True)


class LinearModel(object):
  """A stand-in for base.Model: logits = flatten(images) @ w."""

  def __init__(self, w):
    self.w = tf.constant(w)
    self.calls = []

  def logits(self, images, training):
    self.calls.append(training)
    return tf.matmul(tf.layers.flatten(images), self.w)


def flat_network(images, training, params):
  del training, params
  return tf.layers.flatten(images)


class SharpenAndGuessTest(tf.test.TestCase):

  def test_sharpen_matches_formula(self):
    p = np_softmax(np.random.RandomState(0).normal(size=(5, 7)))
    for t in (0.5, 1.0, 2.0):
      with self.session():
        got = ssl_common.sharpen(tf.constant(p), t).eval()
      self.assertAllClose(got, np_sharpen(p, t), rtol=1e-6)
      self.assertAllClose(got.sum(axis=1), np.ones(5))
    # T < 1 raises the top probability.
    self.assertTrue(np.all(np_sharpen(p, 0.5).max(1) > p.max(1)))

  def test_guess_labels_averages_views_then_sharpens(self):
    rng = np.random.RandomState(1)
    views = [rng.normal(size=(4, 2, 2, 1)).astype(np.float32)
             for _ in range(3)]
    w = rng.normal(size=(4, 5)).astype(np.float32)
    model = LinearModel(w)
    with self.session():
      guess = ssl_common.guess_labels(
          model, [tf.constant(v) for v in views], 0.5)
      got = guess.eval()
      self.assertEqual([None], tf.gradients(guess, [model.w]))
    mean = np.mean([np_softmax(v.reshape(4, -1) @ w) for v in views], axis=0)
    self.assertAllClose(got, np_sharpen(mean, 0.5), rtol=1e-5, atol=1e-7)
    self.assertEqual([True, True, True], model.calls)

  def test_split_views_takes_axis_one(self):
    u = np.arange(2 * 3 * 1 * 1 * 1, dtype=np.float32).reshape(2, 3, 1, 1, 1)
    with self.session():
      views = self.evaluate(ssl_common.split_views(tf.constant(u)))
    self.assertLen(views, 3)
    for v in range(3):
      self.assertAllEqual(views[v], u[:, v])


class MixupTest(tf.test.TestCase):

  def test_mix_is_convex_with_one_lambda_and_permutation(self):
    rng = np.random.RandomState(2)
    x = rng.normal(size=(16, 3, 3, 2)).astype(np.float32)
    y = np_softmax(rng.normal(size=(16, 5))).astype(np.float32)
    with tf.Graph().as_default():
      tf.set_random_seed(3)
      out = ssl_common.mixup(tf.constant(x), tf.constant(y), 0.75)
      with self.session() as sess:
        xm, ym, lam, perm = sess.run(out)
    self.assertAllEqual(np.sort(perm), np.arange(16))
    self.assertTrue(np.all((lam >= 0.5) & (lam <= 1.)))
    lx = lam[:, None, None, None]
    self.assertAllClose(xm, lx * x + (1 - lx) * x[perm], rtol=1e-5,
                        atol=1e-6)
    self.assertAllClose(ym, lam[:, None] * y + (1 - lam[:, None]) * y[perm],
                        rtol=1e-5, atol=1e-6)
    self.assertAllClose(ym.sum(axis=1), np.ones(16), rtol=1e-5)

  def test_lambda_follows_folded_beta(self):
    beta = 0.75
    with tf.Graph().as_default():
      tf.set_random_seed(4)
      n = 4000
      _, _, lam, _ = ssl_common.mixup(tf.zeros([n, 1]), tf.zeros([n, 2]),
                                      beta)
      with self.session() as sess:
        lam = sess.run(lam)
    dist = stats.beta(beta, beta)
    # M = max(L, 1 - L): P(M <= m) = F(m) - F(1 - m) for m in [0.5, 1].
    cdf = lambda m: dist.cdf(m) - dist.cdf(1. - m)
    self.assertGreater(stats.kstest(lam, cdf).pvalue, 1e-3)

  def test_seeded_mixup_is_reproducible(self):
    values = []
    for _ in range(2):
      with tf.Graph().as_default():
        out = ssl_common.mixup(tf.ones([8, 2]), tf.ones([8, 3]), 0.5, seed=7)
        with self.session() as sess:
          values.append(sess.run(out[2:]))
    self.assertAllEqual(values[0][0], values[1][0])
    self.assertAllEqual(values[0][1], values[1][1])


class InterleaveTest(tf.test.TestCase):

  def np_interleave(self, xy, batch):
    n = len(xy) - 1
    sizes = [batch // (n + 1)] * (n + 1)
    for i in range(batch - sum(sizes)):
      sizes[-1 - i] += 1
    bounds = np.cumsum([0] + sizes)
    out = [np.array(v) for v in xy]
    for i in range(1, n + 1):
      s = slice(bounds[i], bounds[i + 1])
      out[0][s], out[i][s] = xy[i][s], xy[0][s]
    return out

  def test_offsets_put_the_remainder_last(self):
    self.assertEqual([0, 2, 4, 7], ssl_common.interleave_offsets(7, 3))
    self.assertEqual([0, 21, 42, 64], ssl_common.interleave_offsets(64, 3))
    self.assertEqual([0, 4, 8], ssl_common.interleave_offsets(8, 2))

  def test_keeps_every_example_once_and_inverts_itself(self):
    for batch, groups in ((7, 3), (8, 2), (64, 3), (5, 5)):
      ids = [np.arange(g * batch, (g + 1) * batch) for g in range(groups)]
      with self.session():
        tensors = [tf.constant(v) for v in ids]
        mixed = ssl_common.interleave(tensors, batch)
        back = ssl_common.interleave(mixed, batch)
        mixed, back = self.evaluate([mixed, back])
      self.assertAllEqual(np.sort(np.concatenate(mixed)),
                          np.arange(groups * batch))
      for got, want in zip(mixed, self.np_interleave(ids, batch)):
        self.assertAllEqual(got, want)
      for got, want in zip(back, ids):
        self.assertAllEqual(got, want)
      # The first forward batch holds rows of every input batch.
      self.assertEqual(set(range(groups)), set(mixed[0] // batch))


class SchedulesTest(tf.test.TestCase):

  def test_unlabeled_weight_ramps_over_warmup_kimg(self):
    steps = np.array([0, 1, 100, 16384, 10 ** 6], np.int64)
    with self.session():
      got = ssl_common.unlabeled_weight(tf.constant(steps), 64, 75., 1024)
      got = got.eval()
    want = 75. * np.clip(steps * 64 / (1024. * 1024.), 0, 1)
    self.assertAllClose(got, want, rtol=1e-6)
    self.assertEqual(75., got[-2])
    with self.session():
      self.assertEqual(
          75., ssl_common.unlabeled_weight(tf.constant(0), 64, 75., 0).eval())

  def test_position_ramp_and_progress(self):
    steps = np.array([0, 10, 40, 41, 1000], np.int64)
    with self.session():
      ramp = ssl_common.position_ramp(tf.constant(steps), 100, 0.4).eval()
      progress = ssl_common.training_progress(tf.constant(steps), 100).eval()
      flat = ssl_common.position_ramp(tf.constant(5), 100, 0.).eval()
    self.assertAllClose(ramp, np.clip(steps / 40., 0, 1))
    self.assertAllClose(progress, np.clip(steps / 100., 0, 1))
    self.assertEqual(1., flat)
    with self.assertRaisesRegex(ValueError, 'train_steps'):
      ssl_common.position_ramp(tf.constant(5), 0, 0.4)
    with self.assertRaisesRegex(ValueError, 'train_steps'):
      ssl_common.training_progress(tf.constant(5), 0)


class TsaTest(tf.test.TestCase):

  def test_thresholds_match_uda_formulas(self):
    t = np.linspace(0., 1., 11).astype(np.float32)
    k = 10
    alphas = {'linear': t, 'exp': np.exp((t - 1.) * 5.),
              'log': 1. - np.exp(-t * 5.)}
    for schedule, alpha in alphas.items():
      with self.session():
        got = ssl_common.tsa_threshold(schedule, tf.constant(t), k).eval()
      self.assertAllClose(got, alpha * (1. - 1. / k) + 1. / k, rtol=1e-5)
      self.assertTrue(np.all(np.diff(got) > 0))
      # 'log' stops at 1 - exp(-5) of the way, the others reach 1.
      self.assertAllClose(got[-1], 1. if schedule != 'log' else
                          0.1 + 0.9 * (1. - math.exp(-5.)), rtol=1e-6)
    with self.session():
      start = ssl_common.tsa_threshold('linear', tf.constant(0.), k).eval()
    self.assertAllClose(start, 0.1)
    self.assertIsNone(ssl_common.tsa_threshold('none', tf.constant(0.), k))
    with self.assertRaisesRegex(ValueError, 'tsa'):
      ssl_common.tsa_threshold('linear_schedule', tf.constant(0.), k)

  def test_mask_uses_probability_of_the_mixed_label(self):
    rng = np.random.RandomState(5)
    probs = np_softmax(rng.normal(size=(32, 4)) * 3).astype(np.float32)
    lam = rng.uniform(0.5, 1, size=(32, 1))
    targets = (lam * np.eye(4)[rng.randint(0, 4, 32)] +
               (1 - lam) * np.eye(4)[rng.randint(0, 4, 32)]).astype(np.float32)
    want = ((targets * probs).sum(1) < 0.6).astype(np.float32)
    self.assertTrue(0 < want.sum() < 32)
    with self.session():
      got = ssl_common.tsa_mask(tf.constant(probs), tf.constant(targets),
                                tf.constant(0.6)).eval()
      ones = ssl_common.tsa_mask(tf.constant(probs), tf.constant(targets),
                                 None).eval()
    self.assertAllEqual(got, want)
    self.assertAllEqual(ones, np.ones(32))

  def test_masked_mean(self):
    values = np.array([1., 2., 3., 4.], np.float32)
    with self.session():
      self.assertAllClose(3.5, ssl_common.masked_mean(
          tf.constant(values), tf.constant([0., 0., 1., 1.])).eval())
      self.assertAllClose(0., ssl_common.masked_mean(
          tf.constant(values), tf.zeros([4])).eval())


class MasksTest(tf.test.TestCase):

  def test_percentile_mask_drops_the_least_confident_fraction(self):
    rng = np.random.RandomState(6)
    probs = np_softmax(rng.normal(size=(20, 5)) * 2).astype(np.float32)
    for percent in (0.1, 0.25, 0.5, 0.95):
      dropped = int(math.floor(20 * percent))
      want = np.ones(20, np.float32)
      want[np.argsort(probs.max(1), kind='stable')[:dropped]] = 0.
      with self.session():
        got = ssl_common.percentile_mask(tf.constant(probs), percent).eval()
      self.assertAllEqual(got, want)
      self.assertEqual(20 - dropped, got.sum())
      # Every kept example is at least as confident as every dropped one.
      kept, gone = probs.max(1)[got == 1], probs.max(1)[got == 0]
      if gone.size:
        self.assertGreaterEqual(kept.min(), gone.max())

  def test_percentile_mask_off_and_invalid(self):
    probs = tf.constant(np.full((6, 3), 1. / 3, np.float32))
    for percent in (0., -1.):
      with self.session():
        self.assertAllEqual(np.ones(6),
                            ssl_common.percentile_mask(probs, percent).eval())
    with self.session():  # Ties: exactly the stated number is dropped.
      self.assertEqual(3., tf.reduce_sum(
          ssl_common.percentile_mask(probs, 0.5)).eval())
    with self.assertRaisesRegex(ValueError, 'percent_mask'):
      ssl_common.percentile_mask(probs, 1.)

  def test_confidence_mask(self):
    probs = np.array([[0.95, 0.05], [0.94, 0.06], [0.01, 0.99]], np.float32)
    with self.session():
      got = ssl_common.confidence_mask(tf.constant(probs), 0.95).eval()
    self.assertAllEqual(got, (probs.max(1) >= np.float32(0.95)).astype(float))
    self.assertAllEqual(got, [1., 0., 1.])


class DivergenceAndVatTest(tf.test.TestCase):

  def test_kl_and_entropy(self):
    rng = np.random.RandomState(7)
    a, b = rng.normal(size=(2, 6, 4)).astype(np.float32)
    p, q = np_softmax(a.astype(np.float64)), np_softmax(b.astype(np.float64))
    with self.session():
      kl = ssl_common.kl_divergence_from_logits(a, b).eval()
      ent = ssl_common.entropy_from_logits(a).eval()
      same = ssl_common.kl_divergence_from_logits(a, a).eval()
    self.assertAllClose(kl, (p * np.log(p / q)).sum(1), rtol=1e-5)
    self.assertAllClose(ent, -(p * np.log(p)).sum(1), rtol=1e-5)
    self.assertAllClose(same, np.zeros(6), atol=1e-6)

  def test_perturbation_has_norm_eps_and_no_gradient(self):
    rng = np.random.RandomState(8)
    x = rng.normal(size=(5, 3, 3, 2)).astype(np.float32)
    w = tf.constant(rng.normal(size=(18, 4)).astype(np.float32))
    logits_fn = lambda z: tf.matmul(tf.layers.flatten(z), w)
    xt = tf.constant(x)
    with self.session():
      r = ssl_common.vat_perturbation(logits_fn, xt, logits_fn(xt), xi=1e-6,
                                      eps=6.)
      got = r.eval()
      self.assertEqual([None], tf.gradients(r, [w]))
    self.assertEqual(x.shape, got.shape)
    self.assertAllClose(np.sqrt((got ** 2).reshape(5, -1).sum(1)),
                        np.full(5, 6.), rtol=1e-5)

  def test_power_iteration_finds_the_top_curvature_direction(self):
    # For logits = x @ w the KL's Hessian at r = 0 is w diag-cov w^T with
    # cov = diag(p) - p p^T; power iteration converges to its top
    # eigenvector.
    rng = np.random.RandomState(9)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    w = rng.normal(size=(6, 4)).astype(np.float32)
    logits_fn = lambda z: tf.matmul(z, tf.constant(w))
    with tf.Graph().as_default():
      tf.set_random_seed(10)
      xt = tf.constant(x)
      r = ssl_common.vat_perturbation(logits_fn, xt, logits_fn(xt), xi=1e-2,
                                      eps=1., iterations=40)
      with self.session() as sess:
        got = sess.run(r)
    for i in range(3):
      p = np_softmax((x[i] @ w).astype(np.float64))
      hessian = w @ (np.diag(p) - np.outer(p, p)) @ w.T
      top = np.linalg.eigh(hessian)[1][:, -1]
      self.assertGreater(abs(np.dot(got[i], top)), 0.99)


class TeacherAndDecayTest(tf.test.TestCase):

  def test_teacher_is_the_spec_ema_model(self):
    params = {'num_classes': 3, 'head_dropout': 0., 'ema_decay': 0.9}
    model = base.Model(params, network_fn=flat_network)
    rng = np.random.RandomState(11)
    x = rng.normal(size=(4, 2, 2, 1)).astype(np.float32)
    with tf.Graph().as_default():
      model.logits(tf.constant(x), training=True)
      kernel, bias = tf.trainable_variables('model/')
      teacher = ssl_common.teacher_logits(model, tf.constant(x))
      ema = spec.training_ema(model)
      shadows = [ema.average(kernel), ema.average(bias)]
      self.assertEqual(
          ['model/classifier/kernel/ExponentialMovingAverage',
           'model/classifier/bias/ExponentialMovingAverage'],
          [v.op.name for v in shadows])
      # Besides the shadows, only the global step the EMA's warm-up reads.
      self.assertCountEqual(
          shadows, [v for v in tf.global_variables()
                    if v not in (kernel, bias, tf.train.get_global_step())])
      self.assertEqual([None, None], tf.gradients(teacher, [kernel, bias]))
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        k_shadow = rng.normal(size=(4, 3)).astype(np.float32)
        b_shadow = rng.normal(size=3).astype(np.float32)
        sess.run([shadows[0].assign(k_shadow), shadows[1].assign(b_shadow)])
        got = sess.run(teacher)
    self.assertAllClose(got, x.reshape(4, -1) @ k_shadow + b_shadow,
                        rtol=1e-5, atol=1e-6)

  def test_decoupled_decay_step(self):
    rng = np.random.RandomState(12)
    values = [rng.normal(size=(3, 2)).astype(np.float32),
              rng.normal(size=4).astype(np.float32)]
    with tf.Graph().as_default():
      variables = [tf.Variable(v) for v in values]
      rate = tf.constant(0.02) * tf.constant(0.002)
      ops = spec.decoupled_decay_ops(variables, rate)
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(ops)
        sess.run(ops)
        got = sess.run(variables)
    for g, v in zip(got, values):
      self.assertAllClose(g, v * (1 - 0.02 * 0.002) ** 2, rtol=1e-6)

  def test_param_checks_name_the_flag(self):
    with self.assertRaisesRegex(ValueError, '--confidence'):
      ssl_common.check_fraction('confidence', 1.5)
    with self.assertRaisesRegex(ValueError, '--beta'):
      ssl_common.check_positive('beta', 0.)
    with self.assertRaisesRegex(ValueError, '--ema_decay'):
      ssl_common.check_teacher_decay({'algorithm': 'ict', 'ema_decay': 0.})


if __name__ == '__main__':
  tf.test.main()
