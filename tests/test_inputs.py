"""Tests for input_pipeline.inputs (and launch/inspect_data.py)."""

import collections
import os

import numpy as np
from PIL import Image
import tensorflow.compat.v1 as tf

from input_pipeline import errors
from input_pipeline import inputs
from input_pipeline import records
from input_pipeline.needs import InputNeeds
from model_fns import hparams

# Same fields as sources.DataSource; inputs only reads the fields.
DataSource = collections.namedtuple(
    'DataSource', ['name', 'dataset_dir', 'info', 'split', 'files', 'counts'])

SHAPE = [8, 8, 3]
# Every image is constant, its value names it: labeled 10..21, unlabeled
# 100..124, test 200..210. Flips, crops and shifts keep a constant image.
LABELED = list(range(10, 22))
UNLABELED = list(range(100, 125))
TEST = list(range(200, 211))
PARAMS = dict(hparams.COMMON_DEFAULTS, normalization='zero_one',
              shuffle_buffer=64)


def _write(path, values, labeled):
  with tf.io.TFRecordWriter(path) as writer:
    for value in values:
      image = np.full(SHAPE, value, np.uint8)
      writer.write(records.make_example(image, value % 3 if labeled else -1,
                                        value))
  return path


def _ids(images):
  """The value naming each image of a [..., H, W, C] zero_one batch."""
  return np.round(images[..., 0, 0, 0] * 255.).astype(np.int64)


class InputsTestBase(tf.test.TestCase):

  def setUp(self):
    super(InputsTestBase, self).setUp()
    d = self.get_temp_dir()
    files = {
        'labeled': [_write(os.path.join(d, 'labeled-0'), LABELED[:7], True),
                    _write(os.path.join(d, 'labeled-1'), LABELED[7:], True)],
        'unlabeled': [_write(os.path.join(d, 'unlabeled-0'), UNLABELED,
                             False)],
        'test': [_write(os.path.join(d, 'test-0'), TEST[:4], True),
                 _write(os.path.join(d, 'test-1'), TEST[4:], True)],
        'valid': [],
    }
    counts = {'labeled': len(LABELED), 'unlabeled': len(UNLABELED),
              'test': len(TEST), 'valid': 0}
    info = {'name': 'toy', 'image_shape': SHAPE, 'num_classes': 3,
            'mean': [.5] * 3, 'std': [.25] * 3, 'zca': None}
    self.source = DataSource('toy.1@12-0', d, info, None, files, counts)

  def _batches(self, input_fn, count):
    dataset = input_fn()
    element = tf.data.make_one_shot_iterator(dataset).get_next()
    with self.cached_session() as sess:
      return dataset, [sess.run(element) for _ in range(count)]

  def _all(self, input_fn):
    element = tf.data.make_one_shot_iterator(input_fn()).get_next()
    out = []
    with self.cached_session() as sess:
      while True:
        try:
          out.append(sess.run(element))
        except tf.errors.OutOfRangeError:
          return out


