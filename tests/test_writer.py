"""Tests of input_pipeline.writer, dataset_info and zca."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import dataset_info
from input_pipeline import fileio
from input_pipeline import records
from input_pipeline import splits as splits_lib
from input_pipeline import writer
from input_pipeline import zca
from input_pipeline.errors import DataError
from tests import data_fixtures


def _read_all(paths):
  return [example for path in paths for example in records.read_examples(path)]


def _complete_dirs(data_dir):
  """Directories under data_dir that look like a dataset."""
  return sorted(root for root, _, files in os.walk(data_dir)
                if dataset_info.INFO_FILE in files)


class WriteDatasetTest(tf.test.TestCase):

  def _splits(self):
    train = data_fixtures.tiny_arrays(10, (5, 4, 3), 3, seed=0)
    test = data_fixtures.tiny_arrays(4, (5, 4, 3), 3, seed=1)
    unlabeled = (data_fixtures.random_images(3, (5, 4, 3), 2),
                 np.array([-1, -1, 2]))
    return {'train': train, 'test': test, 'unlabeled': unlabeled}

  def test_layout_records_and_info(self):
    data_dir = self.get_temp_dir()
    splits = self._splits()
    path = writer.write_dataset(data_dir, 'tiny', splits, ['a', 'b', 'c'],
                                'test', shards_per_split={'train': 3})
    self.assertEqual(path, os.path.join(data_dir, 'tiny'))
    info = dataset_info.load(path)
    self.assertEqual(info['image_shape'], [5, 4, 3])
    self.assertEqual(info['num_classes'], 3)
    self.assertEqual(info['class_names'], ['a', 'b', 'c'])
    self.assertIsNone(info['zca'])
    self.assertEqual(list(info['splits']), ['train', 'test', 'unlabeled'])
    shards = info['splits']['train']['shards']
    self.assertEqual([s['file'] for s in shards],
                     ['train-%05d-of-00003.tfrecord' % i for i in range(3)])
    self.assertEqual([s['count'] for s in shards], [4, 3, 3])
    self.assertEqual(sorted(os.listdir(path)), sorted(
        [dataset_info.INFO_FILE, 'test-00000-of-00001.tfrecord',
         'unlabeled-00000-of-00001.tfrecord'] + [s['file'] for s in shards]))
    for s in shards:
      with open(os.path.join(path, s['file']), 'rb') as f:
        blob = f.read()
      self.assertEqual(s['sha256'], hashlib.sha256(blob).hexdigest())
      self.assertEqual(s['bytes'], len(blob))
    for split, (images, labels) in splits.items():
      examples = _read_all(dataset_info.shard_paths(path, info, split))
      self.assertEqual(info['splits'][split]['count'], len(images))
      self.assertAllEqual(np.stack([e[0] for e in examples]), images)
      self.assertAllEqual([e[1] for e in examples], labels)
      self.assertAllEqual([e[2] for e in examples], np.arange(len(images)))
    pixels = splits['train'][0].reshape(-1, 3) / 255.0
    self.assertAllClose(info['mean'], pixels.mean(axis=0), atol=1e-9)
    self.assertAllClose(info['std'], pixels.std(axis=0), atol=1e-9)
    self.assertEqual(_complete_dirs(data_dir), [path])
    dataset_info.verify(path, info, deep=True)

  def test_parallel_encoding_gives_identical_shards(self):
    images = data_fixtures.random_images(writer._PARALLEL_MIN_IMAGES,
                                         (3, 3, 1), 5)
    labels = np.arange(len(images)) % 2
    infos = []
    for name, parallel in (('serial', False), ('parallel', True)):
      saved = writer._PARALLEL_MIN_IMAGES
      writer._PARALLEL_MIN_IMAGES = len(images) if parallel else 10 ** 9
      try:
        path = writer.write_dataset(self.get_temp_dir(), name,
                                    {'train': (images, labels)}, ['x', 'y'],
                                    'test')
      finally:
        writer._PARALLEL_MIN_IMAGES = saved
      infos.append(dataset_info.load(path)['splits'])
    self.assertEqual(infos[0], infos[1])

  def test_default_shards_hold_about_10000_images(self):
    self.assertEqual(writer.num_shards_for(1), 1)
    self.assertEqual(writer.num_shards_for(10000), 1)
    self.assertEqual(writer.num_shards_for(10001), 2)
    self.assertEqual(writer.num_shards_for(60000), 6)

  def test_labels_out_of_range_name_split_and_index(self):
    splits = self._splits()
    splits['test'] = (splits['test'][0], np.array([0, 1, 3, 2]))
    with self.assertRaisesRegex(DataError, 'split test: label 3 at index 2 is '
                                'outside 0..2'):
      writer.write_dataset(self.get_temp_dir(), 'bad', splits, 'abc', 't')
    splits = self._splits()
    splits['train'][1][4] = -1
    with self.assertRaisesRegex(DataError, 'split train: label -1 at index 4'):
      writer.write_dataset(self.get_temp_dir(), 'bad', splits, 'abc', 't')
    splits = self._splits()
    splits['unlabeled'] = (splits['unlabeled'][0], np.array([-1, -2, 0]))
    with self.assertRaisesRegex(DataError, 'split unlabeled: label -2 at '
                                'index 1 is outside -1..2'):
      writer.write_dataset(self.get_temp_dir(), 'bad', splits, 'abc', 't')
    self.assertEqual(_complete_dirs(self.get_temp_dir()), [])

  def test_wrong_shapes(self):
    splits = self._splits()
    splits['test'] = (np.zeros((4, 4, 4, 3), np.uint8), splits['test'][1])
    with self.assertRaisesRegex(DataError, 'split test: image 0 has shape '
                                '\\[4, 4, 3\\], train images have '
                                '\\[5, 4, 3\\]'):
      writer.write_dataset(self.get_temp_dir(), 'bad', splits, 'abc', 't')
    images = list(self._splits()['train'][0])
    images[6] = images[6][:4]
    with self.assertRaisesRegex(DataError, 'split train: image 6 has shape'):
      writer.write_dataset(self.get_temp_dir(), 'bad',
                           {'train': (images, np.zeros(10, int))}, 'abc', 't')
    with self.assertRaisesRegex(DataError, 'must be uint8'):
      writer.write_dataset(self.get_temp_dir(), 'bad', {'train': (
          np.zeros((2, 2, 2, 1), np.float32), [0, 0])}, 'a', 't')
    with self.assertRaisesRegex(DataError, 'C in 1, 3, 4'):
      writer.write_dataset(self.get_temp_dir(), 'bad', {'train': (
          np.zeros((2, 2, 2, 2), np.uint8), [0, 0])}, 'a', 't')
    with self.assertRaisesRegex(DataError, 'needs a train split'):
      writer.write_dataset(self.get_temp_dir(), 'bad', {'test': (
          np.zeros((2, 2, 2, 1), np.uint8), [0, 0])}, 'a', 't')

  def test_bad_name(self):
    with self.assertRaisesRegex(ValueError, 'invalid dataset name'):
      writer.write_dataset(self.get_temp_dir(), 'a.b', self._splits(), 'abc',
                           't')
    with self.assertRaisesRegex(ValueError, 'invalid dataset name'):
      writer.write_dataset(self.get_temp_dir(), '../x', self._splits(), 'abc',
                           't')

  def test_existing_dataset_needs_overwrite(self):
    data_dir = self.get_temp_dir()
    path = writer.write_dataset(data_dir, 'tiny', self._splits(), 'abc', 't')
    os.makedirs(os.path.join(path, 'splits', 'old'))
    with self.assertRaisesRegex(DataError, 'dataset .*tiny already exists; '
                                'pass --overwrite'):
      writer.write_dataset(data_dir, 'tiny', self._splits(), 'abc', 't')
    splits = self._splits()
    del splits['unlabeled']
    writer.write_dataset(data_dir, 'tiny', splits, 'abc', 't', overwrite=True)
    self.assertEqual(list(dataset_info.load(path)['splits']),
                     ['train', 'test'])
    self.assertFalse(os.path.exists(os.path.join(path, 'splits')))
    self.assertEqual(os.listdir(data_dir), ['tiny'])

  def test_unwritable_data_dir(self):
    blocker = os.path.join(self.get_temp_dir(), 'a_file')
    with open(blocker, 'w') as f:
      f.write('x')
    with self.assertRaisesRegex(DataError, 'cannot write to .*a_file/data'):
      writer.write_dataset(os.path.join(blocker, 'data'), 'tiny',
                           self._splits(), 'abc', 't')

  def test_failure_midway_leaves_no_directory(self):
    data_dir = os.path.join(self.get_temp_dir(), 'midway')
    calls = []
    original = records.make_example

    def failing(image, label, index):
      calls.append(index)
      if len(calls) == 7:
        raise RuntimeError('disk on fire')
      return original(image, label, index)

    records.make_example = failing
    try:
      with self.assertRaisesRegex(RuntimeError, 'disk on fire'):
        writer.write_dataset(data_dir, 'tiny', self._splits(), 'abc', 't')
    finally:
      records.make_example = original
    self.assertEqual(os.listdir(data_dir), [])

  def test_full_disk_is_a_data_error(self):
    data_dir = os.path.join(self.get_temp_dir(), 'full')
    original = dataset_info.write_json

    def no_space(path, obj):
      del path, obj
      raise OSError(28, 'No space left on device')

    dataset_info.write_json = no_space
    try:
      with self.assertRaisesRegex(DataError, 'cannot write dataset .*full/tiny:'
                                  ' No space left on device'):
        writer.write_dataset(data_dir, 'tiny', self._splits(), 'abc', 't')
    finally:
      dataset_info.write_json = original
    self.assertEqual(os.listdir(data_dir), [])


# Runs in a child process: rewrites a dataset or a split with overwrite=True
# and kills itself with SIGKILL right after the previous version has been
# moved aside, before the new one is renamed in: the window a kill -9 can hit.
_KILLED_OVERWRITE = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from input_pipeline import splits, writer
    from tests import data_fixtures
    real_rename = os.rename
    def rename(src, dst):
      real_rename(src, dst)
      if '.old-' in dst:
        os.kill(os.getpid(), signal.SIGKILL)
    os.rename = rename
    if {split!r}:
      splits.create_split({data_dir!r}, {split!r}, overwrite=True)
    else:
      data_fixtures.prepare_tiny_dataset({data_dir!r}, seed=5)
""")


