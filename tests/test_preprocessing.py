"""Tests for input_pipeline.preprocessing against numpy formulas."""

import os

import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import errors
from input_pipeline import preprocessing
from input_pipeline import zca

SHAPE = [6, 5, 3]
INFO = {'name': 'toy', 'image_shape': SHAPE, 'mean': [0.3, 0.4, 0.5],
        'std': [0.2, 0.25, 0.3], 'zca': None}


def _images(n=4, seed=0):
  return np.random.RandomState(seed).randint(
      0, 256, [n] + SHAPE).astype(np.uint8)


def _gcn_reference(images):
  """SESEMI's GCN written out: per image, on x / 255."""
  out = []
  for image in images.astype(np.float64) / 255.:
    flat = image.reshape(-1) - image.mean()
    length = np.sqrt(np.sum(flat ** 2))
    out.append(55. * flat / (length if length >= 1e-10 else 1.))
  return np.stack(out).reshape(images.shape)


class NormalizeTest(tf.test.TestCase):

  def _run(self, images, mode, info=INFO, dataset_dir=''):
    norm = preprocessing.norm_spec(info, mode, dataset_dir)
    batch = self.evaluate(preprocessing.normalize(tf.constant(images), norm))
    single = self.evaluate(preprocessing.normalize(tf.constant(images[1]),
                                                   norm))
    self.assertEqual(batch.dtype, np.float32)
    self.assertEqual(batch.shape, images.shape)
    self.assertAllClose(single, batch[1], atol=1e-5)
    return batch

  def test_simple_modes(self):
    images = _images()
    x = images.astype(np.float64)
    mean, std = np.array(INFO['mean']), np.array(INFO['std'])
    expected = {'zero_one': x / 255., 'minus_one_one': x / 127.5 - 1.,
                'standardize': (x / 255. - mean) / std}
    for mode, want in expected.items():
      self.assertAllClose(self._run(images, mode), want, atol=1e-5)
      # float32 pixels on the [0, 255] scale give the same result.
      self.assertAllClose(self._run(images.astype(np.float32), mode), want,
                          atol=1e-5)

  def test_gcn(self):
    images = _images()
    images[2] = 77  # A constant image: zero norm, left alone.
    out = self._run(images, 'gcn')
    self.assertAllClose(out, _gcn_reference(images), atol=1e-4)
    self.assertAllClose(out[2], np.zeros(SHAPE), atol=1e-6)
    self.assertAllClose(out, zca.gcn_numpy(images), atol=1e-4)
    norms = np.sqrt(np.sum(out.reshape(4, -1) ** 2, axis=1))
    self.assertAllClose(norms[[0, 1, 3]], [55.] * 3, rtol=1e-5)

  def test_gcn_zca(self):
    directory = self.get_temp_dir()
    dim = int(np.prod(SHAPE))
    rng = np.random.RandomState(3)
    mean = rng.normal(0, 0.1, dim).astype(np.float32)
    half = rng.normal(0, 0.1, (dim, dim))
    matrix = (half + half.T).astype(np.float32)
    np.savez(os.path.join(directory, 'zca.npz'), mean=mean, matrix=matrix)
    info = dict(INFO, zca='zca.npz')
    images = _images()
    out = self._run(images, 'gcn_zca', info, directory)
    flat = _gcn_reference(images).reshape(4, -1)
    expected = (flat - mean).dot(matrix.astype(np.float64)).reshape(
        images.shape)
    self.assertAllClose(out, expected, atol=1e-3)
    self.assertAllClose(out, zca.apply_numpy(images, mean, matrix), atol=1e-3)

  def test_norm_spec_is_deterministic(self):
    a = preprocessing.norm_spec(INFO, 'standardize', '')
    b = preprocessing.norm_spec(INFO, 'standardize', '')
    self.assertEqual(sorted(a), sorted(b))
    for key in a:
      self.assertAllEqual(a[key], b[key])


class NormSpecErrorsTest(tf.test.TestCase):

  def test_unknown_mode(self):
    with self.assertRaisesRegex(ValueError, 'unknown normalization'):
      preprocessing.norm_spec(INFO, 'bogus', '')

  def test_gcn_zca_without_zca(self):
    directory = self.get_temp_dir()
    with self.assertRaisesRegex(errors.DataError, '--zca'):
      preprocessing.norm_spec(INFO, 'gcn_zca', directory)

  def test_gcn_zca_wrong_size(self):
    directory = self.get_temp_dir()
    np.savez(os.path.join(directory, 'zca.npz'), mean=np.zeros(4, np.float32),
             matrix=np.eye(4, dtype=np.float32))
    with self.assertRaisesRegex(errors.DataError, 'zca.npz'):
      preprocessing.norm_spec(dict(INFO, zca='zca.npz'), 'gcn_zca',
                              directory)

  def test_standardize_without_stats(self):
    with self.assertRaisesRegex(errors.DataError, 'mean'):
      preprocessing.norm_spec(dict(INFO, mean=None), 'standardize', '/d')


class StoredNormTest(tf.test.TestCase):
  """save_norm / load_norm / graph_norm: the model directory's copy."""

  def test_round_trip_with_zca_read_in_the_graph(self):
    rng = np.random.RandomState(0)
    d = 2 * 2 * 3
    norm = {'mode': 'gcn_zca', 'scale': 55., 'eps': 1e-10,
            'zca_mean': rng.randn(d).astype(np.float32),
            'zca_matrix': rng.randn(d, d).astype(np.float32)}
    directory = self.get_temp_dir()
    preprocessing.save_norm(norm, directory)
    loaded = preprocessing.load_norm(directory)
    self.assertAllEqual(loaded['zca_matrix'], norm['zca_matrix'])
    self.assertEqual(loaded['scale'], 55.)
    lazy = preprocessing.stored_norm(directory)
    self.assertNotIn('zca_matrix', lazy)
    images = rng.randint(0, 256, (3, 2, 2, 3)).astype(np.uint8)
    with tf.Graph().as_default() as graph:
      out = preprocessing.normalize(images, preprocessing.graph_norm(lazy))
      consts = [op for op in graph.get_operations() if op.type == 'Const' and
                op.outputs[0].shape.as_list() == [d, d]]
      self.assertEmpty(consts)
      with self.session(graph=graph) as sess:
        got = sess.run(out)
    self.assertAllClose(got, zca.apply_numpy(images, norm['zca_mean'],
                                             norm['zca_matrix']), atol=1e-4)

  def test_standardize_round_trip_and_damage_is_a_data_error(self):
    directory = self.get_temp_dir()
    preprocessing.save_norm({'mode': 'standardize',
                             'mean': np.array([.5], np.float32),
                             'std': np.array([.25], np.float32)}, directory)
    self.assertAllClose(preprocessing.load_norm(directory)['std'], [.25])
    self.assertIsNone(preprocessing.stored_norm(os.path.join(directory, 'x')))
    with open(os.path.join(directory, preprocessing.NORM_FILE), 'w') as f:
      f.write('{')
    with self.assertRaisesRegex(errors.DataError, preprocessing.NORM_FILE):
      preprocessing.load_norm(directory)


if __name__ == '__main__':
  tf.test.main()
