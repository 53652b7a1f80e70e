"""Tests of input_pipeline.splits and input_pipeline.sources."""

import collections
import filecmp
import os
import shutil

import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import dataset_info
from input_pipeline import records
from input_pipeline import sources
from input_pipeline import splits
from input_pipeline.errors import DataError
from tests import data_fixtures


def _examples(paths):
  return [e for p in paths for e in records.read_examples(p)]


def _raw_records(paths):
  return [r for p in paths for r in tf.io.tf_record_iterator(p)]


class SplitNameTest(tf.test.TestCase):

  def test_parse_and_format(self):
    self.assertEqual(splits.parse_split_name('cifar10.1@250-500'),
                     ('cifar10', 1, 250, 500, None))
    self.assertEqual(splits.parse_split_name('fashion_mnist.12@1000-0.mis50'),
                     ('fashion_mnist', 12, 1000, 0, 'mis50'))
    self.assertEqual(splits.format_split_name('svhn', 3, 1000, 5000, 'x'),
                     'svhn.3@1000-5000.x')
    self.assertEqual(splits.format_split_name('svhn', 3, 1000, 5000),
                     'svhn.3@1000-5000')
    for bad in ('cifar10', 'cifar10@250-500', 'cifar10.1@250', 'c.1@a-5',
                'c.1@1-5.', 'c.1@1-5.a.b', '../c.1@1-5'):
      with self.assertRaisesRegex(ValueError, 'invalid split name'):
        splits.parse_split_name(bad)


