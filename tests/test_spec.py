"""Tests of the spec builder, the model core, the registry and core.model_fn."""

import math
from unittest import mock

import numpy as np
import tensorflow.compat.v1 as tf

from model_fns import base
from model_fns import core
from model_fns import registry
from model_fns import sesemi
from model_fns import spec
from model_fns import supervised
from tests import model_test_util as mtu


def _params(**overrides):
  return mtu.make_params(supervised, **overrides)


def _linear_losses(x, init):
  """A loss linear in a 'kernel' (gradient x) plus a 'bias' (gradient 1)."""
  with tf.variable_scope(base.MODEL_SCOPE):
    kernel = tf.get_variable('dense/kernel',
                             initializer=np.array(init, np.float32))
    bias = tf.get_variable('dense/bias', initializer=np.float32(0.5))
  total = tf.reduce_sum(kernel * np.array(x, np.float32)) + bias
  return base.LossResult(total, {'lin': total}), kernel, bias


class LearningRateTest(tf.test.TestCase):

  def _values(self, params, steps):
    with tf.Graph().as_default():
      step = tf.placeholder(tf.int64, [])
      lr = spec.learning_rate(step, params)
      with self.session() as sess:
        return [sess.run(lr, {step: s}) for s in steps]

  def test_constant(self):
    self.assertAllClose(self._values(_params(lr=0.3), [0, 50, 1000]),
                        [0.3] * 3)

  def test_poly_matches_formula(self):
    params = _params(lr=0.05, lr_schedule='poly', lr_decay_power=0.5,
                     train_steps=1000)
    steps = [0, 1, 250, 999, 1000, 1500]
    expected = [0.05 * (1 - min(s, 1000) / 1000.) ** 0.5 for s in steps]
    self.assertAllClose(self._values(params, steps), expected, rtol=1e-5)

  def test_cosine_matches_formula(self):
    params = _params(lr=0.03, lr_schedule='cosine', cosine_factor=7. / 16.,
                     train_steps=800)
    steps = [0, 100, 400, 800]
    expected = [0.03 * math.cos(7. / 16. * math.pi * s / 800.) for s in steps]
    self.assertAllClose(self._values(params, steps), expected, rtol=1e-5)

  def test_warmup_scales_the_schedule(self):
    params = _params(lr=0.1, lr_schedule='poly', lr_decay_power=1.,
                     train_steps=100, warmup_steps=10)
    steps = [0, 5, 10, 60]
    expected = [0.1 * (1 - s / 100.) * min(1., s / 10.) for s in steps]
    self.assertAllClose(self._values(params, steps), expected, rtol=1e-5)

  def test_bad_schedules_raise(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, 'lr_schedule'):
        spec.learning_rate(tf.constant(0), _params(lr_schedule='step'))
      with self.assertRaisesRegex(ValueError, 'train_steps'):
        spec.learning_rate(tf.constant(0),
                           _params(lr_schedule='poly', train_steps=0))
      with self.assertRaisesRegex(ValueError, 'optimizer'):
        spec.make_optimizer(_params(optimizer='rmsprop'), 0.1)


