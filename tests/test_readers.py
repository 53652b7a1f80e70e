"""Tests of input_pipeline.readers on tiny files in the published formats."""

import gzip
import os
import pickle
import shutil

import numpy as np
import tensorflow.compat.v1 as tf
import tensorflow_datasets as tfds

from input_pipeline import readers
from input_pipeline.errors import DataError
from tests import data_fixtures


class _EvilSystem(object):
  """Pickles to a call of os.system (the global is posix.system on Linux)."""

  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


class CifarTest(tf.test.TestCase):

  def assertSplitsEqual(self, got, expected):
    self.assertEqual(sorted(got), sorted(expected))
    for split, (images, labels) in expected.items():
      self.assertEqual(got[split][0].dtype, np.uint8)
      self.assertEqual(got[split][1].dtype, np.int64)
      self.assertAllEqual(got[split][0], images)
      self.assertAllEqual(got[split][1], labels)

  def test_cifar10_python(self):
    root = self.get_temp_dir()
    expected = data_fixtures.write_cifar10_python(root, n_per_batch=3,
                                                  n_test=2)
    raw = readers.read_cifar10(root)
    self.assertEqual(raw.class_names, data_fixtures.CIFAR10_NAMES)
    self.assertEqual(raw.splits['train'][0].shape, (15, 32, 32, 3))
    self.assertSplitsEqual(raw.splits, expected)
    # The batches directory itself works as source_dir too.
    again = readers.read_cifar10(os.path.join(root, 'cifar-10-batches-py'))
    self.assertAllEqual(again.splits['test'][0], expected['test'][0])

  def test_cifar_pixel_layout_is_channel_major(self):
    root = self.get_temp_dir()
    data_fixtures.write_cifar10_python(root, n_per_batch=1)
    path = os.path.join(root, 'cifar-10-batches-py', 'data_batch_1')
    row = np.arange(3072, dtype=np.int64) % 251
    data_fixtures.py2_pickle(path, {'data': row[None].astype(np.uint8),
                                    'labels': [7]})
    image = readers.read_cifar10(root).splits['train'][0][0]
    # Pixel (r, c) of channel k is byte k*1024 + r*32 + c.
    for r, c, k in ((0, 0, 0), (0, 1, 0), (1, 0, 1), (31, 31, 2), (5, 9, 1)):
      self.assertEqual(image[r, c, k], (k * 1024 + r * 32 + c) % 251)

  def test_cifar10_binary(self):
    root = self.get_temp_dir()
    expected = data_fixtures.write_cifar10_binary(root, n_per_batch=2,
                                                  n_test=3)
    raw = readers.read_cifar10(root)
    self.assertEqual(raw.source, 'cifar10-binary')
    self.assertEqual(raw.class_names, data_fixtures.CIFAR10_NAMES)
    self.assertSplitsEqual(raw.splits, expected)

  def test_cifar10_binary_wrong_size(self):
    root = self.get_temp_dir()
    data_fixtures.write_cifar10_binary(root, n_per_batch=2)
    path = os.path.join(root, 'cifar-10-batches-bin', 'data_batch_4.bin')
    with open(path, 'ab') as f:
      f.write(b'\0' * 10)
    with self.assertRaisesRegex(DataError, 'data_batch_4.bin.*3073'):
      readers.read_cifar10(root)

  def test_cifar10_missing_batch_names_the_file(self):
    root = self.get_temp_dir()
    data_fixtures.write_cifar10_python(root, n_per_batch=1)
    os.remove(os.path.join(root, 'cifar-10-batches-py', 'data_batch_3'))
    with self.assertRaisesRegex(DataError, 'missing file .*data_batch_3'):
      readers.read_cifar10(root)

  def test_cifar10_no_files_at_all(self):
    root = os.path.join(self.get_temp_dir(), 'empty')
    os.makedirs(root)
    with self.assertRaisesRegex(DataError, 'cifar-10-batches-py'):
      readers.read_cifar10(root)
    with self.assertRaisesRegex(DataError, 'does not exist'):
      readers.read_cifar10(os.path.join(root, 'nope'))

  def test_cifar10_wrong_data_shape(self):
    root = self.get_temp_dir()
    data_fixtures.write_cifar10_python(root, n_per_batch=1)
    path = os.path.join(root, 'cifar-10-batches-py', 'data_batch_2')
    data_fixtures.py2_pickle(path, {'data': np.zeros((1, 100), np.uint8),
                                    'labels': [1]})
    with self.assertRaisesRegex(DataError, 'data_batch_2.*uint8 \\[N, 3072\\]'):
      readers.read_cifar10(root)

  def test_cifar100_fine_and_coarse(self):
    root = self.get_temp_dir()
    expected = data_fixtures.write_cifar100_python(root, n_train=6, n_test=4)
    fine = readers.read_cifar100(root)
    self.assertLen(fine.class_names, 100)
    self.assertEqual(fine.class_names[3], 'fine03')
    coarse = readers.read_cifar100(root, coarse=True)
    self.assertLen(coarse.class_names, 20)
    self.assertEqual(coarse.class_names[19], 'coarse19')
    for split, (images, fine_labels, coarse_labels) in expected.items():
      self.assertAllEqual(fine.splits[split][0], images)
      self.assertAllEqual(fine.splits[split][1], fine_labels)
      self.assertAllEqual(coarse.splits[split][1], coarse_labels)

  def test_truncated_pickle(self):
    root = self.get_temp_dir()
    data_fixtures.write_cifar100_python(root)
    path = os.path.join(root, 'cifar-100-python', 'test')
    with open(path, 'rb') as f:
      blob = f.read()
    with open(path, 'wb') as f:
      f.write(blob[:len(blob) // 2])
    with self.assertRaisesRegex(DataError, 'cannot unpickle .*test'):
      readers.read_cifar100(root)


class RestrictedUnpicklerTest(tf.test.TestCase):

  def _victim(self):
    root = self.get_temp_dir()
    data_fixtures.write_cifar10_python(root, n_per_batch=1)
    marker = os.path.join(root, 'pwned')
    path = os.path.join(root, 'cifar-10-batches-py', 'data_batch_1')
    return root, path, marker

  def test_os_system_global_is_refused(self):
    root, path, marker = self._victim()
    with open(path, 'wb') as f:
      f.write(b"cos\nsystem\n(S'touch %s'\ntR." % marker.encode())
    with self.assertRaisesRegex(
        DataError, 'refusing to unpickle .*data_batch_1: global os.system is '
        'not allowed'):
      readers.read_cifar10(root)
    self.assertFalse(os.path.exists(marker))

  def test_reduce_payload_is_refused(self):
    root, path, marker = self._victim()
    with open(path, 'wb') as f:
      pickle.dump({b'data': _EvilSystem('touch ' + marker)}, f, protocol=3)
    with self.assertRaisesRegex(DataError,
                                'refusing to unpickle .*system is not allowed'):
      readers.read_cifar10(root)
    self.assertFalse(os.path.exists(marker))

  def test_builtins_are_refused(self):
    root, path, _ = self._victim()
    with open(path, 'wb') as f:
      f.write(b"c__builtin__\neval\n(S'1+1'\ntR.")
    with self.assertRaisesRegex(DataError, 'global __builtin__.eval'):
      readers.read_cifar10(root)


class SvhnTest(tf.test.TestCase):

  def test_train_test_and_extra(self):
    root = self.get_temp_dir()
    expected = data_fixtures.write_svhn(root, n_train=5, n_test=3, n_extra=4)
    raw = readers.read_svhn(root, extra=True)
    self.assertEqual(list(raw.splits), ['train', 'test', 'extra'])
    self.assertEqual(raw.class_names, [str(d) for d in range(10)])
    for split, (images, labels) in expected.items():
      self.assertAllEqual(raw.splits[split][0], images)
      self.assertAllEqual(raw.splits[split][1], labels)
    self.assertEqual(raw.splits['train'][1][0], 0)  # 10 means digit 0.
    self.assertNotIn('extra', readers.read_svhn(root).splits)

  def test_missing_extra_and_bad_labels(self):
    root = self.get_temp_dir()
    data_fixtures.write_svhn(root)
    with self.assertRaisesRegex(DataError, 'missing file .*extra_32x32.mat'):
      readers.read_svhn(root, extra=True)
    import scipy.io  # pylint: disable=g-import-not-at-top
    scipy.io.savemat(os.path.join(root, 'test_32x32.mat'), {
        'X': np.zeros((32, 32, 3, 2), np.uint8),
        'y': np.array([[3], [0]], np.uint8)})
    with self.assertRaisesRegex(DataError,
                                'test_32x32.mat: label 0 at index 1'):
      readers.read_svhn(root)


class IdxTest(tf.test.TestCase):

  def _write(self, root, gzipped):
    rng = np.random.RandomState(3)
    data = {}
    for prefix, n in (('train', 7), ('t10k', 3)):
      images = rng.randint(0, 256, (n, 5, 4)).astype(np.uint8)
      labels = rng.randint(0, 10, n)
      data_fixtures.write_idx(root, prefix, images, labels, gzipped=gzipped)
      data[prefix] = (images, labels)
    return data

  def test_gzipped_and_plain(self):
    for gzipped in (True, False):
      root = os.path.join(self.get_temp_dir(), 'gz%d' % gzipped)
      data = self._write(root, gzipped)
      raw = readers.read_fashion_mnist(root)
      self.assertEqual(raw.class_names[0], 'T-shirt/top')
      self.assertEqual(raw.class_names[9], 'Ankle boot')
      for split, prefix in (('train', 'train'), ('test', 't10k')):
        images, labels = data[prefix]
        self.assertAllEqual(raw.splits[split][0], images[..., None])
        self.assertAllEqual(raw.splits[split][1], labels)
      self.assertEqual(readers.read_mnist(root).class_names[3], '3')

  def test_bad_magic_size_and_missing(self):
    root = self.get_temp_dir()
    self._write(root, gzipped=False)
    path = os.path.join(root, 'train-labels-idx1-ubyte')
    with open(path, 'rb') as f:
      blob = f.read()
    with open(path, 'wb') as f:
      f.write(b'\0\0\x08\x03' + blob[4:])
    with self.assertRaisesRegex(DataError, 'train-labels-idx1-ubyte: magic '
                                'number 2051, expected 2049'):
      readers.read_mnist(root)
    with open(path, 'wb') as f:
      f.write(blob[:-1])
    with self.assertRaisesRegex(DataError, 'train-labels-idx1-ubyte: 14 '
                                'bytes, expected 15'):
      readers.read_mnist(root)
    os.remove(path)
    with self.assertRaisesRegex(DataError,
                                'missing file .*train-labels-idx1-ubyte'):
      readers.read_mnist(root)

  def test_count_mismatch(self):
    root = self.get_temp_dir()
    data_fixtures.write_idx(root, 'train', np.zeros((4, 2, 2), np.uint8),
                            [1, 2, 3])
    with self.assertRaisesRegex(DataError, '3 labels but .* 4 images'):
      readers.read_mnist(root)

  def test_not_gzip(self):
    root = self.get_temp_dir()
    self._write(root, gzipped=True)
    with open(os.path.join(root, 't10k-images-idx3-ubyte.gz'), 'wb') as f:
      f.write(b'not gzip at all')
    with self.assertRaisesRegex(DataError, 'cannot read .*t10k-images'):
      readers.read_mnist(root)


class ImageFolderTest(tf.test.TestCase):

  def _images(self, n, shape, seed):
    return data_fixtures.random_images(n, shape, seed)

  def test_flat_layout_with_unlabeled(self):
    root = os.path.join(self.get_temp_dir(), 'flat')
    cats, dogs = self._images(2, (6, 5, 3), 1), self._images(3, (6, 5, 3), 2)
    data_fixtures.write_image_folder(root, {'dog': dogs, 'cat': cats})
    data_fixtures.write_image_folder(root, {'unlabeled': self._images(
        2, (6, 5, 3), 3)})
    with open(os.path.join(root, 'cat', 'notes.txt'), 'w') as f:
      f.write('ignored')
    raw = readers.read_image_folder(root)
    self.assertEqual(raw.class_names, ['cat', 'dog'])
    images, labels = raw.splits['train']
    self.assertAllEqual(labels, [0, 0, 1, 1, 1])
    self.assertAllEqual(images, np.concatenate([cats, dogs]))
    self.assertAllEqual(raw.splits['unlabeled'][1], [-1, -1])
    self.assertEqual(raw.splits['unlabeled'][0].shape, (2, 6, 5, 3))
    # With unlabeled_dir='' the folder is just another class.
    self.assertEqual(readers.read_image_folder(root, unlabeled_dir='')
                     .class_names, ['cat', 'dog', 'unlabeled'])

  def test_train_test_layout_grey_jpeg_and_resize(self):
    root = os.path.join(self.get_temp_dir(), 'tt')
    grey = np.full((3, 10, 10, 1), 200, np.uint8)
    data_fixtures.write_image_folder(os.path.join(root, 'train'),
                                     {'a': grey, 'b': grey}, ext='.jpg')
    data_fixtures.write_image_folder(os.path.join(root, 'test'),
                                     {'b': grey[:1]}, ext='.jpeg')
    raw = readers.read_image_folder(root, image_size=4)
    self.assertEqual(list(raw.splits), ['train', 'test'])
    self.assertEqual(raw.splits['train'][0].shape, (6, 4, 4, 1))
    self.assertAllEqual(raw.splits['test'][1], [1])
    # A flat grey image stays flat through JPEG and resizing.
    self.assertAllClose(raw.splits['train'][0].astype(float),
                        np.full((6, 4, 4, 1), 200.), atol=2)

  def test_mixed_shapes_name_the_file(self):
    root = os.path.join(self.get_temp_dir(), 'mixed')
    data_fixtures.write_image_folder(root, {'a': self._images(1, (8, 8, 3), 0),
                                            'b': self._images(1, (9, 8, 3), 0)})
    with self.assertRaisesRegex(DataError, 'b/000.png has shape \\(9, 8, 3\\)'
                                '.*a/000.png has \\(8, 8, 3\\)'):
      readers.read_image_folder(root)
    raw = readers.read_image_folder(root, image_size=8)
    self.assertEqual(raw.splits['train'][0].shape, (2, 8, 8, 3))

  def test_symlinks_outside_are_refused(self):
    base = self.get_temp_dir()
    outside = os.path.join(base, 'outside')
    data_fixtures.write_image_folder(outside, {'secret': self._images(
        1, (4, 4, 3), 0)})
    root = os.path.join(base, 'linked')
    data_fixtures.write_image_folder(root, {'a': self._images(1, (4, 4, 3), 1)})
    os.symlink(os.path.join(outside, 'secret', '000.png'),
               os.path.join(root, 'a', '001.png'))
    with self.assertRaisesRegex(DataError, '001.png resolves to .*outside/'
                                'secret/000.png, outside the source'):
      readers.read_image_folder(root)
    os.remove(os.path.join(root, 'a', '001.png'))
    os.symlink(os.path.join(outside, 'secret'), os.path.join(root, 'b'))
    with self.assertRaisesRegex(DataError, 'outside the source directory'):
      readers.read_image_folder(root)
    # A symlink that stays inside is fine.
    os.remove(os.path.join(root, 'b'))
    os.symlink(os.path.join(root, 'a'), os.path.join(root, 'b'))
    self.assertAllEqual(readers.read_image_folder(root).splits['train'][1],
                        [0, 1])
    os.remove(os.path.join(root, 'b'))

  def test_unreadable_image_and_empty_folder(self):
    root = os.path.join(self.get_temp_dir(), 'bad')
    os.makedirs(os.path.join(root, 'a'))
    with self.assertRaisesRegex(DataError, 'no .png/.jpg/.jpeg images'):
      readers.read_image_folder(root)
    with open(os.path.join(root, 'a', 'x.png'), 'wb') as f:
      f.write(b'not a png')
    with self.assertRaisesRegex(DataError, 'cannot read image .*a/x.png'):
      readers.read_image_folder(root)
    shutil.rmtree(os.path.join(root, 'a'))
    with self.assertRaisesRegex(DataError, 'no class folders'):
      readers.read_image_folder(root)


class TinyTfdsForTest(tfds.core.GeneratorBasedBuilder):
  """A TFDS dataset generated offline: image i is filled with the value i."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(6, 6, 3)),
            'label': tfds.features.ClassLabel(names=['x', 'y', 'z'])}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return [tfds.core.SplitGenerator(name=tfds.Split.TRAIN,
                                     gen_kwargs={'start': 0, 'n': 9}),
            tfds.core.SplitGenerator(name=tfds.Split.TEST,
                                     gen_kwargs={'start': 100, 'n': 4})]

  def _generate_examples(self, start, n):
    for i in range(start, start + n):
      yield i, {'image': np.full((6, 6, 3), i, np.uint8), 'label': i % 3}


class TfdsTest(tf.test.TestCase):

  def test_reads_a_prepared_tfds_dataset(self):
    data_dir = os.path.join(self.get_temp_dir(), 'tfds')
    with readers.tfds_offline():
      TinyTfdsForTest(data_dir=data_dir).download_and_prepare()
    raw = readers.read_tfds('tiny_tfds_for_test', data_dir)
    self.assertEqual(raw.class_names, ['x', 'y', 'z'])
    self.assertEqual(raw.source, 'tfds:tiny_tfds_for_test')
    for split, ids in (('train', range(9)), ('test', range(100, 104))):
      images, labels = raw.splits[split]
      self.assertEqual(images.shape, (len(ids), 6, 6, 3))
      got = sorted(zip(images[:, 0, 0, 0].tolist(), labels.tolist()))
      self.assertEqual(got, [(i, i % 3) for i in ids])
      self.assertTrue(np.all(images == images[:, :1, :1, :1]))

  def test_not_downloaded(self):
    data_dir = self.get_temp_dir()
    with self.assertRaisesRegex(DataError, 'TFDS dataset mnist is not in the '
                                'TFDS data directory'):
      readers.read_tfds('mnist', data_dir)

  def test_examples_to_arrays(self):
    examples = [{'image': np.zeros((2, 2, 1), np.uint8), 'label': 1},
                {'image': np.ones((2, 2, 1), np.uint8)}]
    images, labels = readers.examples_to_arrays(examples)
    self.assertAllEqual(labels, [1, -1])
    self.assertAllEqual(images[1], np.ones((2, 2, 1)))
    with self.assertRaisesRegex(DataError, 'example 1 has shape'):
      readers.examples_to_arrays([examples[0],
                                  {'image': np.zeros((3, 2, 1), np.uint8)}])


class DispatchTest(tf.test.TestCase):

  def test_unknown_dataset(self):
    with self.assertRaisesRegex(ValueError, 'unknown dataset .*cifar10.*'
                                'tfds:NAME'):
      readers.read('imagenet', self.get_temp_dir())

  def test_gzip_fixture_matches_published_header(self):
    root = self.get_temp_dir()
    data_fixtures.write_idx(root, 'train', np.zeros((2, 3, 3), np.uint8),
                            [4, 5])
    with gzip.open(os.path.join(root, 'train-labels-idx1-ubyte.gz')) as f:
      self.assertEqual(f.read(), b'\0\0\x08\x01\0\0\0\x02\x04\x05')
    with gzip.open(os.path.join(root, 'train-images-idx3-ubyte.gz')) as f:
      self.assertEqual(f.read()[:16],
                       b'\0\0\x08\x03\0\0\0\x02\0\0\0\x03\0\0\0\x03')


if __name__ == '__main__':
  tf.test.main()
