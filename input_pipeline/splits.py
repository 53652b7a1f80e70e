"""Semi-supervised splits `NAME.SEED@LABELS-VALID[.TAG]` of a prepared dataset.

How a split is drawn and what split.json holds: docs/architecture.md.
"""

import collections
import os
import re

from google.protobuf import message
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import dataset_info
from input_pipeline import fileio
from input_pipeline import runtime
from input_pipeline import writer
from input_pipeline.errors import DataError

SPLITS_DIR = 'splits'
SPLIT_FILE = 'split.json'
PARTS = ('labeled', 'valid', 'unlabeled')

# ASCII only, to the very end (see writer.NAME_RE): one split, one name.
SPLIT_RE = re.compile(r'\A(?P<name>[a-z0-9][a-z0-9_]*)\.(?P<seed>[0-9]+)'
                      r'@(?P<labels>[0-9]+)-(?P<valid>[0-9]+)'
                      r'(?:\.(?P<tag>[a-z0-9_]+))?\Z', re.ASCII)

SplitName = collections.namedtuple('SplitName',
                                   ['name', 'seed', 'labels', 'valid', 'tag'])


def parse_split_name(text):
  """'cifar10.1@250-500.mis' -> SplitName('cifar10', 1, 250, 500, 'mis').

  Raises:
    ValueError: `text` is not of the form NAME.SEED@LABELS-VALID[.TAG].
  """
  match = SPLIT_RE.match(text or '')
  if not match:
    raise ValueError('invalid split name %r; expected NAME.SEED@LABELS-VALID'
                     '[.TAG], e.g. cifar10.1@4000-5000' % (text,))
  return SplitName(match.group('name'), int(match.group('seed')),
                   int(match.group('labels')), int(match.group('valid')),
                   match.group('tag'))


def format_split_name(name, seed, labels, valid, tag=None):
  text = '%s.%d@%d-%d' % (name, seed, labels, valid)
  if tag:
    text += '.' + tag
  parse_split_name(text)
  return text


def split_dir(dataset_dir, split_name):
  return os.path.join(dataset_dir, SPLITS_DIR, split_name)


def load(dataset_dir, split_name):
  """Reads and checks `<dataset_dir>/splits/<split_name>/split.json`."""
  path = os.path.join(split_dir(dataset_dir, split_name), SPLIT_FILE)
  split = dataset_info.read_json(path, 'split description')
  for key in ('name', 'dataset', 'seed', 'labels', 'valid', 'parts'):
    if key not in split:
      raise DataError('%s is incomplete: missing %s' % (path, key))
  for part in PARTS:
    if part not in split['parts']:
      raise DataError('%s is incomplete: missing part %s' % (path, part))
    dataset_info.check_part_entry(split['parts'][part], path, part)
  return split


def _source_index(entry):
  """Index of an `indices` entry: int, or the int after ':' of 'ds/split:i'."""
  return entry if isinstance(entry, int) else int(entry.rsplit(':', 1)[1])


def verify(dataset_dir, info, split, deep=False):
  """Checks the shards of every part of a loaded split (see dataset_info)."""
  directory = split_dir(dataset_dir, split['name'])
  for part in PARTS:
    dataset_info.verify_part(
        directory, split['parts'][part], info['image_shape'],
        info['num_classes'], allow_unlabeled=part == 'unlabeled', deep=deep,
        expected_indices=[_source_index(i)
                          for i in split['parts'][part]['indices']]
        if deep else None)


def _check_classes(classes, num_classes, flag):
  if classes is None:
    return None
  classes = [int(c) for c in classes]
  if not classes:
    raise DataError('%s is empty' % flag)
  bad = [c for c in classes if not 0 <= c < num_classes]
  if bad:
    raise DataError('%s: class %d is outside 0..%d'
                    % (flag, bad[0], num_classes - 1))
  if len(set(classes)) != len(classes):
    raise DataError('%s lists a class twice: %s'
                    % (flag, ','.join(str(c) for c in classes)))
  return sorted(classes)


def _iterate_records(paths):
  """Yields the raw records of shards in order; DataError on corruption."""
  for path in paths:
    try:
      for record in tf.io.tf_record_iterator(path):
        yield record
    except tf.errors.OpError as e:
      raise DataError('corrupt shard %s: %s'
                      % (path, runtime.error_line(e)))