class RegularisationTest(tf.test.TestCase):

  def _make_variables(self):
    rng = np.random.RandomState(1)
    values = {'model/conv/kernel': rng.normal(size=(3, 3, 2, 4)),
              'model/conv/bias': rng.normal(size=4),
              'model/bn/gamma': rng.normal(size=4),
              'model/classifier/kernel': rng.normal(size=(4, 5)),
              'other/kernel': rng.normal(size=3)}
    for name, value in values.items():
      scope, var = name.rsplit('/', 1)
      with tf.variable_scope(scope):
        tf.get_variable(var, initializer=value.astype(np.float32))
    return values

  def test_kernel_variables_are_model_kernels_only(self):
    with tf.Graph().as_default():
      self._make_variables()
      self.assertCountEqual(
          [v.op.name for v in spec.kernel_variables()],
          ['model/conv/kernel', 'model/classifier/kernel'])

  def test_l2_loss_is_keras_convention(self):
    with tf.Graph().as_default():
      values = self._make_variables()
      l2 = spec.l2_loss(_params(weight_decay_l2=5e-4))
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        expected = 5e-4 * sum(np.sum(values[k].astype(np.float32) ** 2)
                              for k in ('model/conv/kernel',
                                        'model/classifier/kernel'))
        self.assertAllClose(sess.run(l2), expected, rtol=1e-5)

  def test_decoupled_decay_ops(self):
    with tf.Graph().as_default():
      values = self._make_variables()
      rate = tf.constant(0.02 * 0.5)
      ops = spec.decoupled_decay_ops(spec.kernel_variables(), rate)
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(ops)
        for var in tf.global_variables():
          expected = values[var.op.name].astype(np.float32)
          if var.op.name.startswith('model/') and var.op.name.endswith(
              'kernel'):
            expected = expected * (1 - 0.01)
          self.assertAllClose(sess.run(var), expected, rtol=1e-6)