class InterruptedOverwriteTest(tf.test.TestCase):
  """kill -9 between moving the old directory aside and renaming the new in."""

  def _killed_overwrite(self, data_dir, split=''):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = _KILLED_OVERWRITE.format(root=root, data_dir=data_dir, split=split)
    proc = subprocess.Popen([sys.executable, '-c', code],
                            stderr=subprocess.PIPE, universal_newlines=True)
    _, stderr = proc.communicate()
    self.assertEqual(proc.returncode, -signal.SIGKILL, stderr[-2000:])
    return proc.pid

  def test_dataset_is_put_back_by_the_next_write(self):
    data_dir = self.get_temp_dir()
    path = data_fixtures.prepare_tiny_dataset(data_dir, seed=0)
    with open(os.path.join(path, dataset_info.INFO_FILE)) as f:
      before = f.read()
    pid = self._killed_overwrite(data_dir)
    aside = '%s.old-%d' % (path, pid)
    self.assertFalse(os.path.exists(path))
    self.assertTrue(os.path.isfile(os.path.join(aside,
                                                dataset_info.INFO_FILE)))
    self.assertTrue(os.path.isdir('%s.tmp-%d' % (path, pid)))

    # The next write, even one refused, restores the previous dataset first.
    with self.assertRaisesRegex(DataError, 'already exists'):
      writer.write_dataset(
          data_dir, 'tiny',
          {'train': data_fixtures.tiny_arrays(8, (8, 8, 3), 4)},
          ['class%d' % c for c in range(4)], 'tiny')
    self.assertEqual(sorted(os.listdir(data_dir)), ['tiny'])
    with open(os.path.join(path, dataset_info.INFO_FILE)) as f:
      self.assertEqual(f.read(), before)
    dataset_info.verify(path, dataset_info.load(path), deep=True)

  def test_split_is_put_back_and_incomplete_copies_dropped(self):
    data_dir = self.get_temp_dir()
    data_fixtures.prepare_tiny_dataset(data_dir)
    split = data_fixtures.make_tiny_split(data_dir)
    target = splits_lib.split_dir(os.path.join(data_dir, 'tiny'), split)
    with open(os.path.join(target, splits_lib.SPLIT_FILE)) as f:
      before = f.read()
    pid = self._killed_overwrite(data_dir, split)
    self.assertFalse(os.path.exists(target))
    # An older aside copy without split.json (never complete) is dropped;
    # one of a live process (this one) is left alone.
    broken = '%s.old-%d' % (target, pid + 100000)
    os.makedirs(broken)
    live = '%s.old-%d' % (target, os.getpid())
    os.makedirs(live)

    self.assertEqual(fileio.recover_interrupted(target, splits_lib.SPLIT_FILE),
                     '%s.old-%d' % (target, pid))
    with open(os.path.join(target, splits_lib.SPLIT_FILE)) as f:
      self.assertEqual(f.read(), before)
    self.assertFalse(os.path.exists(broken))
    self.assertTrue(os.path.exists(live))
    self.assertFalse(os.path.exists('%s.tmp-%d' % (target, pid)))
    os.rmdir(live)
    splits_lib.create_split(data_dir, split, overwrite=True)
    with open(os.path.join(target, splits_lib.SPLIT_FILE)) as f:
      self.assertEqual(f.read(), before)  # Same seed: the same split.


