"""`dataset_info.json`: loading, shard paths and verification.

The file's form: docs/architecture.md.
"""

import hashlib
import json
import os

import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import readers
from input_pipeline import records
from input_pipeline import runtime
from input_pipeline.errors import DataError

INFO_FILE = 'dataset_info.json'
SPLIT_NAMES = ('train', 'test', 'extra', 'unlabeled')
UNLABELED_OK = ('extra', 'unlabeled')
REQUIRED_KEYS = ('name', 'image_shape', 'num_classes', 'class_names', 'source',
                 'mean', 'std', 'zca', 'splits')


def shard_file_name(part, index, num_shards):
  return '%s-%05d-of-%05d.tfrecord' % (part, index, num_shards)


def sha256_file(path):
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def write_json(path, obj):
  """Writes `obj` as stable, human-readable JSON (same object, same bytes)."""
  with open(path, 'w') as f:
    json.dump(obj, f, indent=1, sort_keys=False)
    f.write('\n')


def read_json(path, what):
  """Reads a JSON object; DataError naming the file if absent or invalid."""
  if not os.path.isfile(path):
    raise DataError('missing %s %s' % (what, path))
  try:
    with open(path) as f:
      obj = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError('cannot parse %s %s: %s' % (what, path, e))
  if not isinstance(obj, dict):
    raise DataError('%s %s does not hold a JSON object' % (what, path))
  return obj


def check_part_entry(entry, path, part):
  """Validates one `{count, shards: [{file, count, sha256, bytes}]}` entry."""
  if not isinstance(entry, dict) or not isinstance(entry.get('shards'), list):
    raise DataError('%s: part %s has no shard list' % (path, part))
  if not isinstance(entry.get('count'), int):
    raise DataError('%s: part %s has no integer count' % (path, part))
  total = 0
  for shard in entry['shards']:
    if not isinstance(shard, dict) or any(
        k not in shard for k in ('file', 'count', 'sha256', 'bytes')):
      raise DataError('%s: part %s has a shard entry without file, count, '
                      'sha256 and bytes' % (path, part))
    name = shard['file']
    if (not isinstance(name, str) or os.path.basename(name) != name or
        name in ('', '.', '..')):
      raise DataError('%s: part %s names shard %r, which is not a plain file '
                      'name' % (path, part, name))
    total += shard['count']
  if total != entry['count']:
    raise DataError('%s: part %s has count %d but its shards hold %d'
                    % (path, part, entry['count'], total))


def load(dataset_dir):
  """Reads and checks `<dataset_dir>/dataset_info.json`.

  Raises:
    DataError: the file is missing, unparseable or lacks required fields.
  """
  path = os.path.join(dataset_dir, INFO_FILE)
  info = read_json(path, 'dataset description')
  missing = [k for k in REQUIRED_KEYS if k not in info]
  if missing:
    raise DataError('%s is incomplete: missing %s' % (path, ', '.join(missing)))
  shape = info['image_shape']
  if (not isinstance(shape, list) or len(shape) != 3 or
      not all(isinstance(d, int) and d > 0 for d in shape)):
    raise DataError('%s: image_shape must be [H, W, C], got %r' % (path, shape))
  if len(info['class_names']) != info['num_classes']:
    raise DataError('%s: %d class names for %d classes'
                    % (path, len(info['class_names']), info['num_classes']))
  if not isinstance(info['splits'], dict) or 'train' not in info['splits']:
    raise DataError('%s has no train split' % path)
  for split, entry in info['splits'].items():
    check_part_entry(entry, path, split)
  return info


def shard_paths(dataset_dir, info, split):
  """Paths of the shards of `split`, in order."""
  if split not in info['splits']:
    raise DataError('dataset %s has no %s split (splits: %s)'
                    % (dataset_dir, split, ', '.join(info['splits'])))
  return [os.path.join(dataset_dir, s['file'])
          for s in info['splits'][split]['shards']]


def check_files_exist(directory, entry):
  """Cheap check: every shard of a part exists with its recorded size."""
  for shard in entry['shards']:
    path = os.path.join(directory, shard['file'])
    if not os.path.isfile(path):
      raise DataError('missing shard %s' % path)
    size = os.path.getsize(path)
    if size != shard['bytes']:
      raise DataError('shard %s has %d bytes, expected %d (truncated or '
                      'replaced)' % (path, size, shard['bytes']))