class TrainSpecTest(tf.test.TestCase):

  def test_sgd_step_then_decay_then_ema(self):
    """Two steps of Nesterov SGD with a poly lr, decoupled decay and EMA."""
    x = np.array([1., -2., 3.], np.float32)
    w0 = np.array([0.5, 0.25, -1.], np.float32)
    params = _params(optimizer='sgd', momentum=0.9, nesterov=True, lr=0.1,
                     lr_schedule='poly', lr_decay_power=0.5, train_steps=4,
                     weight_decay=0.5, weight_decay_l2=0., ema_decay=0.9)
    with tf.Graph().as_default():
      losses, kernel, bias = _linear_losses(x, w0)
      estimator_spec = spec.build_train_spec(losses, base.Model(params))
      ema_vars = tf.moving_average_variables()
      shadow = [v for v in tf.global_variables()
                if v.op.name == 'model/dense/kernel/ExponentialMovingAverage']
      self.assertLen(shadow, 1)
      self.assertLen(ema_vars, 2)
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        for _ in range(2):
          sess.run(estimator_spec.train_op)
        got_w, got_b, got_shadow, got_step = sess.run(
            [kernel, bias, shadow[0], tf.train.get_global_step()])

    w, b, s = w0.astype(np.float64), 0.5, w0.astype(np.float64)
    acc_w, acc_b = np.zeros(3), 0.
    for step in range(2):
      lr = 0.1 * (1 - step / 4.) ** 0.5
      acc_w = 0.9 * acc_w + x
      acc_b = 0.9 * acc_b + 1.
      w = w - lr * (x + 0.9 * acc_w)
      b = b - lr * (1. + 0.9 * acc_b)
      w = w * (1 - 0.5 * lr)        # decoupled decay: kernels only
      # EMA sees the decayed weights; TF's num_updates warm-up.
      decay = min(0.9, (1. + step) / (10. + step))
      s = decay * s + (1 - decay) * w
    self.assertEqual(got_step, 2)
    self.assertAllClose(got_w, w, rtol=1e-5)
    self.assertAllClose(got_b, b, rtol=1e-5)
    self.assertAllClose(got_shadow, s, rtol=1e-5)

  def test_losses_read_the_shared_ema_before_its_update(self):
    x = np.array([1., -2., 3.], np.float32)
    w0 = np.array([0.5, 0.25, -1.], np.float32)
    params = _params(optimizer='sgd', momentum=0., lr=0.1, weight_decay=0.,
                     ema_decay=0.5)
    with tf.Graph().as_default():
      losses, kernel, _ = _linear_losses(x, w0)
      model = base.Model(params)
      ema = spec.training_ema(model)
      self.assertIs(spec.training_ema(model), ema)
      # A computed copy: an identity of a ref variable would alias it.
      teacher = ema.average(kernel) * 1.
      total = losses.total + tf.reduce_sum(tf.stop_gradient(teacher))
      estimator_spec = spec.build_train_spec(
          base.LossResult(total, {'t': total}), model)
      shadows = [v.op.name for v in tf.global_variables()
                 if 'ExponentialMovingAverage' in v.op.name]
      self.assertCountEqual(shadows, [
          'model/dense/kernel/ExponentialMovingAverage',
          'model/dense/bias/ExponentialMovingAverage'])
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        seen = [sess.run([teacher, estimator_spec.train_op])[0]
                for _ in range(3)]
    w, s, expected = w0.astype(np.float64), w0.astype(np.float64), []
    for step in range(3):
      expected.append(s)
      w = w - 0.1 * x
      decay = min(0.5, (1. + step) / (10. + step))  # num_updates warm-up
      s = decay * s + (1 - decay) * w
    self.assertAllClose(seen, expected, rtol=1e-5)

  def test_adam_step_with_l2(self):
    x = np.array([1., -2., 3.], np.float32)
    w0 = np.array([0.5, 0.25, -1.], np.float32)
    params = _params(optimizer='adam', lr=0.01, weight_decay=0.,
                     weight_decay_l2=0.1, ema_decay=0.)
    with tf.Graph().as_default():
      losses, kernel, _ = _linear_losses(x, w0)
      estimator_spec = spec.build_train_spec(losses, base.Model(params))
      self.assertEmpty(tf.moving_average_variables())
      logged = {t.op.name: t for t in tf.get_collection(spec.LOG_COLLECTION)}
      self.assertCountEqual(logged, ['train/lin', 'train/l2', 'train/loss',
                                     'train/lr'])
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        values, _ = sess.run([logged, estimator_spec.train_op])
        got_w = sess.run(kernel)
    lin = float(np.dot(w0, x)) + 0.5
    l2 = 0.1 * float(np.sum(w0.astype(np.float64) ** 2))
    self.assertAllClose(values['train/lin'], lin, rtol=1e-5)
    self.assertAllClose(values['train/l2'], l2, rtol=1e-5)
    self.assertAllClose(values['train/loss'], lin + l2, rtol=1e-5)
    self.assertAllClose(values['train/lr'], 0.01)
    g = x + 2 * 0.1 * w0                      # d/dw of w.x + 0.1 * |w|^2
    m, v = 0.1 * g, 0.001 * g ** 2
    lr_t = 0.01 * math.sqrt(1 - 0.999) / (1 - 0.9)
    self.assertAllClose(got_w, w0 - lr_t * m / (np.sqrt(v) + 1e-8),
                        rtol=1e-5)

  def test_update_ops_restrict_batch_norm_updates(self):
    first = np.array([[1.], [3.]], np.float32)      # mean 2
    second = np.array([[10.], [30.]], np.float32)   # mean 20
    params = _params(optimizer='sgd', lr=0.0, ema_decay=0., weight_decay=0.)

    def batch_norm(inputs):
      with tf.variable_scope(base.MODEL_SCOPE, reuse=tf.AUTO_REUSE):
        return tf.layers.batch_normalization(inputs, training=True,
                                             momentum=0.5, name='bn')

    for keep_all in (True, False):
      with tf.Graph().as_default():
        out_first, first_ops = base.ops_created_by(batch_norm, first)
        out_second = batch_norm(second)
        self.assertLen(first_ops, 2)
        self.assertLen(tf.get_collection(tf.GraphKeys.UPDATE_OPS), 4)
        total = tf.reduce_sum(out_first) + tf.reduce_sum(out_second)
        losses = base.LossResult(total, {'t': total},
                                 update_ops=None if keep_all else first_ops)
        estimator_spec = spec.build_train_spec(losses, base.Model(params))
        moving_mean = [v for v in tf.global_variables()
                       if v.op.name == 'model/bn/moving_mean'][0]
        with self.session() as sess:
          sess.run(tf.global_variables_initializer())
          sess.run(estimator_spec.train_op)
          got = sess.run(moving_mean)[0]
      if keep_all:
        # Both updates ran: the result is not the first batch's alone.
        self.assertNotAllClose(got, 0.5 * 2.)
      else:
        self.assertAllClose(got, 0.5 * 2.)

  def test_summaries(self):
    params = _params(weight_decay_l2=0.1)
    features = mtu.synthetic_features(supervised.input_needs(params), params)
    with tf.Graph().as_default():
      mtu.build_spec(features, mtu.TRAIN, params)
      names = sorted(t.op.name for t in tf.get_collection(
          tf.GraphKeys.SUMMARIES))
    self.assertEqual(names, ['images/labeled', 'losses/l2', 'losses/total',
                             'losses/xe', 'lr'])