class WriteAtomicTest(tf.test.TestCase):

  def test_whole_file_with_the_umask_mode(self):
    path = os.path.join(self.get_temp_dir(), 'params.json')
    old = os.umask(0o027)
    try:
      fileio.write_atomic(path, '{"a": 1}')
      fileio.write_atomic(path, b'{"a": 2}')
    finally:
      os.umask(old)
    with open(path) as f:
      self.assertEqual(f.read(), '{"a": 2}')
    self.assertEqual(os.stat(path).st_mode & 0o777, 0o640)
    self.assertEqual(os.listdir(os.path.dirname(path)), ['params.json'])


class ZcaTest(tf.test.TestCase):

  def test_gcn_formula(self):
    images = data_fixtures.random_images(3, (4, 4, 3), 0)
    images[2] = 7  # A constant image has norm 0 after centring: stays 0.
    got = zca.gcn_numpy(images)
    self.assertEqual(got.shape, images.shape)
    self.assertEqual(got.dtype, np.float32)
    for image, result in zip(images, got):
      x = image.astype(np.float64).ravel() / 255.0
      x -= x.mean()
      norm = np.linalg.norm(x)
      expected = 55.0 * x / norm if norm >= 1e-10 else x
      self.assertAllClose(result.ravel(), expected, atol=1e-5)
    self.assertAllClose(np.linalg.norm(got[0].ravel()), 55.0, rtol=1e-5)

  def test_fit_matches_direct_computation(self):
    images = data_fixtures.random_images(40, (3, 3, 2), 1)
    mean, matrix = zca.fit_zca(images)
    self.assertEqual(mean.dtype, np.float32)
    self.assertEqual(matrix.shape, (18, 18))
    x = zca.gcn_numpy(images).reshape(40, -1).astype(np.float64)
    cov = np.cov(x, rowvar=False) + 0.1 * np.eye(18)
    u, s, _ = np.linalg.svd(cov)
    expected = u.dot(np.diag(1.0 / np.sqrt(s + 1e-10))).dot(u.T)
    self.assertAllClose(mean, x.mean(axis=0), atol=1e-6)
    self.assertAllClose(matrix, expected, atol=1e-5)
    # Whitened train data: covariance C (C + 0.1 I)^-1, i.e. eigenvalues
    # s / (s + 0.1) along C's eigenvectors; identity as the 0.1 vanishes.
    white = zca.apply_numpy(images, mean, matrix).reshape(40, -1)
    raw_cov = np.cov(x, rowvar=False)
    self.assertAllClose(np.cov(white, rowvar=False),
                        raw_cov.dot(np.linalg.inv(raw_cov + 0.1 * np.eye(18))),
                        atol=1e-4)
    self.assertAllClose(white.mean(axis=0), np.zeros(18), atol=1e-5)

  def test_written_with_dataset(self):
    data_dir = self.get_temp_dir()
    path = data_fixtures.prepare_tiny_dataset(data_dir, shape=(4, 4, 3),
                                              n_train=32, zca=True)
    info = dataset_info.load(path)
    self.assertEqual(info['zca'], 'zca.npz')
    mean, matrix = zca.load(os.path.join(path, 'zca.npz'), dim=48)
    train, _ = data_fixtures.tiny_arrays(32, (4, 4, 3), 4, seed=0)
    expected_mean, expected_matrix = zca.fit_zca(train)
    self.assertAllEqual(mean, expected_mean)
    self.assertAllEqual(matrix, expected_matrix)
    with self.assertRaisesRegex(DataError, 'zca.npz holds mean'):
      zca.load(os.path.join(path, 'zca.npz'), dim=12)


