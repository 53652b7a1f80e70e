"""Tests for model_fns.networks: layers, the four backbones, sharing."""

import math

from absl.testing import parameterized
import numpy as np
import tensorflow.compat.v1 as tf

from model_fns import hparams
from model_fns import networks
from model_fns.networks import layers
from model_fns.networks import resnet

EMBED_DIM = {'convnet': 128, 'nin': 192, 'wrn': 128, 'resnet': 128}


def _params(**overrides):
  params = dict(hparams.COMMON_DEFAULTS)
  params.update(overrides)
  return params


def _build(name, shape, training, params, batch=2):
  """Builds `name` on a placeholder under the callers' 'model' scope."""
  images = tf.placeholder(tf.float32, [batch] + list(shape))
  with tf.variable_scope('model', reuse=tf.AUTO_REUSE):
    return images, networks.get(name)(images, training, params)


def _count(variables):
  return sum(int(np.prod(v.shape.as_list())) for v in variables)


def _conv(k, c_in, c_out, bias=True):
  return k * k * c_in * c_out + (c_out if bias else 0)


def _expected_counts(name, channels, num_classes=0, filters=32, repeat=4,
                     scales=3):
  """(trainable, moving-statistics) parameter counts from the architecture.

  Every batch norm over c channels has 2c trainable (gamma, beta) and 2c
  moving statistics; `num_classes` > 0 adds a dense head on the embedding.
  """
  convs, bns = 0, []
  if name == 'convnet':
    specs = [(3, channels, 128), (3, 128, 128), (3, 128, 128),
             (3, 128, 256), (3, 256, 256), (3, 256, 256),
             (3, 256, 512), (1, 512, 256), (1, 256, 128)]
    convs = sum(_conv(*s) for s in specs)
    bns = [s[2] for s in specs]
  elif name == 'nin':
    specs = [(5, channels, 192), (1, 192, 160), (1, 160, 96),
             (5, 96, 192), (1, 192, 192), (1, 192, 192),
             (3, 192, 192), (1, 192, 192), (1, 192, 192)]
    convs = sum(_conv(*s) for s in specs)
    bns = [s[2] for s in specs]
  elif name == 'wrn':
    convs, bns, c_in = _conv(3, channels, 16, False), [16], 16
    for w in (32, 64, 128):
      # Widening: two 3x3 convs, one BN between them, a 1x1 shortcut.
      convs += (_conv(3, c_in, w, False) + _conv(3, w, w, False) +
                _conv(1, c_in, w, False))
      bns.append(w)
      # Three identity blocks of BN, conv, BN, conv; then the stage's BN.
      convs += 3 * 2 * _conv(3, w, w, False)
      bns += [w] * 7
      c_in = w
  elif name == 'resnet':
    convs, c_in = _conv(3, channels, 16), 16
    for s in range(scales):
      w = filters << s
      for _ in range(repeat):
        convs += _conv(3, c_in, w) + _conv(3, w, w)
        bns += [c_in, w]
        if c_in != w:
          convs += _conv(1, c_in, w)
        c_in = w
    bns.append(c_in)
  head = (EMBED_DIM[name] + 1) * num_classes if num_classes else 0
  return convs + 2 * sum(bns) + head, 2 * sum(bns)


class LayersTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(((4, 3, 3, 5),), ((6, 5),))
  def test_batch_norm_training_matches_numpy(self, shape):
    rng = np.random.RandomState(0)
    x = rng.randn(*shape).astype(np.float32) * 3. + 1.5
    gamma = rng.rand(shape[-1]).astype(np.float32) + .5
    beta = rng.randn(shape[-1]).astype(np.float32)
    momentum, eps = 0.9, 1e-3
    with tf.Graph().as_default() as g:
      y = layers.batch_norm(tf.constant(x), True, momentum, epsilon=eps,
                            name='bn')
      with tf.variable_scope('bn', reuse=True):
        sets = [tf.assign(tf.get_variable('gamma'), gamma),
                tf.assign(tf.get_variable('beta'), beta)]
      updates = g.get_collection(tf.GraphKeys.UPDATE_OPS)
      (moments,) = layers.get_moments(g)
      with self.session(graph=g) as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(sets)
        y_val, batch_mean, batch_var = sess.run(
            [y, moments.batch_mean, moments.batch_variance])
        sess.run(updates)
        moving_mean, moving_var = sess.run(
            [moments.moving_mean, moments.moving_variance])
    axes = tuple(range(len(shape) - 1))
    n = x.size // shape[-1]
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    self.assertAllClose(y_val, gamma * (x - mean) / np.sqrt(var + eps) + beta,
                        atol=1e-4)
    self.assertAllClose(batch_mean, mean, atol=1e-5)
    self.assertAllClose(batch_var, var * n / (n - 1), atol=1e-4)
    # moving <- momentum * moving + (1 - momentum) * batch, from 0 and 1.
    self.assertAllClose(moving_mean, (1 - momentum) * mean, atol=1e-5)
    self.assertAllClose(
        moving_var, momentum + (1 - momentum) * var * n / (n - 1), atol=1e-4)
    self.assertLen(updates, 2)

  @parameterized.parameters(((2, 4, 4, 3),), ((5, 3),))
  def test_batch_norm_inference_uses_moving_statistics(self, shape):
    rng = np.random.RandomState(1)
    x = rng.randn(*shape).astype(np.float32)
    mean = rng.randn(shape[-1]).astype(np.float32)
    var = rng.rand(shape[-1]).astype(np.float32) + .2
    gamma = rng.rand(shape[-1]).astype(np.float32) + .5
    beta = rng.randn(shape[-1]).astype(np.float32)
    with tf.Graph().as_default() as g:
      y = layers.batch_norm(tf.constant(x), False, 0.99, name='bn')
      with tf.variable_scope('bn', reuse=True):
        sets = [tf.assign(tf.get_variable(n), v) for n, v in
                (('gamma', gamma), ('beta', beta), ('moving_mean', mean),
                 ('moving_variance', var))]
      self.assertEmpty(g.get_collection(tf.GraphKeys.UPDATE_OPS))
      self.assertEmpty(layers.get_moments(g))
      with self.session(graph=g) as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(sets)
        y_val = sess.run(y)
    self.assertAllClose(y_val, gamma * (x - mean) / np.sqrt(var + 1e-3) + beta,
                        atol=1e-4)

  def test_batch_norm_variables_and_collections(self):
    with tf.Graph().as_default() as g:
      layers.batch_norm(tf.zeros([2, 4, 4, 3]), True, 0.9, name='a')
      layers.batch_norm(tf.zeros([2, 3]), True, 0.9, name='b', center=False,
                        scale=False)

      def names(key):
        return sorted(v.op.name for v in g.get_collection(key))

      self.assertEqual(names(tf.GraphKeys.TRAINABLE_VARIABLES),
                       ['a/beta', 'a/gamma'])
      self.assertEqual(names(tf.GraphKeys.MOVING_AVERAGE_VARIABLES),
                       ['a/moving_mean', 'a/moving_variance',
                        'b/moving_mean', 'b/moving_variance'])
      self.assertLen(g.get_collection(tf.GraphKeys.GLOBAL_VARIABLES), 6)
      moments = layers.get_moments(g)
      self.assertEqual([m.moving_mean.op.name for m in moments],
                       ['a/moving_mean', 'b/moving_mean'])
    with self.assertRaisesRegex(ValueError, 'batch_norm c'):
      layers.batch_norm(tf.zeros([2, 3, 3]), True, 0.9, name='c')

  def test_leaky_relu(self):
    x = np.array([-2., -0.5, 0., 1.5], np.float32)
    with self.session(graph=tf.Graph()) as sess:
      leaky, relu = sess.run([layers.leaky_relu(tf.constant(x), 0.1),
                              layers.leaky_relu(tf.constant(x), 0.)])
    self.assertAllClose(leaky, np.where(x > 0, x, 0.1 * x))
    self.assertAllClose(relu, np.maximum(x, 0.))

  def test_check_inputs(self):
    with tf.Graph().as_default():
      images = tf.zeros([2, 8, 8, 3])
      self.assertEqual(layers.check_inputs(images, True, 'n'), (8, 8, 3))
      with self.assertRaisesRegex(TypeError, 'Python bool'):
        layers.check_inputs(images, tf.constant(True), 'n')
      with self.assertRaisesRegex(ValueError, 'network n: images'):
        layers.check_inputs(tf.zeros([2, 8, 8]), True, 'n')
      with self.assertRaisesRegex(ValueError, 'network n: images'):
        layers.check_inputs(tf.zeros([2, 8, 8, 3], tf.uint8), True, 'n')


