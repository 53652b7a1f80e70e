"""Writes a prepared dataset: sharded TFRecords + dataset_info.json (+ zca.npz).

Every write is atomic and locked against readers and other writers:
docs/architecture.md.
"""

import hashlib
import multiprocessing
import os
import re
import shutil

import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import dataset_info
from input_pipeline import fileio
from input_pipeline import records
from input_pipeline import zca as zca_lib
from input_pipeline.errors import DataError

IMAGES_PER_SHARD = 10000
# ASCII only, matched to the very end: `$` would accept a trailing newline
# and `\d` non-ASCII digits (a second name for the same split).
NAME_RE = re.compile(r'\A[a-z0-9][a-z0-9_]*\Z', re.ASCII)

_ENCODE_CHUNK = 2000
_PARALLEL_MIN_IMAGES = 4000


def check_name(name):
  """Dataset names: ASCII a-z, 0-9 and '_' (no '.', which splits use)."""
  if not isinstance(name, str) or not NAME_RE.match(name):
    raise ValueError('invalid dataset name %r: use ASCII a-z, 0-9 and "_" '
                     'only, starting with a letter or digit' % (name,))


def check_writable(directory, flag=None):
  """DataError when `directory` could not be created or written (creates
  nothing: its nearest existing ancestor must be a writable directory).
  `flag` (e.g. '--data_dir') is named in the message."""
  path = os.path.abspath(directory)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  what = '%s %s' % (flag, directory) if flag else directory
  if not os.path.isdir(path):
    raise DataError('cannot write to %s: %s is not a directory'
                    % (what, path))
  if not os.access(path, os.W_OK | os.X_OK):
    raise DataError('cannot write to %s: permission denied on %s'
                    % (what, path))