class TrainInputTest(InputsTestBase):

  def _check(self, needs, expected, params=PARAMS, batches=2):
    input_fn = inputs.train_input_fn(self.source, needs, params, seed=3)
    dataset, values = self._batches(input_fn, batches)
    features_types, label_type = tf.data.get_output_types(dataset)
    features_shapes, label_shape = tf.data.get_output_shapes(dataset)
    self.assertEqual(sorted(features_types), sorted(expected))
    for key, (dtype, shape) in expected.items():
      self.assertEqual(features_types[key], dtype, key)
      self.assertEqual(features_shapes[key].as_list(), shape, key)
    self.assertEqual(label_type, tf.int64)
    self.assertEqual(label_shape.as_list(), [needs.batch_size])
    for features, labels in values:
      self.assertAllEqual(labels, features['label'])
      for key, (_, shape) in expected.items():
        self.assertEqual(list(features[key].shape), shape, key)
    return [features for features, _ in values]

  def test_supervised(self):
    values = self._check(InputNeeds(4, 'weak'), {
        'image': (tf.float32, [4] + SHAPE), 'label': (tf.int64, [4])})
    for features in values:
      ids = _ids(features['image'])
      self.assertTrue(set(ids) <= set(LABELED))
      self.assertAllEqual(features['label'], ids % 3)

  def test_sesemi_unlabeled_proxy(self):
    needs = InputNeeds(6, 'sesemi', unlabeled_batch=4, proxy='unlabeled',
                       proxy_batch=3, unlabeled_keeps_labeled=True)
    values = self._check(needs, {
        'image': (tf.float32, [6] + SHAPE), 'label': (tf.int64, [6]),
        'unlabeled_label': (tf.int64, [4]),
        'proxy_image': (tf.float32, [18] + SHAPE),
        'proxy_label': (tf.int64, [18])})
    for features in values:
      self.assertAllEqual(features['proxy_label'], np.tile(np.arange(6), 3))

  def test_sesemi_proxy_images_follow_unlabeled_batch(self):
    quiet = dict(PARAMS, aug_noise_std=0., aug_shift=0)
    needs = InputNeeds(2, 'sesemi', unlabeled_batch=4, proxy='unlabeled',
                       proxy_batch=3, unlabeled_views=('weak',))
    values = self._check(needs, {
        'image': (tf.float32, [2] + SHAPE), 'label': (tf.int64, [2]),
        'unlabeled_views': (tf.float32, [4, 1] + SHAPE),
        'unlabeled_label': (tf.int64, [4]),
        'proxy_image': (tf.float32, [18] + SHAPE),
        'proxy_label': (tf.int64, [18])}, params=quiet)
    for features in values:
      unlabeled = _ids(features['unlabeled_views'][:, 0])
      self.assertAllEqual(_ids(features['proxy_image']),
                          np.repeat(unlabeled[:3], 6))
      self.assertTrue(set(unlabeled) <= set(UNLABELED))

  def test_sesemi_labeled_proxy(self):
    quiet = dict(PARAMS, aug_noise_std=0.)
    needs = InputNeeds(4, 'sesemi', proxy='labeled', proxy_batch=2)
    values = self._check(needs, {
        'image': (tf.float32, [4] + SHAPE), 'label': (tf.int64, [4]),
        'proxy_image': (tf.float32, [12] + SHAPE),
        'proxy_label': (tf.int64, [12])}, params=quiet, batches=4)
    for features in values:
      proxy_ids = _ids(features['proxy_image']).reshape(2, 6)
      self.assertTrue(np.all(proxy_ids == proxy_ids[:, :1]))
      self.assertTrue(set(proxy_ids.ravel()) <= set(LABELED))
    # The second labeled stream is shuffled independently of the first.
    firsts = [list(_ids(f['image'][:2])) for f in values]
    proxies = [list(_ids(f['proxy_image'][::6])) for f in values]
    self.assertNotEqual(firsts, proxies)

  def test_mixmatch(self):
    needs = InputNeeds(4, 'weak', unlabeled_ratio=1,
                       unlabeled_views=('weak', 'weak'))
    values = self._check(needs, {
        'image': (tf.float32, [4] + SHAPE), 'label': (tf.int64, [4]),
        'unlabeled_views': (tf.float32, [4, 2] + SHAPE),
        'unlabeled_label': (tf.int64, [4])})
    for features in values:
      views = _ids(features['unlabeled_views'])
      self.assertAllEqual(views[:, 0], views[:, 1])
      self.assertTrue(set(views.ravel()) <= set(UNLABELED))
      self.assertAllEqual(features['unlabeled_label'], [-1] * 4)

  def test_fixmatch(self):
    needs = InputNeeds(2, 'weak', unlabeled_ratio=7,
                       unlabeled_views=('weak', 'strong'))
    values = self._check(needs, {
        'image': (tf.float32, [2] + SHAPE), 'label': (tf.int64, [2]),
        'unlabeled_views': (tf.float32, [14, 2] + SHAPE),
        'unlabeled_label': (tf.int64, [14])}, batches=1)
    weak = values[0]['unlabeled_views'][:, 0]
    strong = values[0]['unlabeled_views'][:, 1]
    self.assertTrue(set(_ids(weak)) <= set(UNLABELED))
    # Cutout leaves zeros in every strong view (4x4 of 8x8, or a clipped
    # corner of at least 2x2).
    for image in strong:
      self.assertGreaterEqual(np.sum(np.all(image == 0, axis=-1)), 4)

  def test_same_seed_same_batches(self):
    # RandAugment's determinism is tested in test_augment; 'realmix' keeps
    # this graph cheap while still drawing many random numbers per image.
    needs = InputNeeds(4, 'sesemi', unlabeled_ratio=1,
                       unlabeled_views=('realmix',))
    runs = []
    for seed in (5, 5, 6):
      with tf.Graph().as_default():
        input_fn = inputs.train_input_fn(self.source, needs, PARAMS, seed=seed)
        element = tf.data.make_one_shot_iterator(input_fn()).get_next()[0]
        with tf.Session() as sess:
          runs.append([sess.run(element) for _ in range(3)])
    for a, b in zip(runs[0], runs[1]):
      for key in a:
        self.assertAllEqual(a[key], b[key])
    self.assertGreater(np.abs(runs[0][0]['image'] - runs[2][0]['image']).max(),
                       0.)

  def test_labeled_epochs_cover_labeled_only(self):
    input_fn = inputs.train_input_fn(self.source, InputNeeds(4, 'none'),
                                     PARAMS, seed=1)
    _, values = self._batches(input_fn, 6)  # 2 epochs of 12.
    ids = np.concatenate([_ids(f['image']) for f, _ in values])
    self.assertAllEqual(np.sort(ids[:12]), LABELED)
    self.assertAllEqual(np.sort(ids[12:]), LABELED)

  def test_unlabeled_keeps_labeled(self):
    seen = {}
    for keeps in (False, True):
      needs = InputNeeds(2, 'none', unlabeled_ratio=4,
                         unlabeled_views=('none',),
                         unlabeled_keeps_labeled=keeps)
      with tf.Graph().as_default():
        input_fn = inputs.train_input_fn(self.source, needs, PARAMS, seed=2)
        element = tf.data.make_one_shot_iterator(input_fn()).get_next()[0]
        with tf.Session() as sess:
          batches = [sess.run(element) for _ in range(10)]  # 80 images.
      seen[keeps] = set(np.concatenate(
          [_ids(b['unlabeled_views'][:, 0]) for b in batches]))
      labels = set(np.concatenate([b['unlabeled_label'] for b in batches]))
      self.assertEqual(labels == {-1}, not keeps)
    self.assertEqual(seen[False], set(UNLABELED))
    self.assertEqual(seen[True], set(UNLABELED) | set(LABELED))

  def test_sharding_splits_the_data(self):
    shards = []
    for index in range(2):
      with tf.Graph().as_default():
        input_fn = inputs.train_input_fn(self.source, InputNeeds(3, 'none'),
                                         dict(PARAMS, shuffle_buffer=0),
                                         seed=1, num_shards=2,
                                         shard_index=index)
        element = tf.data.make_one_shot_iterator(input_fn()).get_next()[0]
        with tf.Session() as sess:
          shards.append(np.concatenate(
              [_ids(sess.run(element)['image']) for _ in range(2)]))
    self.assertEqual(len(set(shards[0])), 6)
    self.assertEqual(len(set(shards[1])), 6)
    self.assertEqual(set(shards[0]) | set(shards[1]), set(LABELED))

  def test_gcn_zca_grouped_normalisation(self):
    # Random images, label = position; 'none' views through the grouped
    # normalisation path must equal the per-image formula.
    d = os.path.join(self.get_temp_dir(), 'zca')
    os.makedirs(d)
    rng = np.random.RandomState(4)
    images = rng.randint(0, 256, [12] + SHAPE).astype(np.uint8)
    path = os.path.join(d, 'labeled-0')
    with tf.io.TFRecordWriter(path) as writer:
      for i, image in enumerate(images):
        writer.write(records.make_example(image, i, i))
    dim = int(np.prod(SHAPE))
    mean = rng.normal(0, .1, dim).astype(np.float32)
    half = rng.normal(0, .1, (dim, dim))
    matrix = (half + half.T).astype(np.float32)
    np.savez(os.path.join(d, 'zca.npz'), mean=mean, matrix=matrix)
    source = self.source._replace(
        dataset_dir=d, info=dict(self.source.info, zca='zca.npz'),
        files=dict(self.source.files, labeled=[path]))
    flat = images.reshape(12, -1) / 255.
    flat = flat - flat.mean(axis=1, keepdims=True)
    flat = 55. * flat / np.linalg.norm(flat, axis=1, keepdims=True)
    expected = (flat - mean).dot(matrix).reshape(images.shape)
    params = dict(PARAMS, normalization='gcn_zca')
    input_fn = inputs.train_input_fn(source, InputNeeds(5, 'none'), params,
                                     seed=0)
    _, values = self._batches(input_fn, 6)
    for features, labels in values:
      self.assertAllClose(features['image'], expected[labels], atol=1e-3)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, 'proxy_batch'):
      inputs.train_input_fn(self.source, InputNeeds(
          2, 'sesemi', unlabeled_batch=2, proxy='unlabeled', proxy_batch=3),
                            PARAMS)
    with self.assertRaisesRegex(ValueError, 'shard_index'):
      inputs.train_input_fn(self.source, InputNeeds(2), PARAMS,
                            num_shards=2, shard_index=2)
    empty = self.source._replace(files=dict(self.source.files, unlabeled=[]))
    with self.assertRaisesRegex(errors.DataError, 'no unlabeled'):
      inputs.train_input_fn(empty, InputNeeds(
          2, unlabeled_ratio=1, unlabeled_views=('weak',)), PARAMS)
    with self.assertRaisesRegex(ValueError, 'unknown normalization'):
      inputs.train_input_fn(self.source, InputNeeds(2),
                            dict(PARAMS, normalization='bogus'))