def _read_labels(dataset_dir, info, split):
  """Labels of a dataset split, checking each record's index = position."""
  dataset_info.check_files_exist(dataset_dir, info['splits'][split])
  paths = dataset_info.shard_paths(dataset_dir, info, split)
  labels = []
  for position, record in enumerate(_iterate_records(paths)):
    try:
      feature = tf.train.Example.FromString(record).features.feature
      label = feature['label'].int64_list.value[0]
      index = feature['index'].int64_list.value[0]
    except (message.DecodeError, IndexError) as e:
      raise DataError('corrupt record %d of %s/%s: %s'
                      % (position, dataset_dir, split, e))
    if index != position:
      raise DataError('record %d of split %s in %s has index %d'
                      % (position, split, dataset_dir, index))
    labels.append(label)
  if len(labels) != info['splits'][split]['count']:
    raise DataError('split %s of %s holds %d records, dataset_info.json says '
                    '%d' % (split, dataset_dir, len(labels),
                            info['splits'][split]['count']))
  return np.array(labels, dtype=np.int64)


def _draw(labels, seed, num_labels, num_valid, labeled_classes,
          unlabeled_classes, class_names):
  """Returns sorted (labeled, valid, unlabeled) position arrays."""
  rng = np.random.RandomState(seed)
  order = rng.permutation(len(labels))
  per_class = num_labels // len(labeled_classes)
  taken = np.zeros(len(labels), bool)
  labeled = []
  for c in labeled_classes:
    members = order[labels[order] == c]
    if len(members) < per_class:
      raise DataError(
          'class %d (%s) has %d train images but the split asks for %d '
          'labeled images per class (%d labels over %d classes)'
          % (c, class_names[c], len(members), per_class, num_labels,
             len(labeled_classes)))
    labeled.append(members[:per_class])
  labeled = np.sort(np.concatenate(labeled))
  taken[labeled] = True
  in_labeled_classes = np.isin(labels, labeled_classes)
  candidates = order[~taken[order] & in_labeled_classes[order]]
  if len(candidates) < num_valid:
    raise DataError('the split asks for %d validation images but only %d '
                    'train images of the labeled classes remain after the %d '
                    'labeled ones' % (num_valid, len(candidates), num_labels))
  valid = np.sort(candidates[:num_valid])
  taken[valid] = True
  pool = ~taken
  if unlabeled_classes is not None:
    pool &= np.isin(labels, unlabeled_classes)
  return labeled, valid, np.flatnonzero(pool)


def _parse_extra(data_dir, spec, image_shape):
  """'other[:split]' -> (name, split, dataset_dir, info)."""
  name, _, split = spec.partition(':')
  split = split or 'train'
  dataset_dir, info = dataset_info.load_named(data_dir, name)
  if split not in info['splits']:
    raise DataError('extra unlabeled %r: dataset %s has no %s split '
                    '(splits: %s)' % (spec, name, split,
                                      ', '.join(info['splits'])))
  if info['image_shape'] != list(image_shape):
    raise DataError('extra unlabeled %r has images of shape %s, the split\'s '
                    'dataset has %s' % (spec, info['image_shape'],
                                        list(image_shape)))
  dataset_info.check_files_exist(dataset_dir, info['splits'][split])
  return name, split, dataset_dir, info


def _unlabel(record):
  example = tf.train.Example.FromString(record)
  label = example.features.feature['label'].int64_list
  del label.value[:]
  label.value.append(-1)
  return example.SerializeToString(deterministic=True)


