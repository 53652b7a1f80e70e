"""Tests for input_pipeline.augment: semantics against numpy and PIL."""

import numpy as np
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps
import tensorflow.compat.v1 as tf

from input_pipeline import augment
from input_pipeline import preprocessing

PARAMS = {'aug_flip': True, 'aug_crop_pad': 4, 'aug_shift': 2,
          'aug_noise_std': 0.15, 'cutout_frac': 0.5, 'randaugment_ops': 2}


def _image(height=16, width=16, channels=3, seed=0):
  return np.random.RandomState(seed).randint(
      0, 256, (height, width, channels)).astype(np.uint8)


def _seed(i):
  return tf.constant([7, i], tf.int64)


class GeometricTest(tf.test.TestCase):

  def test_flip_mirrors_or_keeps(self):
    x = _image().astype(np.float32)
    outs = self.evaluate([augment.flip_left_right(tf.constant(x), _seed(i))
                          for i in range(24)])
    flipped = [np.array_equal(o, np.fliplr(x)) for o in outs]
    kept = [np.array_equal(o, x) for o in outs]
    self.assertTrue(all(f or k for f, k in zip(flipped, kept)))
    self.assertTrue(any(flipped))
    self.assertTrue(any(kept))

  def test_pad_crop_is_window_of_reflect_padded(self):
    x = _image(12, 10).astype(np.float32)
    padded = np.pad(x, [[4, 4], [4, 4], [0, 0]], mode='reflect')
    outs = self.evaluate([augment.pad_crop(tf.constant(x), 4, _seed(i))
                          for i in range(24)])
    offsets = set()
    for out in outs:
      self.assertEqual(out.shape, x.shape)
      found = [(t, l) for t in range(9) for l in range(9)
               if np.array_equal(padded[t:t + 12, l:l + 10], out)]
      self.assertTrue(found)
      offsets.add(found[0])
    self.assertGreater(len(offsets), 5)

  def test_shift_by_matches_symmetric_reference(self):
    x = _image(9, 11).astype(np.float32)

    def reflect(i, n):
      return -i - 1 if i < 0 else (2 * n - 1 - i if i >= n else i)

    for dy, dx in [(2, -1), (-2, 2), (0, 1), (1, 0)]:
      expected = np.zeros_like(x)
      for y in range(9):
        for c in range(11):
          expected[y, c] = x[reflect(y - dy, 9), reflect(c - dx, 11)]
      out = self.evaluate(augment.shift_by(tf.constant(x), dy, dx, 2))
      self.assertAllEqual(out, expected)

  def test_random_shift_in_range(self):
    x = _image().astype(np.float32)
    outs = self.evaluate([augment.random_shift(tf.constant(x), 2, _seed(i))
                          for i in range(16)])
    candidates = {
        (dy, dx): self.evaluate(augment.shift_by(tf.constant(x), dy, dx, 2))
        for dy in range(-2, 3) for dx in range(-2, 3)}
    seen = set()
    for out in outs:
      match = [k for k, v in candidates.items() if np.array_equal(v, out)]
      self.assertTrue(match)
      seen.add(match[0])
    self.assertGreater(len(seen), 4)

  def test_noise_std(self):
    x = np.zeros((64, 64, 3), np.float32)
    out = self.evaluate(augment.gaussian_noise(tf.constant(x), 0.15, _seed(0)))
    self.assertAllClose(out.std(), 0.15, rtol=0.05)
    self.assertAllClose(out.mean(), 0., atol=0.01)

  def test_cutout_at_zeroes_square(self):
    x = np.ones((16, 16, 3), np.float32)
    out = self.evaluate(augment.cutout_at(tf.constant(x), 8, 6, 6))
    expected = x.copy()
    expected[5:11, 3:9] = 0
    self.assertAllEqual(out, expected)
    corner = self.evaluate(augment.cutout_at(tf.constant(x), 1, 15, 6))
    expected = x.copy()
    expected[0:4, 12:16] = 0
    self.assertAllEqual(corner, expected)

  def test_random_cutout_square_of_size(self):
    x = np.ones((16, 16, 2), np.float32)
    outs = self.evaluate([augment.random_cutout(tf.constant(x), 8, _seed(i))
                          for i in range(32)])
    centres = set()
    for out in outs:
      rows, cols = np.nonzero(out[:, :, 0] == 0)
      self.assertAllEqual(out[:, :, 0], out[:, :, 1])
      top, bottom = rows.min(), rows.max() + 1
      left, right = cols.min(), cols.max() + 1
      self.assertEqual(len(rows), (bottom - top) * (right - left))
      for lo, hi in [(top, bottom), (left, right)]:
        # An 8-pixel side, clipped only where it touches a border.
        self.assertTrue(hi - lo == 8 or lo == 0 or hi == 16)
        self.assertGreaterEqual(hi - lo, 4)
      centres.add((top, left))
    self.assertGreater(len(centres), 10)