class CreateSplitTest(tf.test.TestCase):

  def setUp(self):
    super(CreateSplitTest, self).setUp()
    self.data_dir = os.path.join(self.get_temp_dir(), 'data')
    # 60 train images, labels cycling over 4 classes: 15 per class.
    self.dataset_dir = data_fixtures.prepare_tiny_dataset(
        self.data_dir, n_train=60, n_test=8)
    self.info = dataset_info.load(self.dataset_dir)
    self.train = _examples(dataset_info.shard_paths(self.dataset_dir,
                                                    self.info, 'train'))
    self.train_labels = np.array([e[1] for e in self.train])

  def test_parts(self):
    path = splits.create_split(self.data_dir, 'tiny.3@8-12')
    self.assertEqual(path, os.path.join(self.dataset_dir, 'splits',
                                        'tiny.3@8-12'))
    split = splits.load(self.dataset_dir, 'tiny.3@8-12')
    self.assertEqual((split['name'], split['dataset'], split['seed'],
                      split['labels'], split['valid'], split['tag']),
                     ('tiny.3@8-12', 'tiny', 3, 8, 12, None))
    self.assertEqual(split['labeled_classes'], [0, 1, 2, 3])
    self.assertIsNone(split['unlabeled_classes'])
    self.assertEqual(split['extra_unlabeled'], [])
    labeled = split['parts']['labeled']['indices']
    valid = split['parts']['valid']['indices']
    unlabeled = split['parts']['unlabeled']['indices']
    self.assertEqual([split['parts'][p]['count'] for p in splits.PARTS],
                     [8, 12, 40])
    for indices in (labeled, valid, unlabeled):
      self.assertEqual(indices, sorted(indices))
    self.assertEqual(collections.Counter(self.train_labels[labeled]),
                     {0: 2, 1: 2, 2: 2, 3: 2})
    self.assertEqual(sorted(labeled + valid + unlabeled), list(range(60)))
    self.assertEqual(len(set(labeled + valid + unlabeled)), 60)
    # Records are the dataset's own records, true labels kept everywhere.
    source = _raw_records(dataset_info.shard_paths(self.dataset_dir, self.info,
                                                   'train'))
    for part, indices in (('labeled', labeled), ('valid', valid),
                          ('unlabeled', unlabeled)):
      paths = [os.path.join(path, s['file'])
               for s in split['parts'][part]['shards']]
      self.assertEqual(_raw_records(paths), [source[i] for i in indices])
      self.assertEqual([e[2] for e in _examples(paths)], indices)
      self.assertEqual([e[1] for e in _examples(paths)],
                       self.train_labels[indices].tolist())
    splits.verify(self.dataset_dir, self.info, split, deep=True)

  def test_same_seed_same_bytes_other_seed_other_draw(self):
    first = splits.create_split(self.data_dir, 'tiny.5@8-8')
    copy = os.path.join(self.get_temp_dir(), 'first_copy')
    shutil.copytree(first, copy)
    splits.create_split(self.data_dir, 'tiny.5@8-8', overwrite=True)
    names = sorted(os.listdir(first))
    self.assertEqual(names, sorted(os.listdir(copy)))
    match, mismatch, errors = filecmp.cmpfiles(first, copy, names,
                                               shallow=False)
    self.assertEqual((mismatch, errors), ([], []))
    self.assertLen(match, len(names))
    splits.create_split(self.data_dir, 'tiny.6@8-8')
    draws = [splits.load(self.dataset_dir, name)['parts']['labeled']['indices']
             for name in ('tiny.5@8-8', 'tiny.6@8-8')]
    self.assertNotEqual(draws[0], draws[1])

  def test_draw_follows_the_documented_recipe(self):
    split = splits.load(self.dataset_dir, os.path.basename(
        splits.create_split(self.data_dir, 'tiny.9@4-6')))
    order = np.random.RandomState(9).permutation(60)
    labeled = sorted(order[self.train_labels[order] == c][0] for c in range(4))
    rest = [i for i in order if i not in labeled]
    self.assertEqual(split['parts']['labeled']['indices'], labeled)
    self.assertEqual(split['parts']['valid']['indices'], sorted(rest[:6]))

  def test_class_with_too_few_images(self):
    with self.assertRaisesRegex(DataError, 'class 0 \\(class0\\) has 15 train '
                                'images but the split asks for 16 labeled'):
      splits.create_split(self.data_dir, 'tiny.1@64-0')
    with self.assertRaisesRegex(DataError, 'asks for 50 validation images but '
                                'only 52'.replace('52', '\\d+')):
      splits.create_split(self.data_dir, 'tiny.1@12-50')
    with self.assertRaisesRegex(DataError, '10 labels are not divisible by '
                                'the 4 labeled classes'):
      splits.create_split(self.data_dir, 'tiny.1@10-0')
    with self.assertRaisesRegex(DataError, 'asks for 0 labels'):
      splits.create_split(self.data_dir, 'tiny.1@0-0')
    self.assertFalse(os.path.exists(os.path.join(self.dataset_dir, 'splits',
                                                 'tiny.1@64-0')))

  def test_class_filters_need_a_tag(self):
    with self.assertRaisesRegex(DataError, 'needs a .TAG suffix'):
      splits.create_split(self.data_dir, 'tiny.1@4-4', labeled_classes=[1, 2])
    with self.assertRaisesRegex(DataError, 'needs a .TAG suffix'):
      splits.create_split(self.data_dir, 'tiny.1@4-4', extra_unlabeled=['x'])
    with self.assertRaisesRegex(DataError, 'labeled_classes: class 4 is '
                                'outside 0..3'):
      splits.create_split(self.data_dir, 'tiny.1@4-4.t', labeled_classes=[1, 4])

  def test_class_mismatch_split(self):
    name = data_fixtures.make_tiny_split(
        self.data_dir, seed=2, labels_per_class=3, valid=4, tag='mismatch',
        labeled_classes=[1, 2], unlabeled_classes=[2, 3])
    self.assertEqual(name, 'tiny.2@6-4.mismatch')
    split = splits.load(self.dataset_dir, name)
    labeled = split['parts']['labeled']['indices']
    valid = split['parts']['valid']['indices']
    unlabeled = split['parts']['unlabeled']['indices']
    self.assertEqual(collections.Counter(self.train_labels[labeled]),
                     {1: 3, 2: 3})
    self.assertTrue(set(self.train_labels[valid]) <= {1, 2})
    self.assertEqual(set(self.train_labels[unlabeled]), {2, 3})
    self.assertFalse(set(unlabeled) & (set(labeled) | set(valid)))
    # Every class-2/3 train image not labeled or valid is in the pool.
    pool = [i for i in range(60) if self.train_labels[i] in (2, 3) and
            i not in labeled and i not in valid]
    self.assertEqual(unlabeled, pool)
    self.assertEqual(split['labeled_classes'], [1, 2])
    self.assertEqual(split['unlabeled_classes'], [2, 3])

  def test_extra_unlabeled(self):
    data_fixtures.prepare_tiny_dataset(self.data_dir, name='other', n_train=12,
                                       n_test=4, n_unlabeled=5, seed=7)
    name = data_fixtures.make_tiny_split(
        self.data_dir, valid=0, tag='extra',
        extra_unlabeled=['other:unlabeled', 'other'])
    split = splits.load(self.dataset_dir, name)
    unlabeled = split['parts']['unlabeled']
    self.assertEqual(unlabeled['count'], 52 + 5 + 12)
    self.assertEqual(unlabeled['indices'][52:],
                     ['other/unlabeled:%d' % i for i in range(5)] +
                     ['other/train:%d' % i for i in range(12)])
    paths = [os.path.join(self.dataset_dir, 'splits', name, s['file'])
             for s in unlabeled['shards']]
    examples = _examples(paths)
    other_train = data_fixtures.tiny_arrays(12, (8, 8, 3), 4, seed=7)[0]
    self.assertAllEqual(np.stack([e[0] for e in examples[57:]]), other_train)
    self.assertEqual([e[1] for e in examples[52:]], [-1] * 17)
    self.assertEqual([e[2] for e in examples[52:]],
                     list(range(5)) + list(range(12)))
    splits.verify(self.dataset_dir, self.info, split, deep=True)

  def test_extra_unlabeled_must_match_shape(self):
    data_fixtures.prepare_tiny_dataset(self.data_dir, name='small',
                                       shape=(4, 4, 3), n_train=8, n_test=4)
    with self.assertRaisesRegex(DataError, "extra unlabeled 'small' has images "
                                'of shape \\[4, 4, 3\\]'):
      splits.create_split(self.data_dir, 'tiny.1@4-0.x',
                          extra_unlabeled=['small'])
    with self.assertRaisesRegex(DataError, 'no prepared dataset \'nope\''):
      splits.create_split(self.data_dir, 'tiny.1@4-0.x',
                          extra_unlabeled=['nope'])
    with self.assertRaisesRegex(DataError, 'small has no extra split'):
      splits.create_split(self.data_dir, 'tiny.1@4-0.x',
                          extra_unlabeled=['small:extra'])

  def test_existing_split_needs_overwrite(self):
    splits.create_split(self.data_dir, 'tiny.1@4-0')
    with self.assertRaisesRegex(DataError, 'split .*tiny.1@4-0 already exists'):
      splits.create_split(self.data_dir, 'tiny.1@4-0')
    self.assertEqual(os.listdir(os.path.join(self.dataset_dir, 'splits')),
                     ['tiny.1@4-0'])

  def test_corrupt_dataset_shard(self):
    shard = dataset_info.shard_paths(self.dataset_dir, self.info, 'train')[0]
    with open(shard, 'r+b') as f:
      f.seek(200)
      byte = f.read(1)
      f.seek(200)
      f.write(bytes([byte[0] ^ 0xFF]))
    with self.assertRaisesRegex(DataError, 'corrupt shard .*train-00000'):
      splits.create_split(self.data_dir, 'tiny.1@4-0')
    self.assertEqual(os.listdir(self.dataset_dir), os.listdir(
        os.path.dirname(shard)))
    self.assertNotIn('splits', os.listdir(self.dataset_dir))