def _parse_shard(path, image_shape, num_classes, allow_unlabeled,
                 expected_indices):
  """Parses every record of one shard; returns the number of records."""
  count = 0
  try:
    for record in tf.io.tf_record_iterator(path):
      try:
        image, label, index = _decode_record(record)
      except (ValueError, KeyError, IndexError, OSError) as e:
        raise DataError('corrupt shard %s: record %d does not parse: %s'
                        % (path, count, e))
      if list(image.shape) != list(image_shape):
        raise DataError('corrupt shard %s: record %d holds a %s image, '
                        'expected %s' % (path, count, list(image.shape),
                                         list(image_shape)))
      if not (0 <= label < num_classes or (allow_unlabeled and label == -1)):
        raise DataError('corrupt shard %s: record %d has label %d, outside '
                        '0..%d' % (path, count, label, num_classes - 1))
      if expected_indices is not None:
        if (count >= len(expected_indices) or
            index != expected_indices[count]):
          raise DataError('corrupt shard %s: record %d has index %d, the '
                          'description says %s' % (
                              path, count, index,
                              expected_indices[count]
                              if count < len(expected_indices) else 'none'))
      count += 1
  except tf.errors.OpError as e:
    raise DataError('corrupt shard %s: %s' % (path, runtime.error_line(e)))
  return count


def _decode_record(record):
  example = tf.train.Example.FromString(record)
  feature = example.features.feature
  image = records.decode_png(feature['image'].bytes_list.value[0])
  return (image, feature['label'].int64_list.value[0],
          feature['index'].int64_list.value[0])


def verify_part(directory, entry, image_shape, num_classes,
                allow_unlabeled=False, deep=False, expected_indices=None):
  """Checks the shards of one part (a dataset split or a split's part).

  Every shard must exist with its recorded size and sha256. With deep=True
  each record is first read (CRC-checked), parsed and decoded: image shape,
  label range and, when given, the index sequence are checked, and the
  record counts must match; a damaged file is thus reported as
  'corrupt shard <path>: <what tf.io or the parser found>'.
  """
  offset = 0
  for shard in entry['shards']:
    path = os.path.join(directory, shard['file'])
    if not os.path.isfile(path):
      raise DataError('missing shard %s' % path)
    if deep:
      expected = None
      if expected_indices is not None:
        expected = expected_indices[offset:offset + shard['count']]
      count = _parse_shard(path, image_shape, num_classes, allow_unlabeled,
                           expected)
      if count != shard['count']:
        raise DataError('corrupt shard %s: %d records, expected %d'
                        % (path, count, shard['count']))
    check_files_exist(directory, {'shards': [shard]})
    if sha256_file(path) != shard['sha256']:
      raise DataError('corrupt shard %s: sha256 differs from the recorded one'
                      % path)
    offset += shard['count']


def verify(dataset_dir, info, deep=False):
  """Checks every shard of a prepared dataset against dataset_info.json.

  Raises:
    DataError: naming the first missing, resized, changed or corrupt shard.
  """
  for split, entry in info['splits'].items():
    verify_part(dataset_dir, entry, info['image_shape'], info['num_classes'],
                allow_unlabeled=split in UNLABELED_OK, deep=deep,
                expected_indices=np.arange(entry['count']).tolist()
                if deep else None)


def prepared_datasets(data_dir):
  """Sorted names of the complete (described) datasets in data_dir."""
  if not os.path.isdir(data_dir):
    return []
  return sorted(d for d in os.listdir(data_dir)
                if '.tmp-' not in d and '.old-' not in d and
                os.path.isfile(os.path.join(data_dir, d, INFO_FILE)))


def load_named(data_dir, name):
  """Returns (dataset_dir, info) of the prepared dataset `name` in data_dir.

  Raises:
    DataError: no such dataset; the message lists the prepared datasets and
      the prepare_data command that creates one.
  """
  dataset_dir = os.path.join(data_dir, name)
  if not os.path.isfile(os.path.join(dataset_dir, INFO_FILE)):
    prepared = prepared_datasets(data_dir)
    # Published formats are prepared under their kind's name by default.
    named = name in readers.READERS and name != 'image_folder'
    kind = name if named else 'image_folder --name=%s' % name
    raise DataError(
        'no prepared dataset %r in %s (prepared: %s); create it with: '
        'python launch/prepare_data.py --dataset=%s --source_dir=DIR '
        '--data_dir=%s' % (name, data_dir, ', '.join(prepared) or 'none', kind,
                           data_dir))
  return dataset_dir, load(dataset_dir)