class StreamContinuesTest(InputsTestBase):
  """Streams continue across pipeline rebuilds (evaluation chunks, resumes):
  checked with the records' `index` values."""

  def _indices(self, files, size, batch, start_step, steps, seed=4,
               buffer_size=64, cached=False):
    """Record indices of `steps` batches of a stream built at `start_step`."""
    params = dict(PARAMS, shuffle_buffer=buffer_size)
    with tf.Graph().as_default():
      records_ = inputs._read(files, SHAPE, cache=cached)
      stream = inputs._stream(records_, params, seed,
                              [inputs.Slot('image', 'none', params)], batch,
                              {'mode': 'zero_one'}, size,
                              start=start_step * batch, cached=cached)
      element = tf.data.make_one_shot_iterator(stream).get_next()
      with tf.Session() as sess:
        return np.concatenate([sess.run(element)['index']
                               for _ in range(steps)])

  def test_chunks_continue_one_stream(self):
    files = self.source.files['unlabeled']
    size = len(UNLABELED)   # 25 images, batches of 4: passes straddle batches
    for cached in (False, True):
      whole = self._indices(files, size, 4, 0, 25, cached=cached)  # 4 passes
      chunked = np.concatenate([
          self._indices(files, size, 4, start, stop - start, cached=cached)
          for start, stop in ((0, 3), (3, 4), (4, 11), (11, 25))])
      self.assertAllEqual(chunked, whole)
      # Every pass is a permutation of the pool: each image once a pass.
      for e in range(4):
        self.assertAllEqual(np.sort(whole[e * size:(e + 1) * size]),
                            UNLABELED)
      # Passes are shuffled, and differently.
      self.assertNotAllEqual(whole[:size], UNLABELED)
      self.assertNotAllEqual(whole[:size], whole[size:2 * size])

  def test_restarted_chunks_draw_every_image_equally(self):
    """What train.py did before: a new pipeline per chunk from position 0
    covered part of the pool; now E passes draw every image E times."""
    files = self.source.files['unlabeled']
    size = len(UNLABELED)
    for cached in (False, True):
      drawn = np.concatenate([
          self._indices(files, size, 5, start, 2, buffer_size=8,
                        cached=cached)
          for start in range(0, 50, 2)])   # 25 chunks of 2 steps: 10 passes
      counts = collections.Counter(drawn.tolist())
      self.assertEqual(sorted(counts), UNLABELED)
      self.assertEqual(set(counts.values()), {10})

  def test_no_shuffle_keeps_file_order(self):
    files = self.source.files['unlabeled']
    for cached in (False, True):
      drawn = self._indices(files, 25, 5, 3, 4, buffer_size=0, cached=cached)
      self.assertAllEqual(drawn, (UNLABELED * 2)[15:35])

  def test_train_input_fn_resumes_at_the_step(self):
    """Every stream (labeled, unlabeled, proxy) of a pipeline built at step
    k gives the batches a pipeline built at step 0 gives from step k on,
    augmentation included."""
    needs = InputNeeds(5, 'sesemi', unlabeled_ratio=1,
                       unlabeled_views=('weak',), proxy='labeled',
                       proxy_batch=2)

    def batches(start_step, count):
      with tf.Graph().as_default():
        input_fn = inputs.train_input_fn(self.source, needs, PARAMS, seed=9,
                                         start_step=start_step)
        element = tf.data.make_one_shot_iterator(input_fn()).get_next()[0]
        with tf.Session() as sess:
          return [sess.run(element) for _ in range(count)]

    whole = batches(0, 9)
    resumed = batches(6, 3)
    for a, b in zip(whole[6:], resumed):
      self.assertEqual(sorted(a), sorted(b))
      for key in a:
        self.assertAllEqual(a[key], b[key], key)
    self.assertNotIn('index', whole[0])

  def test_shard_sizes(self):
    self.assertEqual([inputs.shard_size(25, 2, i) for i in range(2)], [13, 12])
    self.assertEqual(inputs.shard_size(25, 1, 0), 25)
    self.assertEqual(inputs.unlabeled_count(self.source, False), 25)
    self.assertEqual(inputs.unlabeled_count(self.source, True), 37)
    same = self.source._replace(
        files=dict(self.source.files, unlabeled=self.source.files['labeled']),
        counts=dict(self.source.counts, unlabeled=12))
    self.assertEqual(inputs.unlabeled_count(same, True), 12)

  def test_sharded_streams_continue(self):
    """With 2 shards, each shard's pipeline continues its own stream."""
    needs = InputNeeds(3, 'none')

    def ids(start_step, count, shard):
      with tf.Graph().as_default():
        input_fn = inputs.train_input_fn(
            self.source, needs, PARAMS, seed=2, num_shards=2,
            shard_index=shard, start_step=start_step)
        element = tf.data.make_one_shot_iterator(input_fn()).get_next()[0]
        with tf.Session() as sess:
          return np.concatenate([_ids(sess.run(element)['image'])
                                 for _ in range(count)])

    for shard in range(2):
      whole = ids(0, 6, shard)   # 3 passes over the shard's 6 images
      self.assertAllEqual(np.concatenate([ids(0, 2, shard),
                                          ids(2, 4, shard)]), whole)
      self.assertEqual(set(collections.Counter(whole.tolist()).values()), {3})