class ModelTest(tf.test.TestCase):

  def test_logits_heads_and_sharing(self):
    params = _params(head_dropout=0.5)
    model = base.Model(params, network_fn=mtu.tiny_network)
    images = np.random.RandomState(0).normal(size=(3, 8, 8, 3)).astype(
        np.float32)
    with tf.Graph().as_default():
      eval_a = model.logits(images, training=False)
      eval_b = model.logits(images, training=False)
      train = model.logits(images, training=True)
      extra = model.head(model.embed(images, training=False), 6, 'proxy',
                         training=False)
      names = sorted(v.op.name for v in tf.trainable_variables())
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        a, b, t, e = sess.run([eval_a, eval_b, train, extra])
    self.assertEqual(names, [
        'model/classifier/bias', 'model/classifier/kernel',
        'model/proxy/bias', 'model/proxy/kernel', 'model/tiny/bn/beta',
        'model/tiny/bn/gamma', 'model/tiny/conv/bias',
        'model/tiny/conv/kernel'])
    self.assertEqual(a.shape, (3, 10))
    self.assertEqual(e.shape, (3, 6))
    self.assertAllClose(a, b)
    self.assertNotAllClose(a, t)   # training: batch statistics and dropout


class RegistryAndStepsTest(tf.test.TestCase):

  def test_registry(self):
    self.assertIs(registry.get('sesemi'), sesemi)
    self.assertIs(registry.get('supervised'), supervised)
    with self.assertRaisesRegex(ValueError,
                                r"unknown algorithm 'x'; known: supervised, "
                                r'sesemi, mixmatch'):
      registry.get('x')
    with mock.patch.object(registry, 'NAMES', registry.NAMES + ('nothing',)):
      with self.assertRaisesRegex(ValueError,
                                  'model_fns/nothing.py is missing'):
        registry.get('nothing')

  def test_default_train_steps(self):
    counts = {'labeled': 1000, 'unlabeled': 49000, 'valid': 0,
              'test': 10000, 'train': 50000}
    self.assertEqual(
        registry.default_train_steps(_params(train_steps=7), counts), 7)
    # libml: 1024 epochs of 65536 images at batch 64 = 1,048,576 steps.
    self.assertEqual(
        registry.default_train_steps(_params(train_steps=0), counts), 1048576)
    ssl = mtu.make_params(sesemi, train_steps=0)
    self.assertEqual(registry.default_train_steps(ssl, counts),
                     (50000 // 16) * 50)
    sup = mtu.make_params(sesemi, train_steps=0, epochs=300,
                          sesemi_variant='supervised')
    self.assertEqual(registry.default_train_steps(sup, counts),
                     (1000 // 16) * 300)
    with self.assertRaisesRegex(ValueError, 'epochs'):
      registry.default_train_steps(_params(train_steps=0, epochs=0), counts)


class EstimatorEmaTest(tf.test.TestCase):
  """Train with EMA through a real Estimator, then evaluate and predict."""

  def _explicit_logits(self, ckpt, params, images, use_ema):
    """Logits of a fresh graph whose variables are set from the checkpoint."""
    with tf.Graph().as_default():
      model = base.Model(params, network_fn=mtu.tiny_network)
      logits = model.logits(images, training=False)
      with self.session() as sess:
        for var in tf.global_variables():
          name = var.op.name
          if use_ema and var in tf.trainable_variables():
            name += '/ExponentialMovingAverage'
          var.load(tf.train.load_variable(ckpt, name), sess)
        return sess.run(logits)

  def test_ema_eval_and_predict(self):
    params = _params(ema_decay=0.9, lr=0.05, batch_size=8)
    train_features = mtu.synthetic_features(supervised.input_needs(params),
                                            params)
    eval_features = mtu.synthetic_features(None, params, mode=mtu.EVAL,
                                           batch=32, seed=1)

    def input_fn(features, repeat=True):
      def fn():
        data = tf.data.Dataset.from_tensors(features)
        if repeat:
          data = data.repeat()
        return data.map(lambda f: (f, f['label']) if 'label' in f else f)
      return fn

    estimator = tf.estimator.Estimator(
        core.make_model_fn(mtu.tiny_network),
        model_dir=self.get_temp_dir(), params=params,
        config=tf.estimator.RunConfig(tf_random_seed=0))
    estimator.train(input_fn(train_features), steps=5)
    results = estimator.evaluate(input_fn(eval_features), steps=1)
    ckpt = estimator.latest_checkpoint()

    images, labels = eval_features['image'], eval_features['label']
    mask = eval_features['mask']
    raw = self._explicit_logits(ckpt, params, images, use_ema=False)
    ema = self._explicit_logits(ckpt, params, images, use_ema=True)
    self.assertNotAllClose(raw, ema)

    def accuracy(logits):
      return np.sum(mask * (logits.argmax(1) == labels)) / np.sum(mask)

    self.assertAllClose(results['accuracy'], accuracy(raw))
    self.assertAllClose(results['ema/accuracy'], accuracy(ema))
    masked_xe = mtu.sparse_xe(raw, labels)
    self.assertAllClose(results['loss'],
                        np.sum(mask * masked_xe) / np.sum(mask), rtol=1e-4)

    predict_features = {'image': images, 'index': eval_features['index']}
    predictions = list(estimator.predict(input_fn(predict_features, False),
                                         yield_single_examples=False))[0]
    self.assertAllClose(predictions['logits'], ema, rtol=1e-4, atol=1e-5)
    self.assertAllClose(predictions['probabilities'], mtu.softmax(ema),
                        rtol=1e-4, atol=1e-6)
    self.assertAllEqual(predictions['classes'], ema.argmax(1))

    raw_estimator = tf.estimator.Estimator(
        core.make_model_fn(mtu.tiny_network),
        model_dir=self.get_temp_dir(),
        params=dict(params, predict_with_ema=False))
    raw_predictions = list(raw_estimator.predict(
        input_fn(predict_features, False), yield_single_examples=False))[0]
    self.assertAllClose(raw_predictions['logits'], raw, rtol=1e-4, atol=1e-5)

  def test_no_ema_metric_and_export_outputs(self):
    params = _params(ema_decay=0.)
    eval_features = mtu.synthetic_features(None, params, mode=mtu.EVAL)
    metrics = mtu.run_eval(eval_features, params)
    self.assertCountEqual(metrics, ['accuracy', 'loss'])
    predictions, export_outputs = mtu.run_predict(
        mtu.synthetic_features(None, params, mode=mtu.PREDICT), params)
    signature = export_outputs[
        tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY]
    self.assertCountEqual(signature.outputs,
                          ['logits', 'probabilities', 'classes'])
    self.assertEqual(predictions['logits'].shape, (4, 10))
    self.assertAllClose(predictions['probabilities'],
                        mtu.softmax(predictions['logits']), rtol=1e-5)
    self.assertAllEqual(predictions['classes'],
                        predictions['logits'].argmax(1))


if __name__ == '__main__':
  tf.test.main()