def create_split(data_dir, split_name, labeled_classes=None,
                 unlabeled_classes=None, extra_unlabeled=(), overwrite=False):
  """Creates `DATA/NAME/splits/<split_name>/` from DATA/NAME's train split.

  Args:
    data_dir: the DATA directory.
    split_name: NAME.SEED@LABELS-VALID[.TAG].
    labeled_classes: class ids the labeled and valid images come from
      (default: all classes). LABELS must be divisible by their number.
    unlabeled_classes: class ids the train part of the unlabeled pool is
      restricted to (default: all).
    extra_unlabeled: prepared datasets 'other[:split]' (split default train)
      whose images are appended to the unlabeled pool with label -1.
    overwrite: replace an existing split of that name.

  Returns:
    The split directory.

  Raises:
    ValueError: a malformed split name.
    DataError: unknown dataset, filters or extras without a TAG, a class with
      fewer images than asked, too few images for the validation set,
      corrupt shards, an existing split without overwrite.
  """
  parsed = parse_split_name(split_name)
  extra_unlabeled = list(extra_unlabeled or ())
  if (labeled_classes is not None or unlabeled_classes is not None or
      extra_unlabeled) and not parsed.tag:
    raise DataError('split %s uses class filters or extra unlabeled data, so '
                    'its name needs a .TAG suffix (e.g. %s.custom)'
                    % (split_name, split_name))
  if len(set(extra_unlabeled)) != len(extra_unlabeled):
    raise DataError('extra unlabeled datasets listed twice: %s'
                    % ', '.join(extra_unlabeled))
  # The dataset is not replaced while the split is drawn from it.
  with fileio.lock(os.path.join(data_dir, parsed.name), False, 'dataset'):
    return _create_split(data_dir, split_name, parsed, labeled_classes,
                         unlabeled_classes, extra_unlabeled, overwrite)


def _create_split(data_dir, split_name, parsed, labeled_classes,
                  unlabeled_classes, extra_unlabeled, overwrite):
  """create_split under the dataset's shared lock."""
  dataset_dir, info = dataset_info.load_named(data_dir, parsed.name)
  num_classes = info['num_classes']
  classes = _check_classes(labeled_classes, num_classes, 'labeled_classes')
  if classes is None:
    classes = list(range(num_classes))
  unlabeled_classes = _check_classes(unlabeled_classes, num_classes,
                                     'unlabeled_classes')
  if parsed.labels <= 0:
    raise DataError('split %s asks for %d labels; it needs at least one per '
                    'class' % (split_name, parsed.labels))
  if parsed.labels % len(classes):
    raise DataError('split %s: %d labels are not divisible by the %d labeled '
                    'classes' % (split_name, parsed.labels, len(classes)))
  extras = [_parse_extra(data_dir, spec, info['image_shape'])
            for spec in extra_unlabeled]

  labels = _read_labels(dataset_dir, info, 'train')
  labeled, valid, unlabeled = _draw(labels, parsed.seed, parsed.labels,
                                    parsed.valid, classes, unlabeled_classes,
                                    info['class_names'])
  extra_indices = []
  for name, split, _, extra_info in extras:
    extra_indices.extend('%s/%s:%d' % (name, split, i)
                         for i in range(extra_info['splits'][split]['count']))

  target = split_dir(dataset_dir, split_name)
  with fileio.atomic_directory(target, overwrite, 'split',
                               marker=SPLIT_FILE) as tmp:
    part_of = np.full(len(labels), -1, np.int64)
    for code, positions in enumerate((labeled, valid, unlabeled)):
      part_of[positions] = code
    writers = [writer.ShardWriter(tmp, 'labeled', len(labeled)),
               writer.ShardWriter(tmp, 'valid', len(valid)),
               writer.ShardWriter(tmp, 'unlabeled',
                                  len(unlabeled) + len(extra_indices))]
    paths = dataset_info.shard_paths(dataset_dir, info, 'train')
    for position, record in enumerate(_iterate_records(paths)):
      if part_of[position] >= 0:
        writers[part_of[position]].write(record)
    for _, split, extra_dir, extra_info in extras:
      for record in _iterate_records(
          dataset_info.shard_paths(extra_dir, extra_info, split)):
        writers[2].write(_unlabel(record))
    description = collections.OrderedDict([
        ('name', split_name),
        ('dataset', parsed.name),
        ('seed', parsed.seed),
        ('labels', parsed.labels),
        ('valid', parsed.valid),
        ('tag', parsed.tag),
        ('labeled_classes', classes),
        ('unlabeled_classes', unlabeled_classes),
        ('extra_unlabeled', extra_unlabeled),
    ])
    indices = (labeled.tolist(), valid.tolist(),
               unlabeled.tolist() + extra_indices)
    description['parts'] = collections.OrderedDict()
    for part, part_writer, part_indices in zip(PARTS, writers, indices):
      entry = part_writer.close()
      description['parts'][part] = collections.OrderedDict([
          ('count', entry['count']), ('indices', part_indices),
          ('shards', entry['shards'])])
    dataset_info.write_json(os.path.join(tmp, SPLIT_FILE), description)
  return target