class EvalInputTest(InputsTestBase):

  def test_eval_covers_each_example_once(self):
    batches = self._all(inputs.eval_input_fn(self.source, 'test', 4, PARAMS))
    self.assertEqual(len(batches), 3)
    masks = np.concatenate([f['mask'] for f, _ in batches])
    index = np.concatenate([f['index'] for f, _ in batches])
    ids = np.concatenate([_ids(f['image']) for f, _ in batches])
    labels = np.concatenate([l for _, l in batches])
    self.assertAllEqual(masks, [1.] * 11 + [0.])
    self.assertAllEqual(index, TEST + [-1])
    self.assertAllEqual(ids, TEST + [0])
    self.assertAllEqual(labels, [v % 3 for v in TEST] + [0])
    for features, _ in batches:
      self.assertEqual(features['mask'].dtype, np.float32)
      self.assertEqual(features['image'].dtype, np.float32)
      self.assertEqual(features['image'].shape, tuple([4] + SHAPE))

  def test_eval_exact_multiple_has_no_padding(self):
    batches = self._all(inputs.eval_input_fn(self.source, 'labeled', 6,
                                             PARAMS))
    self.assertEqual(len(batches), 2)
    self.assertAllEqual(np.concatenate([f['mask'] for f, _ in batches]),
                        [1.] * 12)

  def test_eval_normalises(self):
    params = dict(PARAMS, normalization='standardize')
    features, _ = self._all(inputs.eval_input_fn(self.source, 'test', 11,
                                                 params))[0]
    expected = (np.array(TEST, np.float32) / 255. - .5) / .25
    self.assertAllClose(features['image'][:, 3, 4, 1], expected, atol=1e-5)

  def test_predict_features_only(self):
    batches = self._all(inputs.predict_input_fn(self.source, 'test', 5,
                                                PARAMS))
    self.assertEqual(len(batches), 3)
    self.assertEqual(sorted(batches[0]), ['image', 'index', 'label', 'mask'])
    index = np.concatenate([b['index'] for b in batches])
    self.assertAllEqual(index, TEST + [-1] * 4)

  def test_eval_errors(self):
    with self.assertRaisesRegex(ValueError, 'unknown part'):
      inputs.eval_input_fn(self.source, 'bogus', 4, PARAMS)
    with self.assertRaisesRegex(errors.DataError, 'no .valid. images'):
      inputs.eval_input_fn(self.source, 'valid', 4, PARAMS)
    with self.assertRaisesRegex(ValueError, 'batch_size'):
      inputs.eval_input_fn(self.source, 'test', 0, PARAMS)


