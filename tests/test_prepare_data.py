"""End-to-end tests of launch/prepare_data.py, run as a subprocess."""

import collections
import gzip
import json
import os

import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import dataset_info
from input_pipeline import records
from input_pipeline import sources
from tests import data_fixtures

FASHION_DIR = '/usr/share/datasets/fashion-mnist'
start_entry = data_fixtures.start_entry
run_entry = data_fixtures.run_entry


def looks_complete(data_dir):
  """Directories under data_dir holding dataset_info.json or split.json,
  and any leftover temporary directory."""
  found = []
  for root, dirs, files in os.walk(data_dir):
    if 'dataset_info.json' in files or 'split.json' in files:
      found.append(os.path.relpath(root, data_dir))
    found.extend(os.path.relpath(os.path.join(root, d), data_dir)
                 for d in dirs if '.tmp-' in d)
  return sorted(found)


class PrepareCifarTest(tf.test.TestCase):

  def test_cifar10_pickles_to_dataset_and_split(self):
    base = self.get_temp_dir()
    expected = data_fixtures.write_cifar10_python(
        os.path.join(base, 'raw'), n_per_batch=8, n_test=5)
    # Relative paths resolve against $BUILD_WORKING_DIRECTORY (bazel run).
    result = run_entry(
        'prepare_data', '--dataset=cifar10', '--source_dir=raw',
        '--data_dir=data', '--split=cifar10.3@20-4', '--split=cifar10.4@10-0',
        cwd='/', env={'BUILD_WORKING_DIRECTORY': base})
    self.assertEqual(result.returncode, 0, result.stderr)
    data_dir = os.path.join(base, 'data')
    self.assertIn('prepared cifar10 in %s/cifar10 (32x32x3, 10 classes): '
                  'train 40, test 5' % data_dir, result.stdout)
    self.assertIn('created split cifar10.3@20-4 in %s: labeled 20, valid 4, '
                  'unlabeled 16' % os.path.join(data_dir, 'cifar10', 'splits',
                                                'cifar10.3@20-4'),
                  result.stdout)
    self.assertEqual(looks_complete(data_dir), [
        'cifar10', 'cifar10/splits/cifar10.3@20-4',
        'cifar10/splits/cifar10.4@10-0'])
    source = sources.resolve(data_dir, 'cifar10.3@20-4')
    self.assertEqual(source.info['class_names'], data_fixtures.CIFAR10_NAMES)
    train_images, train_labels = expected['train']
    labeled = [e for p in source.files['labeled']
               for e in records.read_examples(p)]
    self.assertLen(labeled, 20)
    for image, label, index in labeled:
      self.assertAllEqual(image, train_images[index])
      self.assertEqual(label, train_labels[index])
    test = [e for p in source.files['test'] for e in records.read_examples(p)]
    self.assertAllEqual(np.stack([e[0] for e in test]), expected['test'][0])
    # --verify re-reads every record.
    result = run_entry('prepare_data', '--data_dir=%s' % data_dir,
                       '--verify=cifar10', '--verify=cifar10.3@20-4', cwd=base)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn('verified cifar10: train 40, test 5', result.stdout)
    self.assertIn('verified cifar10.3@20-4: labeled 20, valid 4, unlabeled 16',
                  result.stdout)


def _missing_source(base):
  data_fixtures.write_cifar10_python(os.path.join(base, 'raw'), n_per_batch=2)
  os.remove(os.path.join(base, 'raw', 'cifar-10-batches-py', 'data_batch_2'))
  return ['--dataset=cifar10', '--source_dir=raw', '--data_dir=data']


def _corrupt_shard(base):
  path = data_fixtures.prepare_tiny_dataset(os.path.join(base, 'data'),
                                            n_train=40)
  shard = os.path.join(path, 'train-00000-of-00001.tfrecord')
  with open(shard, 'r+b') as f:
    f.seek(300)
    byte = f.read(1)
    f.seek(300)
    f.write(bytes([byte[0] ^ 0x55]))
  return ['--data_dir=data', '--verify=tiny']