class NetworksTest(tf.test.TestCase, parameterized.TestCase):

  def test_get(self):
    self.assertEqual(networks.NAMES, ('convnet', 'nin', 'wrn', 'resnet'))
    for name in networks.NAMES:
      self.assertTrue(callable(networks.get(name)))
    with self.assertRaisesRegex(
        ValueError, "unknown network 'vgg'; choose one of: "
        'convnet, nin, wrn, resnet'):
      networks.get('vgg')

  @parameterized.product(name=('convnet', 'nin', 'wrn', 'resnet'),
                         shape=((32, 32, 3), (28, 28, 1)))
  def test_output_shape_and_parameter_count(self, name, shape):
    with tf.Graph().as_default() as g:
      images, embedding = _build(name, shape, False, _params())
      self.assertEqual(embedding.shape.as_list(), [2, EMBED_DIM[name]])
      trainable, moving = _expected_counts(name, shape[-1])
      self.assertEqual(_count(tf.trainable_variables()), trainable)
      self.assertEqual(
          _count(g.get_collection(tf.GraphKeys.MOVING_AVERAGE_VARIABLES)),
          moving)
      x = np.random.RandomState(0).randn(2, *shape).astype(np.float32)
      with self.session(graph=g) as sess:
        sess.run(tf.global_variables_initializer())
        value = sess.run(embedding, {images: x})
    self.assertEqual(value.shape, (2, EMBED_DIM[name]))
    self.assertTrue(np.all(np.isfinite(value)))
    self.assertGreater(np.abs(value).sum(), 0.)

  def test_wrn_28_2_resnet_has_1_47m_parameters(self):
    with tf.Graph().as_default():
      _, embedding = _build('resnet', (32, 32, 3), True,
                            _params(filters=32, repeat=4, scales=3))
      tf.layers.dense(embedding, 10, name='classifier')
      count = _count(tf.trainable_variables())
    expected, _ = _expected_counts('resnet', 3, num_classes=10)
    self.assertEqual(count, expected)
    self.assertEqual(count, 1469642)
    self.assertLess(abs(count - 1.47e6) / 1.47e6, 0.01)

  def test_convnet_parameter_count(self):
    # The 13-layer ConvNet of the SSL literature is quoted at about 3.1 M.
    trainable, moving = _expected_counts('convnet', 3)
    self.assertEqual(trainable, 3122560)
    self.assertEqual(moving, 4096)

  @parameterized.parameters(
      ('convnet', 32, 6), ('convnet', 28, 5), ('convnet', 12, 1),
      ('convnet', 8, 2))
  def test_convnet_valid_conv_map_size(self, name, size, expected):
    with tf.Graph().as_default() as g:
      _, embedding = _build(name, (size, size, 3), False, _params())
      (conv,) = [op for op in g.get_operations()
                 if op.type == 'Conv2D' and 'conv3_1/' in op.name]
    self.assertEqual(conv.outputs[0].shape.as_list(),
                     [2, expected, expected, 512])
    self.assertEqual(embedding.shape.as_list(), [2, 128])

  @parameterized.parameters('convnet', 'nin', 'wrn', 'resnet')
  def test_tiny_images(self, name):
    with tf.Graph().as_default() as g:
      images, embedding = _build(name, (8, 8, 3), True, _params())
      with self.session(graph=g) as sess:
        sess.run(tf.global_variables_initializer())
        value = sess.run(embedding, {images: np.ones([2, 8, 8, 3])})
    # resnet: scales auto = ceil(log2(8)) - 2 = 1 stage of 32 filters.
    dim = 32 if name == 'resnet' else EMBED_DIM[name]
    self.assertEqual(value.shape, (2, dim))

  def test_resnet_scales_and_params(self):
    auto = _params(scales=0)
    self.assertEqual([resnet.num_scales(auto, w) for w in (8, 28, 32, 64)],
                     [1, 3, 3, 4])
    self.assertEqual(resnet.num_scales(_params(scales=2), 32), 2)
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, 'resnet: repeat'):
        _build('resnet', (8, 8, 3), True, _params(repeat=0))
      _, y = _build('resnet', (16, 16, 3), False,
                    _params(filters=8, repeat=1, scales=3))
    self.assertEqual(y.shape.as_list(), [2, 32])

  def test_initializers(self):
    with tf.Graph().as_default() as g:
      _build('resnet', (8, 8, 3), False, _params(filters=64, scales=1))
      _build('convnet', (12, 12, 3), False, _params())
      kernels = {v.op.name: v for v in g.get_collection(
          tf.GraphKeys.GLOBAL_VARIABLES) if v.op.name.endswith('kernel')}
      with self.session(graph=g) as sess:
        sess.run(tf.global_variables_initializer())
        libml = sess.run(kernels['model/resnet/stage1_block2/conv2/kernel'])
        he = sess.run(kernels['model/convnet/conv2_2/kernel'])
    # libml: N(0, 2 / (k * k * filters_out)); Keras he_normal: 2 / fan_in.
    self.assertAllClose(libml.std(), math.sqrt(2. / (9 * 64)), rtol=0.02)
    self.assertAllClose(he.std(), math.sqrt(2. / (9 * 256)), rtol=0.02)
    # Truncated at two standard deviations of the untruncated normal.
    self.assertLessEqual(np.abs(he).max(),
                         2 * math.sqrt(2. / (9 * 256)) / .87962566 + 1e-6)

  @parameterized.parameters('convnet', 'nin', 'wrn', 'resnet')
  def test_variables_shared_and_seen_by_outer_custom_getter(self, name):
    params = _params(filters=8, repeat=2, net_dropout=0.5)
    with tf.Graph().as_default() as g:
      _build(name, (12, 12, 3), True, params)
      variables = g.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
      num_moments = len(layers.get_moments(g))
      self.assertEqual(num_moments,
                       len(g.get_collection(tf.GraphKeys.UPDATE_OPS)) // 2)
      self.assertEqual(
          num_moments,
          len([v for v in variables if v.op.name.endswith('moving_mean')]))
      _build(name, (12, 12, 3), False, params)
      self.assertLen(g.get_collection(tf.GraphKeys.GLOBAL_VARIABLES),
                     len(variables))
      seen = []

      def recording_getter(getter, *args, **kwargs):
        seen.append(kwargs['name'])
        return getter(*args, **kwargs)

      with tf.variable_scope(tf.get_variable_scope(),
                             custom_getter=recording_getter):
        _build(name, (12, 12, 3), False, params)
      self.assertLen(g.get_collection(tf.GraphKeys.GLOBAL_VARIABLES),
                     len(variables))
      # Eval calls add no batch-norm moments or updates.
      self.assertLen(layers.get_moments(g), num_moments)
    self.assertCountEqual(seen, [v.op.name for v in variables])

  def test_ema_getter_substitutes_weights(self):
    params = _params(filters=4, repeat=1, scales=1)
    with tf.Graph().as_default() as g:
      images, raw = _build('resnet', (8, 8, 3), False, params)
      ema = tf.train.ExponentialMovingAverage(0.5)
      ema.apply(tf.trainable_variables())

      def ema_getter(getter, *args, **kwargs):
        var = getter(*args, **kwargs)
        average = ema.average(var)
        return var if average is None else average

      with tf.variable_scope(tf.get_variable_scope(), custom_getter=ema_getter):
        with tf.variable_scope('model', reuse=tf.AUTO_REUSE):
          shadow = networks.get('resnet')(images, False, params)
      zero_shadows = [tf.assign(ema.average(v), tf.zeros_like(v))
                      for v in tf.trainable_variables()]
      with self.session(graph=g) as sess:
        sess.run(tf.global_variables_initializer())
        x = np.random.RandomState(0).randn(2, 8, 8, 3)
        raw_before, shadow_before = sess.run([raw, shadow], {images: x})
        sess.run(zero_shadows)
        raw_after, shadow_after = sess.run([raw, shadow], {images: x})
    self.assertAllClose(raw_before, shadow_before)
    self.assertAllClose(raw_after, raw_before)
    self.assertGreater(np.abs(raw_after).sum(), 0.)
    self.assertAllEqual(shadow_after, np.zeros_like(shadow_after))

  @parameterized.parameters(('convnet', 2), ('nin', 2), ('wrn', 9))
  def test_dropout_only_in_training(self, name, num_dropouts):
    x = np.random.RandomState(0).randn(2, 12, 12, 3)

    def run(training, rate):
      with tf.Graph().as_default() as g:
        images, y = _build(name, (12, 12, 3), training,
                           _params(net_dropout=rate))
        dropouts = [op for op in g.get_operations()
                    if op.type == 'RandomUniform']
        with self.session(graph=g) as sess:
          sess.run(tf.global_variables_initializer())
          return len(dropouts), [sess.run(y, {images: x}) for _ in range(2)]

    count, (first, second) = run(True, 0.5)
    self.assertEqual(count, num_dropouts)
    self.assertGreater(np.abs(first - second).max(), 1e-4)
    for training, rate in ((False, 0.5), (True, 0.)):
      count, (first, second) = run(training, rate)
      self.assertEqual(count, 0)
      self.assertAllEqual(first, second)


if __name__ == '__main__':
  tf.test.main()