class InspectDataTest(tf.test.TestCase):
  """launch/inspect_data.py on a dataset prepared by the real writer."""

  def test_counts_histogram_and_sheet(self):
    from launch import inspect_data  # pylint: disable=g-import-not-at-top
    from tests import data_fixtures  # pylint: disable=g-import-not-at-top
    data_dir = self.get_temp_dir()
    data_fixtures.prepare_tiny_dataset(data_dir, n_train=20, n_test=6)
    _, train_labels = data_fixtures.tiny_arrays(20)
    _, test_labels = data_fixtures.tiny_arrays(6, seed=1)
    output = os.path.join(data_dir, 'sheet.png')
    lines = []
    result = inspect_data.run(data_dir, 'tiny', output, samples=3,
                              printer=lines.append)
    expected_train = np.bincount(train_labels, minlength=4).tolist() + [0]
    expected_test = np.bincount(test_labels, minlength=4).tolist() + [0]
    self.assertEqual(result['histogram']['train'], expected_train)
    self.assertEqual(result['histogram']['labeled'], expected_train)
    self.assertEqual(result['histogram']['test'], expected_test)
    self.assertEqual(result['counts'], {'labeled': 20, 'unlabeled': 20,
                                        'test': 6, 'train': 20})
    text = '\n'.join(lines)
    self.assertIn('test              6', text)
    # Columns: labeled, unlabeled, test, train (valid is empty).
    row = [l for l in lines if l.strip().startswith('0 class0')][0]
    self.assertEqual([int(v) for v in row.split()[2:]],
                     [expected_train[0]] * 2 +
                     [expected_test[0], expected_train[0]])
    with Image.open(output) as image:
      self.assertEqual(image.size, inspect_data.sheet_size(3))
      self.assertEqual(image.format, 'PNG')


if __name__ == '__main__':
  tf.test.main()