def _truncated_shard(base):
  path = data_fixtures.prepare_tiny_dataset(os.path.join(base, 'data'),
                                            n_train=40)
  shard = os.path.join(path, 'test-00000-of-00001.tfrecord')
  with open(shard, 'rb') as f:
    blob = f.read()
  with open(shard, 'wb') as f:
    f.write(blob[:-7])
  return ['--data_dir=data', '--verify=tiny']


def _labels_out_of_range(base):
  data_fixtures.write_cifar10_binary(os.path.join(base, 'raw'), n_per_batch=2)
  path = os.path.join(base, 'raw', 'cifar-10-batches-bin', 'data_batch_2.bin')
  with open(path, 'r+b') as f:
    f.seek(3073)  # The label byte of the second record.
    f.write(bytes([12]))
  return ['--dataset=cifar10', '--source_dir=raw', '--data_dir=data']


def _wrong_shape(base):
  data_fixtures.write_image_folder(os.path.join(base, 'raw'), {
      'a': data_fixtures.random_images(2, (6, 6, 3)),
      'b': data_fixtures.random_images(1, (6, 7, 3))})
  return ['--dataset=image_folder', '--name=pics', '--source_dir=raw',
          '--data_dir=data']


def _too_many_labels(base):
  data_fixtures.prepare_tiny_dataset(os.path.join(base, 'data'), n_train=40)
  return ['--data_dir=data', '--split=tiny.1@60-0']


def _unknown_dataset(base):
  del base
  return ['--dataset=imagenet', '--source_dir=raw', '--data_dir=data']


def _unwritable(base):
  with open(os.path.join(base, 'blocker'), 'w') as f:
    f.write('a regular file')
  data_fixtures.write_cifar10_python(os.path.join(base, 'raw'), n_per_batch=1)
  return ['--dataset=cifar10', '--source_dir=raw', '--data_dir=blocker/data']


def _bad_split_name(base):
  del base
  return ['--data_dir=data', '--split=tiny@5']


def _bad_flag_value(base):
  del base
  return ['--data_dir=data', '--dataset=mnist', '--image_size=many']


# name -> (set-up returning the arguments, exit code, pattern of the error).
BAD_INPUTS = collections.OrderedDict([
    ('missing_source', (_missing_source, 1,
                        r'missing file .*raw/cifar-10-batches-py/'
                        r'data_batch_2 \(expected a pickled batch\)')),
    ('corrupt_shard', (_corrupt_shard, 1,
                       r'corrupt shard .*data/tiny/train-00000-of-00001'
                       r'\.tfrecord: ')),
    ('truncated_shard', (_truncated_shard, 1,
                         r'corrupt shard .*data/tiny/test-00000-of-00001'
                         r'\.tfrecord: ')),
    ('labels_out_of_range', (_labels_out_of_range, 1,
                             r'split train: label 12 at index 3 is outside '
                             r'0\.\.9')),
    ('wrong_shape', (_wrong_shape, 1,
                     r'image .*raw/b/000\.png has shape \(6, 7, 3\) but '
                     r'.*raw/a/000\.png has \(6, 6, 3\)')),
    ('too_many_labels', (_too_many_labels, 1,
                         r'class 0 \(class0\) has 10 train images but the '
                         r'split asks for 15 labeled images per class')),
    ('unknown_dataset', (_unknown_dataset, 2,
                         r'unknown --dataset=imagenet; known: fashion_mnist, '
                         r'mnist, cifar10, cifar100, svhn, image_folder, '
                         r'tfds:NAME')),
    ('unwritable', (_unwritable, 1, r'cannot write to .*blocker/data')),
    ('bad_split_name', (_bad_split_name, 2, r"invalid split name 'tiny@5'")),
    ('bad_flag_value', (_bad_flag_value, 2,
                        r'flag --image_size=many: invalid literal')),
])


