r"""Prepares datasets (raw files -> TFRecords) and semi-supervised splits.

  # a dataset
  python launch/prepare_data.py --dataset=fashion_mnist --data_dir=DATA
  python launch/prepare_data.py --dataset=cifar10 --source_dir=~/cifar \
      --data_dir=DATA --zca
  # splits of a prepared dataset (repeat --split); both in one call works too
  python launch/prepare_data.py --data_dir=DATA \
      --split=cifar10.1@250-500 --split=cifar10.2@250-500
  # RealMix's class mismatch: labeled classes 2-7, unlabeled from 4 classes
  python launch/prepare_data.py --data_dir=DATA \
      --split=cifar10.1@2400-500.mismatch50 \
      --labeled_classes=2,3,4,5,6,7 --unlabeled_classes=0,1,6,7
  # re-check every record of a dataset or split
  python launch/prepare_data.py --data_dir=DATA --verify=cifar10.1@250-500

--dataset is one of fashion_mnist, mnist, cifar10, cifar100, svhn,
image_folder or tfds:NAME (then --source_dir is the TFDS data directory).
Errors end with one line `error: ...` and exit code 1 (data) or 2 (flags).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags
import tensorflow.compat.v1 as tf

from input_pipeline import dataset_info
from input_pipeline import readers
from input_pipeline import splits as splits_lib
from input_pipeline import writer
from input_pipeline.errors import DataError
from runner import cli

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('dataset', None,
                      'Raw dataset to prepare: %s or tfds:NAME.'
                      % ', '.join(readers.READERS))
  flags.DEFINE_string('source_dir', None,
                      'Directory of the raw files (TFDS data directory for '
                      'tfds:NAME). Default for fashion_mnist: %s.'
                      % readers.READERS['fashion_mnist'].default_source_dir)
  flags.DEFINE_string('data_dir', None, 'DATA directory of prepared datasets.')
  flags.DEFINE_string('name', None,
                      'Name of the prepared dataset (default: the --dataset '
                      'kind, the TFDS name, or the source folder name for '
                      'image_folder; cifar100_coarse with --coarse_labels).')
  flags.DEFINE_bool('coarse_labels', False, 'cifar100: the 20 superclasses.')
  flags.DEFINE_bool('svhn_extra', False, 'svhn: also read extra_32x32.mat as '
                    'the extra split.')
  flags.DEFINE_bool('zca', False, 'Fit ZCA on the train split (zca.npz).')
  flags.DEFINE_integer('image_size', 0, 'image_folder: resize every image to '
                       'this square size (0: keep).')
  flags.DEFINE_enum('channels', '0', ['0', '1', '3'], 'Channels of the '
                    'prepared images: 1 (grey) or 3 (RGB); 0: 1 when every '
                    'image is grey, else 3. Alpha is dropped, grey repeated.')
  flags.DEFINE_string('unlabeled_dir', 'unlabeled', 'image_folder: folder of '
                      'unlabeled images inside --source_dir ("" for none).')
  flags.DEFINE_bool('overwrite', False, 'Replace existing datasets / '
                    'splits. A dataset\'s splits are kept when the new data '
                    'holds the same records; otherwise see --drop_splits.')
  flags.DEFINE_bool('drop_splits', False, 'With --overwrite of a dataset '
                    'whose records change: delete its splits (without it '
                    'the overwrite is refused while splits exist).')
  flags.DEFINE_multi_string('split', [], 'Split '
                            'NAME.SEED@LABELS-VALID[.TAG] to create '
                            '(repeatable).')
  flags.DEFINE_list('labeled_classes', None, 'Splits: classes (ids or names) '
                    'of the labeled and valid images.')
  flags.DEFINE_list('unlabeled_classes', None, 'Splits: classes (ids or names) '
                    'the unlabeled pool keeps.')
  flags.DEFINE_list('extra_unlabeled', [], 'Splits: prepared datasets '
                    'other[:split] appended to the unlabeled pool.')
  flags.DEFINE_multi_string('verify', [], 'Dataset or split to check '
                            'record by record (repeatable).')


def _default_name(kind, source_dir):
  if FLAGS.name:
    return FLAGS.name
  if kind.startswith(readers.TFDS_PREFIX):
    return kind[len(readers.TFDS_PREFIX):].split(':')[0].replace('/', '_')
  if kind == 'image_folder':
    return os.path.basename(os.path.normpath(source_dir))
  if kind == 'cifar100' and FLAGS.coarse_labels:
    return 'cifar100_coarse'
  return kind


def _check_dataset_flags(kind):
  """UsageError for an unknown kind or options that do not apply to it."""
  if not readers.is_dataset(kind):
    raise cli.UsageError('unknown --dataset=%s; known: %s, tfds:NAME'
                         % (kind, ', '.join(readers.READERS)))
  for owner, reader in readers.READERS.items():
    for flag in reader.options:
      if FLAGS[flag].value and kind != owner:
        raise cli.UsageError('--%s does not apply to --dataset=%s'
                             % (flag, kind))
  if FLAGS.image_size < 0:
    raise cli.UsageError('--image_size must be >= 0')


def prepare(data_dir):
  """Reads --dataset from --source_dir and writes it to data_dir."""
  kind = FLAGS.dataset
  _check_dataset_flags(kind)
  reader = readers.READERS.get(kind)
  source_dir = cli.resolve_path(FLAGS.source_dir or
                                (reader and reader.default_source_dir))
  if not source_dir:
    raise cli.UsageError('--source_dir is required for --dataset=%s' % kind)
  name = _default_name(kind, source_dir)
  try:
    writer.check_name(name)
  except ValueError as e:
    raise cli.UsageError('%s (set --name)' % e)
  target = os.path.join(data_dir, name)
  writer.check_writable(data_dir, '--data_dir')  # Before reading raw files.
  if os.path.exists(target) and not FLAGS.overwrite:
    raise DataError('dataset %s already exists; pass --overwrite to replace it'
                    % target)
  raw = readers.read(kind, source_dir, coarse_labels=FLAGS.coarse_labels,
                     svhn_extra=FLAGS.svhn_extra, image_size=FLAGS.image_size,
                     unlabeled_dir=FLAGS.unlabeled_dir,
                     channels=int(FLAGS.channels))
  path = writer.write_dataset(data_dir, name, raw.splits, raw.class_names,
                              raw.source, zca=FLAGS.zca,
                              overwrite=FLAGS.overwrite,
                              drop_splits=FLAGS.drop_splits)
  info = dataset_info.load(path)
  print('prepared %s in %s (%s, %d classes%s): %s' % (
      name, path, 'x'.join(str(d) for d in info['image_shape']),
      info['num_classes'], ', zca' if info['zca'] else '',
      ', '.join('%s %d' % (s, e['count']) for s, e in info['splits'].items())))


def _class_ids(values, class_names, flag):
  """Class ids from a list of ids or names."""
  if values is None:
    return None
  ids = []
  for value in values:
    if value.strip().lstrip('-').isdigit():
      ids.append(int(value))
    elif value in class_names:
      ids.append(class_names.index(value))
    else:
      raise cli.UsageError('--%s: %r is neither a class id nor a class name '
                           '(classes: %s)' % (flag, value,
                                              ', '.join(class_names)))
  return ids


def make_split(data_dir, split_name):
  parsed = splits_lib.parse_split_name(split_name)
  _, info = dataset_info.load_named(data_dir, parsed.name)
  path = splits_lib.create_split(
      data_dir, split_name,
      labeled_classes=_class_ids(FLAGS.labeled_classes, info['class_names'],
                                 'labeled_classes'),
      unlabeled_classes=_class_ids(FLAGS.unlabeled_classes,
                                   info['class_names'], 'unlabeled_classes'),
      extra_unlabeled=FLAGS.extra_unlabeled, overwrite=FLAGS.overwrite)
  split = splits_lib.load(os.path.dirname(os.path.dirname(path)), split_name)
  print('created split %s in %s: %s' % (
      split_name, path, ', '.join('%s %d' % (p, split['parts'][p]['count'])
                                  for p in splits_lib.PARTS)))


def verify(data_dir, name):
  if '@' in name:
    parsed = splits_lib.parse_split_name(name)
    dataset_dir, info = dataset_info.load_named(data_dir, parsed.name)
    split = splits_lib.load(dataset_dir, name)
    splits_lib.verify(dataset_dir, info, split, deep=True)
    counts = [(p, split['parts'][p]['count']) for p in splits_lib.PARTS]
  else:
    dataset_dir, info = dataset_info.load_named(data_dir, name)
    dataset_info.verify(dataset_dir, info, deep=True)
    counts = [(s, e['count']) for s, e in info['splits'].items()]
  print('verified %s: %s' % (name, ', '.join('%s %d' % c for c in counts)))


def main(argv):
  if len(argv) > 1:
    raise cli.UsageError('unexpected arguments: %s' % ' '.join(argv[1:]))
  if not FLAGS.data_dir:
    raise cli.UsageError('--data_dir is required')
  if not (FLAGS.dataset or FLAGS.split or FLAGS.verify):
    raise cli.UsageError('nothing to do: give --dataset, --split or --verify')
  if not FLAGS.split and (FLAGS.labeled_classes is not None or
                          FLAGS.unlabeled_classes is not None or
                          FLAGS.extra_unlabeled):
    raise cli.UsageError('--labeled_classes, --unlabeled_classes and '
                         '--extra_unlabeled apply to --split only')
  for name in FLAGS.split:
    splits_lib.parse_split_name(name)
  tf.get_logger().setLevel('ERROR')
  data_dir = cli.resolve_path(FLAGS.data_dir)
  if FLAGS.dataset:
    prepare(data_dir)
  for split_name in FLAGS.split:
    make_split(data_dir, split_name)
  for name in FLAGS.verify:
    verify(data_dir, name)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