class ProxyTest(tf.test.TestCase):

  def test_proxy_transforms_match_numpy(self):
    images = np.random.RandomState(1).rand(3, 5, 5, 2).astype(np.float32)
    out, labels = self.evaluate(augment.proxy_transforms(tf.constant(images)))
    self.assertEqual(out.shape, (18, 5, 5, 2))
    self.assertAllEqual(labels, np.tile(np.arange(6), 3))
    for p in range(3):
      expected = [np.rot90(images[p], k) for k in range(4)]
      expected += [np.fliplr(images[p]), np.flipud(images[p])]
      for t in range(6):
        self.assertAllEqual(out[6 * p + t], expected[t])

  def test_proxy_transforms_need_square(self):
    with self.assertRaisesRegex(ValueError, 'square'):
      augment.proxy_transforms(tf.zeros([2, 4, 5, 3]))


class PixelOpsTest(tf.test.TestCase):
  """The RandAugment ops against PIL on uint8 images (FixMatch used PIL)."""

  def _op(self, image, name, level, sign=1.):
    """Runs one op; the graph (one switch_case) is built once per shape."""
    if image.shape not in self._graphs:
      inputs = (tf.placeholder(tf.uint8, image.shape),
                tf.placeholder(tf.int32, []), tf.placeholder(tf.int32, []),
                tf.placeholder(tf.float32, []))
      output = augment.apply_ra_op(augment.to_unit(inputs[0]), *inputs[1:])
      self._graphs[image.shape] = inputs, output
    inputs, output = self._graphs[image.shape]
    values = (image, augment.RA_OPS.index(name), level, sign)
    return self.evaluate(output, dict(zip(inputs, values))) * 255.

  def setUp(self):
    super(PixelOpsTest, self).setUp()
    self._graphs = {}

  def evaluate(self, tensors, feed_dict=None):
    with self.cached_session() as sess:
      return sess.run(tensors, feed_dict)

  def _assert_close(self, out, expected, atol=1.01, max_off=0.):
    off = np.abs(out - np.asarray(expected, np.float64)) > atol
    self.assertLessEqual(np.mean(off), max_off)

  def test_identity(self):
    x = _image()
    self._assert_close(self._op(x, 'Identity', 5), x, atol=1e-3)

  def test_equalize_autocontrast(self):
    x = (_image() // 2 + 40).astype(np.uint8)
    pil = Image.fromarray(x)
    self._assert_close(self._op(x, 'Equalize', 3), ImageOps.equalize(pil),
                       atol=0.01)
    self._assert_close(self._op(x, 'AutoContrast', 3),
                       ImageOps.autocontrast(pil))

  def test_solarize_posterize(self):
    x = _image()
    pil = Image.fromarray(x)
    for level in (1, 5, 9):
      self._assert_close(self._op(x, 'Solarize', level),
                         ImageOps.solarize(pil, 256 - level * 256 // 10),
                         atol=0.01)
      self._assert_close(self._op(x, 'Posterize', level),
                         ImageOps.posterize(pil, 4 - level * 4 // 10),
                         atol=0.01)

  def test_enhance_ops(self):
    x = _image()
    pil = Image.fromarray(x)
    for name, enhancer in [('Color', ImageEnhance.Color),
                           ('Contrast', ImageEnhance.Contrast),
                           ('Brightness', ImageEnhance.Brightness),
                           ('Sharpness', ImageEnhance.Sharpness)]:
      for level in (1, 9):
        expected = enhancer(pil).enhance(0.1 + 0.18 * level)
        # PIL rounds its grey level and its result to 8 bits.
        self._assert_close(self._op(x, name, level), expected, atol=1.5)

  def test_affine_ops(self):
    x = _image(32, 32)
    pil = Image.fromarray(x)
    fill = (128, 128, 128)

    def transform(data):
      return pil.transform(pil.size, Image.AFFINE, data, Image.NEAREST,
                           fillcolor=fill)

    cases = [('Rotate', 7, 1., pil.rotate(21, fillcolor=fill)),
             ('Rotate', 4, -1., pil.rotate(-12, fillcolor=fill)),
             ('ShearX', 6, 1., transform((1, 0.18, 0, 0, 1, 0))),
             ('ShearY', 9, -1., transform((1, 0, 0, -0.27, 1, 0))),
             ('TranslateX', 3, -1., transform((1, 0, -3, 0, 1, 0))),
             ('TranslateY', 8, 1., transform((1, 0, 0, 0, 1, 8)))]
    for name, level, sign, expected in cases:
      # Fill 0.5 * 255 here vs 128 in PIL; float rounding may move a rare
      # pixel centre across a sampling boundary (1 of 1024 pixels seen).
      self._assert_close(self._op(x, name, level, sign), expected, atol=0.51,
                         max_off=0.005)

  def test_color_ops_on_one_channel(self):
    x = _image(channels=1)
    for name in augment.RA_OPS:
      out = self._op(x, name, 7)
      self.assertEqual(out.shape, x.shape)
    self._assert_close(self._op(x, 'Color', 2), x, atol=1e-3)


class RandomPixelTest(tf.test.TestCase):

  def _rand_augment(self, num_ops, seeds):
    seed = tf.placeholder(tf.int64, [2])
    out = augment.rand_augment(augment.to_unit(tf.constant(_image())),
                               num_ops, seed, prob=1.)
    with self.cached_session() as sess:
      return [sess.run(out, {seed: [7, i]}) for i in seeds]

  def test_rand_augment_shape_range_changes(self):
    outs = self._rand_augment(2, range(12))
    base = _image() / 255.
    changed = 0
    for out in outs:
      self.assertEqual(out.shape, (16, 16, 3))
      self.assertEqual(out.dtype, np.float32)
      self.assertGreaterEqual(out.min(), 0.)
      self.assertLessEqual(out.max(), 1.)
      changed += int(np.abs(out - base).max() > 1e-3)
    self.assertGreaterEqual(changed, 9)

  def test_rand_augment_seeded(self):
    a, b, c = self._rand_augment(3, [1, 1, 2])
    self.assertAllEqual(a, b)
    self.assertGreater(np.abs(a - c).max(), 0)

  def test_color_jitter(self):
    for channels in (3, 1):
      x = _image(channels=channels) / 255.
      outs = self.evaluate([augment.color_jitter(tf.constant(x, tf.float32),
                                                 _seed(i)) for i in range(4)])
      for out in outs:
        self.assertEqual(out.shape, x.shape)
        self.assertGreaterEqual(out.min(), 0.)
        self.assertLessEqual(out.max(), 1.)
        self.assertGreater(np.abs(out - x).mean(), 1e-3)


def _reference_eraser_areas(draws, height, width, rng):
  """Erased area fractions of the reference's eraser (numpy, own code)."""
  areas = []
  for _ in range(draws):
    if rng.rand() > augment.ERASE['prob']:
      areas.append(0.)
      continue
    while True:
      size = rng.uniform(*augment.ERASE['area']) * height * width
      ratio = rng.uniform(*augment.ERASE['aspect'])
      w, h = int(np.sqrt(size / ratio)), int(np.sqrt(size * ratio))
      left, top = rng.randint(0, width), rng.randint(0, height)
      if left + w <= width and top + h <= height:
        break
    areas.append(w * h / float(height * width))
  return np.array(areas)


class RealMixAugmentTest(tf.test.TestCase):
  """RealMix's cutout and colour jitter on the statistics of many draws."""

  DRAWS = 3000

  def _erased(self, height=28, width=28, channels=1):
    image = tf.fill([height, width, channels], 0.5)
    seeds = tf.stack([tf.fill([self.DRAWS], tf.constant(11, tf.int64)),
                      tf.range(self.DRAWS, dtype=tf.int64)], axis=1)
    outs = tf.map_fn(lambda seed: augment.random_erase(image, seed), seeds,
                     dtype=tf.float32, parallel_iterations=32)
    return self.evaluate(outs)

  def test_cutout_probability_area_and_fill(self):
    outs = self._erased()
    changed = np.any(outs != 0.5, axis=-1)            # [N, H, W]
    areas = changed.mean(axis=(1, 2))
    erased = areas > 0
    # Probability 0.3 (a box can truncate to 0 x N; rare).
    self.assertAllClose(erased.mean(), 0.3, atol=0.035)
    self.assertLessEqual(areas.max(), 0.4 + 1e-9)
    self.assertGreater(areas.max(), 0.3)
    self.assertLess(areas[erased].min(), 0.05)
    # The mean erased area matches the reference procedure's.
    reference = _reference_eraser_areas(20000, 28, 28,
                                        np.random.RandomState(0))
    self.assertAllClose(areas[erased].mean(), reference[reference > 0].mean(),
                        atol=0.015)
    for out, mask in zip(outs[erased][:200], changed[erased][:200]):
      rows, cols = np.nonzero(mask)
      # One rectangle, one fill value.
      box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
      self.assertTrue(box.all())
      self.assertLen(np.unique(out[mask]), 1)
    fills = np.array([out[mask][0] for out, mask in
                      zip(outs[erased], changed[erased])])
    # Random fill U(0, 1): mean 0.5, standard deviation 0.289.
    self.assertBetween(fills.min(), 0., 0.05)
    self.assertBetween(fills.max(), 0.95, 1.)
    self.assertAllClose(fills.std(), 12 ** -0.5, atol=0.03)

  def test_cutout_is_seeded(self):
    image = tf.constant(_image() / 255., tf.float32)
    a, b = self.evaluate([augment.random_erase(image, _seed(3)),
                          augment.random_erase(image, _seed(3))])
    self.assertAllEqual(a, b)

  def test_brightness_delta_is_the_reference_scale(self):
    # A one-channel image gets brightness and contrast only; contrast does
    # not change a constant image, so out - 0.5 is the brightness delta.
    image = tf.fill([4, 4, 1], 0.5)
    deltas = np.array(self.evaluate(
        [augment.color_jitter(image, _seed(i)) for i in range(400)]))
    deltas = deltas.reshape(400, -1)[:, 0] - 0.5
    self.assertLessEqual(np.abs(deltas).max(), 0.05 + 1e-6)
    self.assertGreater(deltas.max(), 0.045)
    self.assertLess(deltas.min(), -0.045)
    self.assertAllClose(deltas.mean(), 0., atol=0.006)


class ViewTest(tf.test.TestCase):

  def _views(self, image, name, params, norm, seeds):
    seed = tf.placeholder(tf.int64, [2])
    out = augment.view(augment.to_unit(tf.constant(image)), name, params,
                       norm, seed)
    with self.cached_session() as sess:
      return [sess.run(out, {seed: [7, i]}) for i in seeds]

  def test_every_view_shape_and_determinism(self):
    image = _image()
    norm = {'mode': 'minus_one_one'}
    for name in augment.VIEWS:
      a, b = self._views(image, name, PARAMS, norm, [3, 3])
      self.assertEqual(a.shape, (16, 16, 3))
      self.assertEqual(a.dtype, np.float32)
      self.assertAllEqual(a, b)
      if name != 'sesemi':
        self.assertGreaterEqual(a.min(), -1.)
        self.assertLessEqual(a.max(), 1.)

  def test_none_is_normalisation(self):
    image = _image()
    norm = {'mode': 'standardize', 'mean': np.array([.4, .5, .6], np.float32),
            'std': np.array([.2, .25, .3], np.float32)}
    out, = self._views(image, 'none', PARAMS, norm, [0])
    self.assertAllClose(out, (image / 255. - norm['mean']) / norm['std'],
                        atol=1e-5)

  def test_weak_is_flip_and_crop_of_normalised(self):
    image = _image()
    normalised = image / 127.5 - 1.
    padded = [np.pad(v, [[4, 4], [4, 4], [0, 0]], mode='reflect')
              for v in (normalised, np.fliplr(normalised))]
    outs = self._views(image, 'weak', PARAMS, {'mode': 'minus_one_one'},
                       range(8))
    for out in outs:
      self.assertTrue(any(
          np.allclose(p[t:t + 16, l:l + 16], out, atol=1e-6)
          for p in padded for t in range(9) for l in range(9)))

  def test_strong_has_cutout(self):
    image = np.full((16, 16, 3), 200, np.uint8)
    norm = {'mode': 'zero_one'}
    for name in ('strong',):
      for out in self._views(image, name, PARAMS, norm, range(4)):
        # A cutout of side 8, at worst clipped to a 4x4 corner.
        self.assertGreaterEqual(np.sum(np.all(out == 0, axis=-1)), 16)

  def test_sesemi_noise_on_shift(self):
    image = _image()
    norm = {'mode': 'zero_one'}
    quiet = dict(PARAMS, aug_noise_std=0., aug_flip=False)
    noisy = dict(PARAMS, aug_flip=False)
    clean, = self._views(image, 'sesemi', quiet, norm, [5])
    noised, = self._views(image, 'sesemi', noisy, norm, [5])
    self.assertAllClose(np.std(noised - clean), 0.15, rtol=0.1)
    normalised = image / 255.
    self.assertTrue(any(
        np.allclose(clean, self.evaluate(
            augment.shift_by(tf.constant(normalised), dy, dx, 2)), atol=1e-6)
        for dy in range(-2, 3) for dx in range(-2, 3)))

  def test_gcn_view_uses_preprocessing(self):
    image = _image()
    norm = preprocessing.norm_spec({'image_shape': [16, 16, 3]}, 'gcn', '')
    out, = self._views(image, 'none', PARAMS, norm, [0])
    flat = image.reshape(-1) / 255.
    flat = flat - flat.mean()
    self.assertAllClose(out.reshape(-1), 55. * flat / np.linalg.norm(flat),
                        atol=1e-4)

  def test_unknown_view(self):
    with self.assertRaisesRegex(ValueError, 'unknown view'):
      augment.view(tf.zeros([4, 4, 3]), 'bogus', PARAMS,
                   {'mode': 'zero_one'}, _seed(0))


if __name__ == '__main__':
  tf.test.main()