def num_shards_for(count, images_per_shard=IMAGES_PER_SHARD):
  return max(1, -(-count // images_per_shard))


class ShardWriter(object):
  """Writes `total` records of one part into `num_shards` contiguous shards.

  Shard i holds the records of `np.array_split(range(total), num_shards)[i]`.
  `close()` returns the part entry `{count, shards: [{file, count, sha256,
  bytes}]}`.
  """

  def __init__(self, directory, part, total, num_shards=None):
    self._directory = directory
    self._part = part
    self._total = total
    num_shards = num_shards or num_shards_for(total)
    num_shards = max(1, min(num_shards, total)) if total else 0
    self._sizes = [len(a) for a in np.array_split(np.arange(total), num_shards)
                  ] if total else []
    self._shards = []
    self._writer = None
    self._in_shard = 0
    self._written = 0

  def _path(self, i):
    return os.path.join(self._directory, dataset_info.shard_file_name(
        self._part, i, len(self._sizes)))

  def _finish_shard(self):
    self._writer.close()
    self._writer = None
    path = self._path(len(self._shards))
    self._shards.append({'file': os.path.basename(path),
                         'count': self._in_shard,
                         'sha256': dataset_info.sha256_file(path),
                         'bytes': os.path.getsize(path)})
    self._in_shard = 0

  def write(self, record):
    if self._written >= self._total:
      raise ValueError('part %s: more than %d records' % (self._part,
                                                          self._total))
    if self._writer is None:
      self._writer = tf.io.TFRecordWriter(self._path(len(self._shards)))
    self._writer.write(record)
    self._in_shard += 1
    self._written += 1
    if self._in_shard == self._sizes[len(self._shards)]:
      self._finish_shard()

  def close(self):
    if self._written != self._total:
      raise ValueError('part %s: wrote %d records, expected %d'
                       % (self._part, self._written, self._total))
    return {'count': self._total, 'shards': self._shards}


def canonical(record):
  """Re-serialises an Example deterministically (map keys sorted).

  The protobuf runtime orders the `features` map differently from one
  process to the next, so the bytes of `records.make_example` depend on the
  process; the canonical form makes shards (and their sha256) reproducible.
  """
  return tf.train.Example.FromString(record).SerializeToString(
      deterministic=True)


def _encode_chunk(args):
  images, labels, start = args
  return [canonical(records.make_example(image, label, start + i))
          for i, (image, label) in enumerate(zip(images, labels))]


def _chunks(images, labels):
  for start in range(0, len(images), _ENCODE_CHUNK):
    end = start + _ENCODE_CHUNK
    yield images[start:end], labels[start:end], start


def _write_split(directory, split, images, labels, num_shards, pool):
  writer = ShardWriter(directory, split, len(images), num_shards)
  chunks = _chunks(images, labels)
  encoded = pool.imap(_encode_chunk, chunks) if pool else map(_encode_chunk,
                                                              chunks)
  for chunk in encoded:
    for record in chunk:
      writer.write(record)
  return writer.close()


def _as_images(split, images):
  """uint8 [N, H, W, C] array from an array or a list of [H, W, C] arrays."""
  if isinstance(images, (list, tuple)):
    for i, image in enumerate(images):
      image = np.asarray(image)
      if image.shape != np.asarray(images[0]).shape:
        raise DataError('split %s: image %d has shape %s, image 0 has %s'
                        % (split, i, image.shape, np.asarray(images[0]).shape))
    images = np.stack(images) if images else np.zeros((0, 1, 1, 1), np.uint8)
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise DataError('split %s: images must be uint8, got %s'
                    % (split, images.dtype))
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise DataError('split %s: images must be [N, H, W, C] with C in 1, 3, '
                    '4; got %s' % (split, images.shape))
  if not (images.shape[1] and images.shape[2]):
    raise DataError('split %s: images of size %dx%d' % (split, images.shape[1],
                                                         images.shape[2]))
  if images.shape[-1] == 4:
    # Every algorithm takes grey or RGB: alpha is dropped, as
    # readers.convert_channels does.
    images = images[..., :3]
  return images


def _check_labels(split, labels, count, num_classes):
  labels = np.asarray(labels)
  if labels.ndim != 1 or len(labels) != count:
    raise DataError('split %s: %d images but labels of shape %s'
                    % (split, count, labels.shape))
  if count and not np.issubdtype(labels.dtype, np.integer):
    raise DataError('split %s: labels must be integers, got %s'
                    % (split, labels.dtype))
  labels = labels.astype(np.int64)
  low = -1 if split in dataset_info.UNLABELED_OK else 0
  bad = np.flatnonzero((labels < low) | (labels >= num_classes))
  if bad.size:
    allowed = '-1..%d' % (num_classes - 1) if low < 0 else '0..%d' % (
        num_classes - 1)
    raise DataError('split %s: label %d at index %d is outside %s'
                    % (split, labels[bad[0]], bad[0], allowed))
  return labels


def validate_splits(splits, num_classes, class_names=None):
  """Returns {split: (uint8 images, int64 labels)} or raises DataError."""
  class_names = class_names or [str(c) for c in range(num_classes)]
  unknown = sorted(set(splits) - set(dataset_info.SPLIT_NAMES))
  if unknown:
    raise DataError('unknown split names %s; allowed: %s'
                    % (', '.join(unknown), ', '.join(dataset_info.SPLIT_NAMES)))
  if 'train' not in splits:
    raise DataError('a dataset needs a train split')
  checked = {}
  for split in [s for s in dataset_info.SPLIT_NAMES if s in splits]:
    images, labels = splits[split]
    images = _as_images(split, images)
    if not len(images):
      raise DataError('split %s is empty' % split)
    shape = checked['train'][0].shape[1:] if checked else images.shape[1:]
    if images.shape[1:] != shape:
      raise DataError('split %s: image 0 has shape %s, train images have %s'
                      % (split, list(images.shape[1:]), list(shape)))
    checked[split] = (images, _check_labels(split, labels, len(images),
                                            num_classes))
  if num_classes < 2:
    # One class trains to a meaningless "100 %".
    raise DataError('a dataset needs at least 2 classes, got %d' % num_classes)
  counts = np.bincount(np.maximum(checked['train'][1], 0),
                       minlength=num_classes)
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    raise DataError('class %d (%s) has no train images; every class needs '
                    'some' % (empty[0], class_names[empty[0]]))
  return checked


def channel_stats(images):
  """Per-channel mean and std of uint8 images [N, H, W, C] scaled to [0, 1]."""
  channels = images.shape[-1]
  total = np.zeros(channels)
  total_sq = np.zeros(channels)
  for start in range(0, len(images), _ENCODE_CHUNK * 4):
    chunk = images[start:start + _ENCODE_CHUNK * 4].reshape(
        -1, channels).astype(np.float64) / 255.0
    total += chunk.sum(axis=0)
    total_sq += (chunk * chunk).sum(axis=0)
  n = images.size // channels
  mean = total / n
  std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
  return [float(m) for m in mean], [float(s) for s in std]


def _records_digest(directory, info):
  """{split: sha256 of the sequence of its records} of a written dataset."""
  digests = {}
  for split, entry in info['splits'].items():
    digest = hashlib.sha256()
    for shard in entry['shards']:
      for record in tf.io.tf_record_iterator(os.path.join(directory,
                                                          shard['file'])):
        digest.update(hashlib.sha256(record).digest())
    digests[split] = digest.hexdigest()
  return digests


def existing_splits(dataset_dir):
  """Names of the complete splits under `dataset_dir/splits`."""
  splits_dir = os.path.join(dataset_dir, 'splits')
  if not os.path.isdir(splits_dir):
    return []
  return sorted(n for n in os.listdir(splits_dir)
                if os.path.isfile(os.path.join(splits_dir, n, 'split.json')))


def _same_records(old_dir, new_dir, new_info):
  """Whether the dataset in old_dir holds exactly new_info's records."""
  try:
    old_info = dataset_info.load(old_dir)
  except DataError:
    return False
  for key in ('image_shape', 'num_classes', 'class_names'):
    if old_info.get(key) != new_info[key]:
      return False
  if sorted(old_info['splits']) != sorted(new_info['splits']):
    return False
  try:
    return (_records_digest(old_dir, old_info) ==
            _records_digest(new_dir, new_info))
  except (OSError, tf.errors.OpError):
    return False


def _carry_splits(target, tmp, info, drop_splits):
  """Moves the splits of the dataset being replaced into its new version.

  A split copies records of its dataset by position, so it stays valid when
  the new dataset holds the same records; then it is kept. Otherwise the
  overwrite is refused, naming the splits, unless `drop_splits`.
  """
  names = existing_splits(target)
  if not names:
    return
  if _same_records(target, tmp, info):
    # Hard links, not a move: until the new version is renamed into place
    # the old one keeps its splits, so a kill at any point loses nothing.
    shutil.copytree(os.path.join(target, 'splits'),
                    os.path.join(tmp, 'splits'), copy_function=os.link)
    tf.logging.info('kept splits %s: the new data holds the same records',
                    ', '.join(names))
    return
  if not drop_splits:
    raise DataError('dataset %s has splits that the new data would '
                    'invalidate: %s; pass --drop_splits to delete them, or '
                    'prepare under another --name' % (target, ', '.join(names)))


def write_dataset(data_dir, name, splits, class_names, source,
                  shards_per_split=None, zca=False, overwrite=False,
                  drop_splits=False):
  """Validates and writes a dataset to `<data_dir>/<name>`.

  Args:
    data_dir: the DATA directory (created if needed).
    name: the dataset name (ASCII a-z, 0-9, '_').
    splits: {split: (images, labels)}, split in train/test/extra/unlabeled;
      images uint8 [N, H, W, C] (or a list of [H, W, C]), labels int [N] in
      0..num_classes-1 (-1 also allowed in extra and unlabeled).
    class_names: list of class names; num_classes = len(class_names).
    source: short tag of the raw format, recorded in dataset_info.json.
    shards_per_split: None (about 10,000 images a shard), an int, or a dict
      split -> int.
    zca: also fit ZCA on the train images and write zca.npz.
    overwrite: replace an existing `<data_dir>/<name>`. Its splits are kept
      when the new data holds the same records; otherwise the overwrite is
      refused while it has splits, unless `drop_splits`.
    drop_splits: with overwrite, delete splits the new data invalidates.

  Returns:
    The dataset directory.

  Raises:
    DataError: invalid images or labels (naming the split and first bad
      index), an existing dataset without overwrite, an unwritable data_dir.
    ValueError: an invalid name.
  """
  check_name(name)
  class_names = [str(c) for c in class_names]
  checked = validate_splits(splits, len(class_names), class_names)
  train_images = checked['train'][0]
  mean, std = channel_stats(train_images)
  info = {
      'name': name,
      'image_shape': [int(d) for d in train_images.shape[1:]],
      'num_classes': len(class_names),
      'class_names': class_names,
      'source': source,
      'mean': mean,
      'std': std,
      'zca': zca_lib.FILE_NAME if zca else None,
      'splits': {},
  }
  target = os.path.join(data_dir, name)
  with fileio.atomic_directory(target, overwrite, 'dataset',
                               marker=dataset_info.INFO_FILE) as tmp:
    total = sum(len(images) for images, _ in checked.values())
    processes = min(2, os.cpu_count() or 1)
    pool = None
    if processes > 1 and total >= _PARALLEL_MIN_IMAGES:
      pool = multiprocessing.get_context('fork').Pool(processes)
    try:
      for split, (images, labels) in checked.items():
        shards = shards_per_split
        if isinstance(shards, dict):
          shards = shards.get(split)
        info['splits'][split] = _write_split(tmp, split, images, labels,
                                             shards, pool)
    finally:
      if pool is not None:
        pool.terminate()
        pool.join()
    if zca:
      zca_mean, zca_matrix = zca_lib.fit_zca(train_images)
      zca_lib.save(os.path.join(tmp, zca_lib.FILE_NAME), zca_mean, zca_matrix)
    dataset_info.write_json(os.path.join(tmp, dataset_info.INFO_FILE), info)
    if overwrite and os.path.isdir(target):
      _carry_splits(target, tmp, info, drop_splits)
  return target