class BadInputTest(tf.test.TestCase):
  """Every bad input: exit code, one `error:` line, nothing complete left.

  The subprocesses of all cases start together in setUpClass (each pays
  TensorFlow's import time; together they use both cores).
  """

  @classmethod
  def setUpClass(cls):
    super(BadInputTest, cls).setUpClass()
    cls.results = {}
    cls.bases = {}
    procs = {}
    root = tf.test.get_temp_dir()
    for name, (setup, _, _) in BAD_INPUTS.items():
      base = os.path.join(root, 'bad_' + name)
      os.makedirs(base)
      args = setup(base)
      cls.bases[name] = (base, looks_complete(base))
      procs[name] = start_entry('prepare_data', *args, cwd=base)
    for name, proc in procs.items():
      stdout, stderr = proc.communicate(timeout=600)
      cls.results[name] = (proc.returncode, stdout, stderr)

  def check(self, name):
    _, code, pattern = BAD_INPUTS[name]
    got_code, _, stderr = self.results[name]
    errors = [l for l in stderr.splitlines() if l.startswith('error:')]
    self.assertLen(errors, 1, stderr)
    self.assertRegex(errors[0], '^error: ' + pattern)
    self.assertNotIn('Traceback', stderr)
    self.assertEqual(got_code, code, stderr)
    base, before = self.bases[name]
    self.assertEqual(looks_complete(base), before)

  def test_missing_source(self):
    self.check('missing_source')

  def test_corrupt_shard(self):
    self.check('corrupt_shard')

  def test_truncated_shard(self):
    self.check('truncated_shard')

  def test_labels_out_of_range(self):
    self.check('labels_out_of_range')
    self.assertFalse(os.path.exists(os.path.join(
        self.bases['labels_out_of_range'][0], 'data', 'cifar10')))

  def test_wrong_shape(self):
    self.check('wrong_shape')

  def test_too_many_labels(self):
    self.check('too_many_labels')
    self.assertFalse(os.path.exists(os.path.join(
        self.bases['too_many_labels'][0], 'data', 'tiny', 'splits',
        'tiny.1@60-0')))

  def test_unknown_dataset(self):
    self.check('unknown_dataset')

  def test_unwritable_output(self):
    self.check('unwritable')

  def test_bad_split_name(self):
    self.check('bad_split_name')

  def test_bad_flag_value(self):
    self.check('bad_flag_value')


class RealFashionMnistTest(tf.test.TestCase):

  def test_prepare_and_split(self):
    if not os.path.isfile(os.path.join(FASHION_DIR,
                                       'train-labels-idx1-ubyte.gz')):
      self.skipTest('Fashion-MNIST is not installed in %s (Debian package '
                    'dataset-fashion-mnist)' % FASHION_DIR)
    data_dir = os.path.join(self.get_temp_dir(), 'data')
    result = run_entry('prepare_data', '--dataset=fashion_mnist',
                       '--data_dir=%s' % data_dir,
                       '--split=fashion_mnist.1@1000-5000',
                       cwd=self.get_temp_dir())
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn('train 60000, test 10000', result.stdout)
    info = dataset_info.load(os.path.join(data_dir, 'fashion_mnist'))
    self.assertEqual(info['num_classes'], 10)
    self.assertEqual(info['image_shape'], [28, 28, 1])
    self.assertEqual(info['class_names'][0], 'T-shirt/top')
    self.assertEqual({s: e['count'] for s, e in info['splits'].items()},
                     {'train': 60000, 'test': 10000})
    with gzip.open(os.path.join(FASHION_DIR,
                                'train-labels-idx1-ubyte.gz')) as f:
      true_labels = np.frombuffer(f.read(), np.uint8, offset=8)
    with open(os.path.join(data_dir, 'fashion_mnist', 'splits',
                           'fashion_mnist.1@1000-5000', 'split.json')) as f:
      split = json.load(f)
    labeled = split['parts']['labeled']['indices']
    self.assertEqual(np.bincount(true_labels[labeled]).tolist(), [100] * 10)
    self.assertEqual(split['parts']['valid']['count'], 5000)
    self.assertEqual(split['parts']['unlabeled']['count'], 54000)
    source = sources.resolve(data_dir, 'fashion_mnist.1@1000-5000')
    got = [(index, label) for p in source.files['labeled']
           for _, label, index in records.read_examples(p)]
    self.assertEqual([i for i, _ in got], labeled)
    self.assertEqual([l for _, l in got], true_labels[labeled].tolist())


if __name__ == '__main__':
  tf.test.main()