class DatasetInfoTest(tf.test.TestCase):

  def _prepared(self):
    data_dir = self.get_temp_dir()
    path = data_fixtures.prepare_tiny_dataset(data_dir, n_train=40, n_test=8)
    return path, dataset_info.load(path)

  def test_load_errors(self):
    empty = os.path.join(self.get_temp_dir(), 'empty')
    os.makedirs(empty)
    with self.assertRaisesRegex(DataError, 'missing dataset description .*'
                                'empty/dataset_info.json'):
      dataset_info.load(empty)
    path, info = self._prepared()
    info_path = os.path.join(path, dataset_info.INFO_FILE)
    with open(info_path, 'w') as f:
      f.write('{"name": ')
    with self.assertRaisesRegex(DataError, 'cannot parse .*dataset_info.json'):
      dataset_info.load(path)
    del info['std']
    dataset_info.write_json(info_path, info)
    with self.assertRaisesRegex(DataError, 'incomplete: missing std'):
      dataset_info.load(path)
    info['std'] = [0.1, 0.1, 0.1]
    info['splits']['train']['shards'][0]['file'] = '../../etc/passwd'
    dataset_info.write_json(info_path, info)
    with self.assertRaisesRegex(DataError, 'not a plain file name'):
      dataset_info.load(path)

  def test_shard_paths(self):
    path, info = self._prepared()
    self.assertEqual(dataset_info.shard_paths(path, info, 'test'),
                     [os.path.join(path, 'test-00000-of-00001.tfrecord')])
    with self.assertRaisesRegex(DataError, 'has no extra split \\(splits: '
                                'train, test\\)'):
      dataset_info.shard_paths(path, info, 'extra')

  def test_verify_detects_missing_truncated_and_corrupt_shards(self):
    path, info = self._prepared()
    dataset_info.verify(path, info, deep=True)
    shard = os.path.join(path, 'train-00000-of-00001.tfrecord')
    with open(shard, 'rb') as f:
      blob = f.read()
    # A flipped byte inside a record: CRC error when read.
    corrupt = bytearray(blob)
    corrupt[len(blob) // 2] ^= 0xFF
    with open(shard, 'wb') as f:
      f.write(bytes(corrupt))
    with self.assertRaisesRegex(DataError, 'corrupt shard .*train-00000-of-'
                                '00001.tfrecord: sha256'):
      dataset_info.verify(path, info)
    with self.assertRaisesRegex(DataError, 'corrupt shard .*train-00000-of-'
                                '00001.tfrecord: .*(corrupt|checksum|crc)'):
      dataset_info.verify(path, info, deep=True)
    # A truncated file.
    with open(shard, 'wb') as f:
      f.write(blob[:-20])
    with self.assertRaisesRegex(DataError, 'train-00000-of-00001.tfrecord has '
                                '%d bytes, expected %d' % (len(blob) - 20,
                                                          len(blob))):
      dataset_info.verify(path, info)
    with self.assertRaisesRegex(DataError, 'corrupt shard .*train-00000-of-'
                                '00001.tfrecord'):
      dataset_info.verify(path, info, deep=True)
    os.remove(shard)
    with self.assertRaisesRegex(DataError, 'missing shard .*train-00000'):
      dataset_info.verify(path, info)

  def test_deep_verify_checks_record_contents(self):
    path, info = self._prepared()
    shard = os.path.join(path, 'test-00000-of-00001.tfrecord')
    with tf.io.TFRecordWriter(shard) as w:
      for i in range(8):
        w.write(records.make_example(np.zeros((8, 8, 3), np.uint8),
                                     9 if i == 5 else 0, i))
    entry = info['splits']['test']['shards'][0]
    entry['bytes'] = os.path.getsize(shard)
    entry['sha256'] = dataset_info.sha256_file(shard)
    with self.assertRaisesRegex(DataError, 'corrupt shard .*test-00000-of-'
                                '00001.tfrecord: record 5 has label 9'):
      dataset_info.verify(path, info, deep=True)
    dataset_info.verify(path, info)  # The cheap check cannot see it.

  def test_json_is_stable(self):
    path, info = self._prepared()
    with open(os.path.join(path, dataset_info.INFO_FILE)) as f:
      self.assertEqual(json.load(f), info)


if __name__ == '__main__':
  tf.test.main()
