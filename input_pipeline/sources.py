"""Resolving a dataset or split name to its files (docs/architecture.md)."""

import collections
import contextlib
import os

from input_pipeline import dataset_info
from input_pipeline import fileio
from input_pipeline import splits as splits_lib
from input_pipeline import writer
from input_pipeline.errors import DataError

PARTS = ('labeled', 'unlabeled', 'valid', 'test', 'train')

DataSource = collections.namedtuple(
    'DataSource', ['name', 'dataset_dir', 'info', 'split', 'files', 'counts'])


def _split_command(data_dir, parsed, split_name):
  command = 'python launch/prepare_data.py --data_dir=%s --split=%s' % (
      data_dir, split_name)
  if parsed.tag:
    command += (' plus the --labeled_classes / --unlabeled_classes / '
                '--extra_unlabeled flags that tag %r stands for' % parsed.tag)
  return command


@contextlib.contextmanager
def reading(data_dir, dataset):
  """Holds the shared locks of a dataset (and split) while it is read.

  A prepare_data run that would replace or delete it (which needs the
  exclusive lock, `fileio.lock`) is refused meanwhile; a write in progress
  makes this raise DataError naming it. Names that do not parse are left to
  `resolve` to report.
  """
  held = []
  try:
    base = dataset
    if '@' in dataset:
      try:
        base = splits_lib.parse_split_name(dataset).name
      except ValueError:
        base = None
    if base and writer.NAME_RE.match(base):
      dataset_dir = os.path.join(data_dir, base)
      held.append(fileio.lock(dataset_dir, False, 'dataset'))
      if base != dataset:
        held.append(fileio.lock(splits_lib.split_dir(dataset_dir, dataset),
                                False, 'split'))
    yield
  finally:
    for lock in held:
      lock.release()


def resolve(data_dir, dataset):
  """Returns the DataSource of a prepared dataset or split name.

  Args:
    data_dir: the DATA directory.
    dataset: `NAME` or `NAME.SEED@LABELS-VALID[.TAG]`.

  Returns:
    DataSource(name, dataset_dir, info, split, files, counts); `split` is the
    parsed split.json or None; `files` / `counts` map each of PARTS to its
    TFRecord paths / number of images (`valid` and `test` may be empty).

  Raises:
    ValueError: a malformed name.
    DataError: the dataset or split was never prepared (the message gives the
      command that creates it) or a shard is missing or has the wrong size.
  """
  split = None
  if '@' in dataset:
    parsed = splits_lib.parse_split_name(dataset)
    dataset_dir, info = dataset_info.load_named(data_dir, parsed.name)
    directory = splits_lib.split_dir(dataset_dir, dataset)
    if not os.path.isfile(os.path.join(directory, splits_lib.SPLIT_FILE)):
      raise DataError('split %s was never created (no %s); create it with: %s'
                      % (dataset, os.path.join(directory,
                                               splits_lib.SPLIT_FILE),
                         _split_command(data_dir, parsed, dataset)))
    split = splits_lib.load(dataset_dir, dataset)
    entries = {part: (directory, split['parts'][part])
               for part in splits_lib.PARTS}
  else:
    if not writer.NAME_RE.match(dataset):
      raise ValueError('invalid dataset %r; expected NAME or '
                       'NAME.SEED@LABELS-VALID[.TAG]' % (dataset,))
    dataset_dir, info = dataset_info.load_named(data_dir, dataset)
    train = (dataset_dir, info['splits']['train'])
    entries = {'labeled': train, 'unlabeled': train,
               'valid': (dataset_dir, {'count': 0, 'shards': []})}
  for part in ('test', 'train'):
    entries[part] = (dataset_dir, info['splits'].get(
        part, {'count': 0, 'shards': []}))
  files, counts = {}, {}
  for part in PARTS:
    directory, entry = entries[part]
    dataset_info.check_files_exist(directory, entry)
    files[part] = [os.path.join(directory, s['file']) for s in entry['shards']]
    counts[part] = entry['count']
  return DataSource(dataset, dataset_dir, info, split, files, counts)


def _part_entry(source, part):
  """(directory, shard entry, labels may be -1, source indices) of a part."""
  if source.split is not None and part in splits_lib.PARTS:
    entry = source.split['parts'][part]
    indices = [i if isinstance(i, int) else int(i.rsplit(':', 1)[1])
               for i in entry['indices']]
    return (splits_lib.split_dir(source.dataset_dir, source.name), entry,
            part == 'unlabeled', indices)
  name = 'train' if part in ('labeled', 'unlabeled') else part
  entry = source.info['splits'].get(name, {'count': 0, 'shards': []})
  return (source.dataset_dir, entry, name in dataset_info.UNLABELED_OK,
          list(range(entry['count'])))


def verify(source, deep=False, parts=('labeled', 'unlabeled', 'valid', 'test')):
  """Checks the shards of `parts` of a DataSource against their description.

  Size and sha256 of every shard, and with deep=True every record's CRC,
  image shape, label range and index (dataset_info.verify_part). train.py
  uses it before training (deep, on the labeled part, whose labels the loss
  trusts; on everything with --verify_data) and after a training failure
  that a damaged shard can cause, to name the shard.

  Raises:
    DataError: naming the first missing, changed or corrupt shard.
  """
  seen = set()
  for part in parts:
    directory, entry, allow_unlabeled, indices = _part_entry(source, part)
    key = (directory, tuple(s['file'] for s in entry['shards']))
    if key in seen:
      continue
    seen.add(key)
    dataset_info.verify_part(
        directory, entry, source.info['image_shape'],
        source.info['num_classes'], allow_unlabeled=allow_unlabeled,
        deep=deep, expected_indices=indices if deep else None)


def unlabeled_pool(source, keeps_labeled):
  """(images, index range) of the unlabeled stream `inputs.train_input_fn` reads.

  The pool is the unlabeled part plus, with `keeps_labeled`, the labeled
  part when its files are not already in it (as `inputs.unlabeled_files`).
  The index range is 1 + the largest record `index` in the pool, so a
  per-example variable of that length can be indexed by the records'
  `index` (FlexMatch). Extra images (SVHN's `extra`) carry indices of their
  own split, which may coincide with training indices; such images then
  share a slot.
  """
  parts = ['unlabeled']
  if keeps_labeled and not set(source.files['labeled']) <= set(
      source.files['unlabeled']):
    parts.append('labeled')
  images, top = 0, -1
  for part in parts:
    _, entry, _, indices = _part_entry(source, part)
    images += entry['count']
    if indices:
      top = max(top, max(indices))
  return images, top + 1