class ResolveTest(tf.test.TestCase):

  def setUp(self):
    super(ResolveTest, self).setUp()
    self.data_dir = os.path.join(self.get_temp_dir(), 'data')
    self.dataset_dir = data_fixtures.prepare_tiny_dataset(
        self.data_dir, n_train=40, n_test=12)

  def test_plain_dataset(self):
    source = sources.resolve(self.data_dir, 'tiny')
    self.assertEqual(source.name, 'tiny')
    self.assertEqual(source.dataset_dir, self.dataset_dir)
    self.assertIsNone(source.split)
    self.assertEqual(source.info['image_shape'], [8, 8, 3])
    train = [os.path.join(self.dataset_dir, 'train-00000-of-00001.tfrecord')]
    self.assertEqual(source.files, {
        'labeled': train, 'unlabeled': train, 'valid': [], 'train': train,
        'test': [os.path.join(self.dataset_dir,
                              'test-00000-of-00001.tfrecord')]})
    self.assertEqual(source.counts, {'labeled': 40, 'unlabeled': 40,
                                     'valid': 0, 'train': 40, 'test': 12})

  def test_split(self):
    name = data_fixtures.make_tiny_split(self.data_dir)
    self.assertEqual(name, 'tiny.1@8-8')
    source = sources.resolve(self.data_dir, name)
    directory = os.path.join(self.dataset_dir, 'splits', name)
    self.assertEqual(source.split['name'], name)
    self.assertEqual(source.counts, {'labeled': 8, 'valid': 8,
                                     'unlabeled': 24, 'train': 40, 'test': 12})
    self.assertEqual(source.files['labeled'], [
        os.path.join(directory, 'labeled-00000-of-00001.tfrecord')])
    self.assertEqual(source.files['test'], [
        os.path.join(self.dataset_dir, 'test-00000-of-00001.tfrecord')])
    for part in ('labeled', 'valid', 'unlabeled'):
      self.assertLen(_examples(source.files[part]), source.counts[part])

  def test_unknown_dataset_lists_prepared_and_command(self):
    with self.assertRaisesRegex(
        DataError, "no prepared dataset 'cifar10' in .*data \\(prepared: "
        'tiny\\); create it with: python launch/prepare_data.py '
        '--dataset=cifar10 --source_dir=DIR --data_dir=.*data'):
      sources.resolve(self.data_dir, 'cifar10')
    with self.assertRaisesRegex(DataError, 'cifar10'):
      sources.resolve(self.data_dir, 'cifar10.1@250-500')
    with self.assertRaisesRegex(ValueError, 'invalid dataset'):
      sources.resolve(self.data_dir, '../tiny')
    with self.assertRaisesRegex(ValueError, 'invalid split name'):
      sources.resolve(self.data_dir, 'tiny@3')

  def test_missing_split_gives_the_command(self):
    with self.assertRaisesRegex(
        DataError, 'split tiny.2@8-0 was never created .*; create it with: '
        'python launch/prepare_data.py --data_dir=.*data --split=tiny.2@8-0$'):
      sources.resolve(self.data_dir, 'tiny.2@8-0')
    with self.assertRaisesRegex(DataError, '--split=tiny.2@8-0.mis plus the '
                                '--labeled_classes'):
      sources.resolve(self.data_dir, 'tiny.2@8-0.mis')

  def test_missing_shard(self):
    name = data_fixtures.make_tiny_split(self.data_dir)
    shard = os.path.join(self.dataset_dir, 'splits', name,
                         'valid-00000-of-00001.tfrecord')
    os.remove(shard)
    with self.assertRaisesRegex(DataError, 'missing shard %s' % shard):
      sources.resolve(self.data_dir, name)


if __name__ == '__main__':
  tf.test.main()
