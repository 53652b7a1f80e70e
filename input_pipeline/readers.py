"""Readers of raw dataset files in their published formats.

CIFAR-10/100, SVHN, MNIST-style idx, image folders and TensorFlow Datasets,
each read into a `RawDataset`: docs/architecture.md.
"""

import collections
import contextlib
import gzip
import os
import pickle
import struct
import zlib

import numpy as np
from PIL import Image

from input_pipeline.errors import DataError

RawDataset = collections.namedtuple('RawDataset',
                                    ['splits', 'class_names', 'source'])

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                   'frog', 'horse', 'ship', 'truck')
MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                         'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
SVHN_CLASSES = tuple(str(d) for d in range(10))
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')

_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_CIFAR_PIXELS = 32 * 32 * 3

# The only globals a pickled numpy array refers to.
_PICKLE_ALLOWED = frozenset([
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
])


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that resolves only the numpy globals of `_PICKLE_ALLOWED`."""

  def find_class(self, module, name):
    if (module, name) in _PICKLE_ALLOWED:
      return super(_RestrictedUnpickler, self).find_class(module, name)
    raise pickle.UnpicklingError('global %s.%s is not allowed' % (module, name))


def load_pickle(path):
  """Loads a CIFAR-style pickle (encoding='bytes') without running code.

  Raises:
    DataError: the file is missing, unreadable, or refers to any global other
      than numpy's array reconstruction.
  """
  _require_file(path, 'a pickled batch')
  try:
    with open(path, 'rb') as f:
      return _RestrictedUnpickler(f, encoding='bytes').load()
  except pickle.UnpicklingError as e:
    if 'is not allowed' in str(e):
      raise DataError('refusing to unpickle %s: %s' % (path, e))
    raise DataError('cannot unpickle %s: %s' % (path, e))
  except (EOFError, ValueError, TypeError, AttributeError, IndexError,
          KeyError, OSError, MemoryError, OverflowError, RecursionError) as e:
    raise DataError('cannot unpickle %s: %s: %s'
                    % (path, type(e).__name__, e))


def _require_file(path, what):
  if not os.path.isfile(path):
    raise DataError('missing file %s (expected %s)' % (path, what))


def _find_subdir(source_dir, name, marker):
  """Returns source_dir/name, or source_dir itself when it holds `marker`."""
  if not os.path.isdir(source_dir):
    raise DataError('source directory %s does not exist' % source_dir)
  nested = os.path.join(source_dir, name)
  if os.path.isdir(nested):
    return nested
  if os.path.exists(os.path.join(source_dir, marker)):
    return source_dir
  return None


def _as_split(images, labels, path):
  try:
    labels = np.asarray(labels, dtype=np.int64)
  except (ValueError, TypeError, OverflowError) as e:
    raise DataError('%s: labels are not integers: %s' % (path, e))
  if labels.ndim != 1:
    raise DataError('%s: labels must be a flat list, got shape %s'
                    % (path, labels.shape))
  if len(labels) != len(images):
    raise DataError('%s holds %d images but %d labels'
                    % (path, len(images), len(labels)))
  return images, labels


# ---------------------------------------------------------------- CIFAR ----


def _cifar_pixels(data, path):
  """[N, 3072] channel-major uint8 -> [N, 32, 32, 3]."""
  data = np.asarray(data)
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
    raise DataError('%s: expected b"data" uint8 [N, %d], got %s %s'
                    % (path, _CIFAR_PIXELS, data.dtype, data.shape))
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def _dict_key(d, key, path):
  if not isinstance(d, dict):
    raise DataError('%s: expected a pickled dict, got %s'
                    % (path, type(d).__name__))
  if key not in d:
    raise DataError('%s: missing key %r (keys: %s)'
                    % (path, key, ', '.join(repr(k) for k in sorted(d))))
  return d[key]


def _names(values, path):
  if not isinstance(values, (list, tuple)):
    raise DataError('%s: class names must be a list, got %s'
                    % (path, type(values).__name__))
  try:
    return [v.decode('utf-8') if isinstance(v, bytes) else str(v)
            for v in values]
  except UnicodeDecodeError as e:
    raise DataError('%s: class names are not UTF-8 text: %s' % (path, e))


def _read_cifar_pickle_batch(path, label_key):
  batch = load_pickle(path)
  images = _cifar_pixels(_dict_key(batch, b'data', path), path)
  return _as_split(images, _dict_key(batch, label_key, path), path)


def read_cifar10(source_dir):
  """Reads CIFAR-10 from the python pickles or, failing that, binary batches.

  `source_dir` is the directory holding `cifar-10-batches-py/` (or
  `cifar-10-batches-bin/`) or that batches directory itself.
  """
  py_dir = _find_subdir(source_dir, 'cifar-10-batches-py', 'data_batch_1')
  if py_dir is not None:
    return _read_cifar10_python(py_dir)
  bin_dir = _find_subdir(source_dir, 'cifar-10-batches-bin',
                         'data_batch_1.bin')
  if bin_dir is not None:
    return _read_cifar10_binary(bin_dir)
  raise DataError('missing CIFAR-10 files in %s (expected cifar-10-batches-py/'
                  'data_batch_1..5 and test_batch, or cifar-10-batches-bin/'
                  'data_batch_1..5.bin and test_batch.bin)' % source_dir)


def _read_cifar10_python(batch_dir):
  meta_path = os.path.join(batch_dir, 'batches.meta')
  names = _names(_dict_key(load_pickle(meta_path), b'label_names', meta_path),
                 meta_path)
  parts = [_read_cifar_pickle_batch(
      os.path.join(batch_dir, 'data_batch_%d' % i), b'labels')
           for i in range(1, 6)]
  train = (np.concatenate([p[0] for p in parts]),
           np.concatenate([p[1] for p in parts]))
  test = _read_cifar_pickle_batch(os.path.join(batch_dir, 'test_batch'),
                                  b'labels')
  return RawDataset(collections.OrderedDict([('train', train), ('test', test)]),
                    names, 'cifar10-python')


def _read_cifar_binary_batch(path):
  _require_file(path, 'a CIFAR-10 binary batch of 3073-byte records')
  with open(path, 'rb') as f:
    raw = np.frombuffer(f.read(), dtype=np.uint8)
  record = 1 + _CIFAR_PIXELS
  if raw.size == 0 or raw.size % record:
    raise DataError('%s: size %d is not a positive multiple of the %d-byte '
                    'record (1 label byte + 3072 pixels)'
                    % (path, raw.size, record))
  raw = raw.reshape(-1, record)
  return _as_split(_cifar_pixels(raw[:, 1:], path), raw[:, 0], path)


def _read_cifar10_binary(batch_dir):
  meta_path = os.path.join(batch_dir, 'batches.meta.txt')
  _require_file(meta_path, 'class names, one per line')
  with open(meta_path, 'rb') as f:
    try:
      names = [l.strip().decode('utf-8') for l in f.read().splitlines()]
    except UnicodeDecodeError as e:
      raise DataError('%s: class names are not UTF-8 text: %s'
                      % (meta_path, e))
  names = [n for n in names if n]
  parts = [_read_cifar_binary_batch(
      os.path.join(batch_dir, 'data_batch_%d.bin' % i)) for i in range(1, 6)]
  train = (np.concatenate([p[0] for p in parts]),
           np.concatenate([p[1] for p in parts]))
  test = _read_cifar_binary_batch(os.path.join(batch_dir, 'test_batch.bin'))
  return RawDataset(collections.OrderedDict([('train', train), ('test', test)]),
                    names, 'cifar10-binary')


def read_cifar100(source_dir, coarse=False):
  """Reads CIFAR-100 python (`cifar-100-python/{train,test,meta}`).

  Args:
    source_dir: directory holding `cifar-100-python/` or that directory.
    coarse: use the 20 superclasses (b'coarse_labels') instead of the 100
      fine classes.
  """
  batch_dir = _find_subdir(source_dir, 'cifar-100-python', 'train')
  if batch_dir is None:
    raise DataError('missing CIFAR-100 files in %s (expected cifar-100-python/'
                    'train, test and meta)' % source_dir)
  kind = b'coarse' if coarse else b'fine'
  meta_path = os.path.join(batch_dir, 'meta')
  names = _names(_dict_key(load_pickle(meta_path), kind + b'_label_names',
                           meta_path), meta_path)
  splits = collections.OrderedDict(
      (split, _read_cifar_pickle_batch(os.path.join(batch_dir, split),
                                       kind + b'_labels'))
      for split in ('train', 'test'))
  return RawDataset(splits, names, 'cifar100-python-' + kind.decode())


# ----------------------------------------------------------------- SVHN ----


def _read_svhn_mat(path):
  import scipy.io  # pylint: disable=g-import-not-at-top
  _require_file(path, 'SVHN cropped digits .mat with X [32,32,3,N], y [N,1]')
  try:
    mat = scipy.io.loadmat(path, variable_names=['X', 'y'])
  except Exception as e:  # pylint: disable=broad-except
    # Whatever scipy's parser raises on a damaged file (MatReadError,
    # zlib.error, struct.error, ...) is a problem of that file.
    raise DataError('cannot read %s: %s: %s' % (path, type(e).__name__, e))
  for key in ('X', 'y'):
    if key not in mat:
      raise DataError('%s: missing variable %s' % (path, key))
  x, y = mat['X'], mat['y']
  if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3:
    raise DataError('%s: expected X uint8 [H, W, 3, N], got %s %s'
                    % (path, x.dtype, x.shape))
  try:
    y = np.asarray(y).reshape(-1).astype(np.int64)
  except (ValueError, TypeError, OverflowError) as e:
    raise DataError('%s: y is not integer labels: %s' % (path, e))
  bad = np.flatnonzero((y < 1) | (y > 10))
  if bad.size:
    raise DataError('%s: label %d at index %d is outside 1..10'
                    % (path, y[bad[0]], bad[0]))
  y[y == 10] = 0
  return _as_split(np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y, path)


def read_svhn(source_dir, extra=False):
  """Reads SVHN `{train,test}_32x32.mat` (+ `extra_32x32.mat` as `extra`).

  Label 10 (the digit 0) becomes 0.
  """
  if not os.path.isdir(source_dir):
    raise DataError('source directory %s does not exist' % source_dir)
  names = ['train', 'test'] + (['extra'] if extra else [])
  splits = collections.OrderedDict(
      (n, _read_svhn_mat(os.path.join(source_dir, '%s_32x32.mat' % n)))
      for n in names)
  return RawDataset(splits, list(SVHN_CLASSES), 'svhn-mat')


# ------------------------------------------------------------------ idx ----


def _open_maybe_gzip(source_dir, name, what):
  """Returns the bytes of source_dir/name or source_dir/name.gz."""
  plain = os.path.join(source_dir, name)
  gz = plain + '.gz'
  try:
    if os.path.isfile(plain):
      with open(plain, 'rb') as f:
        return plain, f.read()
    if os.path.isfile(gz):
      with gzip.open(gz, 'rb') as f:
        return gz, f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DataError('cannot read %s: %s' % (plain if os.path.isfile(plain)
                                             else gz, e))
  raise DataError('missing file %s[.gz] (expected %s)' % (plain, what))


def _parse_idx_images(path, raw):
  if len(raw) < 16:
    raise DataError('%s: too short for an idx3 header' % path)
  magic, n, rows, cols = struct.unpack('>IIII', raw[:16])
  if magic != _IDX_IMAGES_MAGIC:
    raise DataError('%s: magic number %d, expected %d (idx3 ubyte images)'
                    % (path, magic, _IDX_IMAGES_MAGIC))
  if len(raw) != 16 + n * rows * cols:
    raise DataError('%s: %d bytes, expected %d for %d images of %dx%d'
                    % (path, len(raw), 16 + n * rows * cols, n, rows, cols))
  return np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows, cols, 1)


def _parse_idx_labels(path, raw):
  if len(raw) < 8:
    raise DataError('%s: too short for an idx1 header' % path)
  magic, n = struct.unpack('>II', raw[:8])
  if magic != _IDX_LABELS_MAGIC:
    raise DataError('%s: magic number %d, expected %d (idx1 ubyte labels)'
                    % (path, magic, _IDX_LABELS_MAGIC))
  if len(raw) != 8 + n:
    raise DataError('%s: %d bytes, expected %d for %d labels'
                    % (path, len(raw), 8 + n, n))
  return np.frombuffer(raw, np.uint8, offset=8).astype(np.int64)


def read_idx(source_dir, class_names, source='idx'):
  """Reads `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` (MNIST layout).

  `t10k` becomes the `test` split.
  """
  if not os.path.isdir(source_dir):
    raise DataError('source directory %s does not exist' % source_dir)
  splits = collections.OrderedDict()
  for split, prefix in (('train', 'train'), ('test', 't10k')):
    ipath, iraw = _open_maybe_gzip(source_dir, prefix + '-images-idx3-ubyte',
                                   'idx3 ubyte images')
    images = _parse_idx_images(ipath, iraw)
    lpath, lraw = _open_maybe_gzip(source_dir, prefix + '-labels-idx1-ubyte',
                                   'idx1 ubyte labels')
    labels = _parse_idx_labels(lpath, lraw)
    if len(labels) != len(images):
      raise DataError('%s holds %d labels but %s holds %d images'
                      % (lpath, len(labels), ipath, len(images)))
    splits[split] = (images, labels)
  return RawDataset(splits, list(class_names), source)


def read_mnist(source_dir):
  return read_idx(source_dir, MNIST_CLASSES)


def read_fashion_mnist(source_dir):
  return read_idx(source_dir, FASHION_MNIST_CLASSES)


# -------------------------------------------------------- image folders ----


def _inside(root_real, path):
  """Resolves symlinks of `path`; DataError if it leaves `root_real`."""
  real = os.path.realpath(path)
  if os.path.commonpath([root_real, real]) != root_real:
    raise DataError('%s resolves to %s, outside the source directory %s'
                    % (path, real, root_real))
  return real


def _image_files(root_real, folder):
  """Sorted image files directly inside `folder` (checked to stay inside)."""
  files = []
  for entry in sorted(os.listdir(folder)):
    path = os.path.join(folder, entry)
    if entry.startswith('.') or not entry.lower().endswith(IMAGE_EXTENSIONS):
      continue
    if os.path.isfile(_inside(root_real, path)):
      files.append(path)
  return files


def _class_dirs(root_real, folder, skip):
  dirs = []
  for entry in sorted(os.listdir(folder)):
    path = os.path.join(folder, entry)
    if entry.startswith('.') or entry in skip:
      continue
    if os.path.isdir(_inside(root_real, path)):
      dirs.append(entry)
  return dirs


def _load_image(path, image_size):
  """Reads one image as uint8 [H, W, C] (C in 1, 3, 4), resized if asked."""
  try:
    with Image.open(path) as pil:
      pil.load()
      if pil.mode.startswith(('I', 'F')):
        raise DataError('image %s has mode %s; only 8-bit images are '
                        'supported' % (path, pil.mode))
      if pil.mode == '1':
        pil = pil.convert('L')
      elif pil.mode == 'P':
        pil = pil.convert('RGBA' if 'transparency' in pil.info else 'RGB')
      elif pil.mode == 'LA':
        pil = pil.convert('RGBA')
      elif pil.mode not in ('L', 'RGB', 'RGBA'):
        pil = pil.convert('RGB')
      if image_size:
        pil = pil.resize((image_size, image_size), Image.BICUBIC)
      array = np.asarray(pil, dtype=np.uint8)
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Whatever PIL's decoders raise on a damaged file (OSError, SyntaxError,
    # DecompressionBombError, struct.error, MemoryError, ...).
    raise DataError('cannot read image %s: %s: %s'
                    % (path, type(e).__name__, e))
  return array[..., None] if array.ndim == 2 else array


def _folder_items(root_real, folder, class_names, unlabeled=False):
  """(path, label) of the images of one split folder, in a stable order."""
  if unlabeled:
    return [(p, -1) for p in _image_files(root_real, folder)]
  items = []
  for label, name in enumerate(class_names):
    class_dir = os.path.join(folder, name)
    if os.path.isdir(class_dir):
      found = _image_files(root_real, class_dir)
      if not found:
        # An empty class would be a class no image teaches (refused, not
        # dropped: dropping it would renumber the other classes).
        raise DataError('class folder %s has no .png/.jpg/.jpeg images; add '
                        'images or remove the folder' % class_dir)
      items.extend((p, label) for p in found)
  if not items:
    raise DataError('no .png/.jpg/.jpeg images found in %s' % folder)
  return items


def _load_split(items, image_size):
  """([uint8 [H, W, C] images], int64 labels) of `items`."""
  return ([_load_image(path, image_size) for path, _ in items],
          np.array([l for _, l in items], np.int64))


def read_image_folder(source_dir, image_size=0, unlabeled_dir='unlabeled',
                      channels=0):
  """Reads `<source_dir>/<class>/*.png|jpg|jpeg` into labelled splits.

  If `source_dir/train/` and `source_dir/test/` both exist they become the
  `train` and `test` splits (class names from `train/`); otherwise all class
  folders of `source_dir` form `train`. Class folders are sorted by name and
  numbered from 0. Images directly inside `source_dir/<unlabeled_dir>/`
  (when that folder exists and `unlabeled_dir` is non-empty) form an
  `unlabeled` split with label -1. Only files directly inside a class folder
  are read. Every path is resolved and must stay inside `source_dir`.

  Args:
    source_dir: the root folder.
    image_size: if > 0, every image is resized to image_size x image_size.
    unlabeled_dir: name of the unlabeled folder ('' for none).
    channels: 1 or 3 converts every image to that many channels
      (`convert_channels`); 0: 1 when every image is grey, else 3. Images
      whose channel counts differ (grey, RGB, RGBA) are therefore fine.

  Raises:
    DataError: missing folders, a class folder without images, fewer than
      two classes, unreadable images, images of different sizes (naming both
      files), or a path leading outside `source_dir`.
  """
  if not os.path.isdir(source_dir):
    raise DataError('source directory %s does not exist' % source_dir)
  root_real = os.path.realpath(source_dir)
  skip = {unlabeled_dir} if unlabeled_dir else set()
  train_dir = os.path.join(source_dir, 'train')
  test_dir = os.path.join(source_dir, 'test')
  split_dirs = [('train', source_dir)]
  if os.path.isdir(train_dir) and os.path.isdir(test_dir):
    split_dirs = [('train', _inside(root_real, train_dir)),
                  ('test', _inside(root_real, test_dir))]
  class_names = _class_dirs(root_real, split_dirs[0][1], skip)
  if not class_names:
    raise DataError('no class folders in %s (expected <class_name>/*.png|jpg)'
                    % split_dirs[0][1])
  for split, folder in split_dirs[1:]:
    unknown = sorted(set(_class_dirs(root_real, folder, skip))
                     - set(class_names))
    if unknown:
      raise DataError('%s has class folders %s that train does not have'
                      % (folder, ', '.join(unknown)))
  items = [(split, _folder_items(root_real, folder, class_names))
           for split, folder in split_dirs]
  unlabeled_path = os.path.join(source_dir, unlabeled_dir)
  if unlabeled_dir and os.path.isdir(unlabeled_path):
    items.append(('unlabeled', _folder_items(
        root_real, _inside(root_real, unlabeled_path), class_names,
        unlabeled=True)))
  loaded = [(split, _load_split(split_items, image_size))
            for split, split_items in items]
  if len(class_names) < 2:
    raise DataError('%s has %d class folder (%s); a classifier needs at least '
                    '2 classes' % (split_dirs[0][1], len(class_names),
                                   ', '.join(class_names)))
  first = None
  for split, (images, _) in loaded:
    for i, image in enumerate(images):
      path = dict(items)[split][i][0]
      if first is None:
        first = (image.shape, path)
      elif image.shape[:2] != first[0][:2]:
        raise DataError('image %s has shape %s but %s has %s; all images must '
                        'share one size (use --image_size to resize)'
                        % (path, image.shape, first[1], first[0]))
  channels = channels or auto_channels(
      {image.shape[-1] for _, (images, _) in loaded for image in images})
  splits = collections.OrderedDict(
      (split, (np.stack([convert_channels(image[None], channels)[0]
                         for image in images]),
               labels)) for split, (images, labels) in loaded)
  return RawDataset(splits, class_names, 'image_folder')


# ----------------------------------------------------------------- TFDS ----

TFDS_SPLITS = ('train', 'test', 'extra', 'unlabeled')


def examples_to_arrays(examples, image_key='image', label_key='label',
                       what='tfds'):
  """Collects an iterator of {image, label} numpy dicts into arrays.

  Examples without `label_key` get label -1. Used on `tfds.as_numpy` output.
  """
  images, labels = [], []
  for i, example in enumerate(examples):
    if image_key not in example:
      raise DataError('%s example %d has no %r feature (features: %s)'
                      % (what, i, image_key, ', '.join(sorted(example))))
    image = np.asarray(example[image_key])
    if image.dtype != np.uint8 or image.ndim != 3:
      raise DataError('%s example %d: expected a uint8 [H, W, C] image, got '
                      '%s %s' % (what, i, image.dtype, image.shape))
    if images and image.shape != images[0].shape:
      raise DataError('%s example %d has shape %s, example 0 has %s'
                      % (what, i, image.shape, images[0].shape))
    images.append(image)
    labels.append(int(example[label_key]) if label_key in example else -1)
  if not images:
    raise DataError('%s has no examples' % what)
  return np.stack(images), np.array(labels, dtype=np.int64)


@contextlib.contextmanager
def tfds_offline():
  """Context in which tensorflow_datasets never contacts its GCS bucket.

  tensorflow_datasets looks up dataset metadata on GCS whenever a dataset
  directory is absent, retrying for a long time without a network. Inside
  this context that lookup is disabled (the switch differs between tfds 3.2.1
  and 4.x: input_pipeline/runtime.py).
  """
  from input_pipeline import runtime  # pylint: disable=g-import-not-at-top
  saved = runtime.disable_tfds_gcs()
  try:
    yield
  finally:
    runtime.restore_tfds_gcs(saved)


def read_tfds(name, data_dir):
  """Reads an already-downloaded TFDS dataset (tensorflow_datasets 3.2.1 / 4.9).

  `name` is what `tfds.builder` takes (`cifar10`, `mnist:3.*.*`, ...);
  `data_dir` is the TFDS data directory. Nothing is downloaded. The splits
  `train`, `test`, `extra` and `unlabeled` are read in TFDS's stored order
  (others, e.g. `validation`, are ignored); the features must include an
  `image` and a ClassLabel `label`.
  """
  try:
    return _read_tfds(name, data_dir)
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # What TFDS and TensorFlow raise on a damaged dataset directory (a JSON
    # or protobuf parse error, a corrupt TFRecord, a missing shard, ...).
    raise DataError('cannot read TFDS dataset %s in %s: %s: %s'
                    % (name, data_dir, type(e).__name__,
                       str(e).split('\n')[0]))


def _read_tfds(name, data_dir):
  """read_tfds, raising whatever TFDS raises."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  base = name.split(':')[0].split('/')[0]
  if not os.path.isdir(os.path.join(data_dir, base)):
    raise DataError('TFDS dataset %s is not in the TFDS data directory %s '
                    '(expected %s/); download it with tfds on a machine with '
                    'internet access' % (name, data_dir,
                                         os.path.join(data_dir, base)))
  with tfds_offline():
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise DataError('unknown TFDS dataset %r: %s'
                      % (name, str(e).split('\n')[0]))
  if not tf.io.gfile.exists(os.path.join(builder.data_dir,
                                         'dataset_info.json')):
    raise DataError('TFDS dataset %s is not prepared in %s (expected %s)'
                    % (name, data_dir, builder.data_dir))
  features = builder.info.features
  if 'label' not in features or not hasattr(features['label'], 'names'):
    raise DataError('TFDS dataset %s has no ClassLabel feature "label"' % name)
  splits = collections.OrderedDict()
  for split in TFDS_SPLITS:
    if split not in builder.info.splits:
      continue
    with tf.Graph().as_default():
      dataset = builder.as_dataset(split=split, shuffle_files=False)
      splits[split] = examples_to_arrays(tfds.as_numpy(dataset),
                                         what='%s/%s' % (name, split))
  if 'train' not in splits:
    raise DataError('TFDS dataset %s has no train split (splits: %s)'
                    % (name, ', '.join(builder.info.splits)))
  return RawDataset(splits, list(features['label'].names), 'tfds:' + name)


# ------------------------------------------------------------- dispatch ----

# The one table of dataset kinds: how to read each from its source
# directory, the options of `read` only it takes (prepare_data refuses them
# for other kinds) and where its files are found when no directory is given.
Reader = collections.namedtuple('Reader',
                                ['read', 'options', 'default_source_dir'])

READERS = collections.OrderedDict([
    ('fashion_mnist', Reader(lambda path, o: read_fashion_mnist(path), (),
                             '/usr/share/datasets/fashion-mnist')),
    ('mnist', Reader(lambda path, o: read_mnist(path), (), None)),
    ('cifar10', Reader(lambda path, o: read_cifar10(path), (), None)),
    ('cifar100', Reader(
        lambda path, o: read_cifar100(path, coarse=o['coarse_labels']),
        ('coarse_labels',), None)),
    ('svhn', Reader(lambda path, o: read_svhn(path, extra=o['svhn_extra']),
                    ('svhn_extra',), None)),
    ('image_folder', Reader(
        lambda path, o: read_image_folder(
            path, image_size=o['image_size'],
            unlabeled_dir=o['unlabeled_dir'], channels=o['channels']),
        ('image_size',), None)),
])
TFDS_PREFIX = 'tfds:'  # tfds:NAME, read by read_tfds from a TFDS data_dir.
DATASETS = tuple(READERS) + (TFDS_PREFIX + 'NAME',)


def is_dataset(kind):
  """True for a kind of READERS or tfds:NAME."""
  return kind in READERS or (kind.startswith(TFDS_PREFIX) and
                             len(kind) > len(TFDS_PREFIX))


CHANNELS = (0, 1, 3)


def convert_channels(images, channels):
  """uint8 [N, H, W, C] images with `channels` (1 or 3) channels.

  The rule every prepared dataset follows: alpha is dropped (RGBA -> RGB,
  LA -> L), grey is repeated to RGB, and RGB becomes grey by ITU-R 601
  luma (PIL's 'L' conversion).
  """
  images = np.asarray(images)
  if images.shape[-1] in (2, 4):
    images = images[..., :-1]
  if images.shape[-1] == channels:
    return images
  if channels == 3:
    return np.repeat(images, 3, axis=-1)
  luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114],
                                               np.float32)
  return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]


def auto_channels(channel_counts):
  """The declared channel count for images of these channel counts: 1 when
  every image is grey (with or without alpha), else 3."""
  return 1 if set(channel_counts) <= {1, 2} else 3


def _with_channels(raw, channels):
  """`raw` with every split converted to one channel count (see read)."""
  counts = {np.asarray(images).shape[-1] for images, _ in raw.splits.values()
            if np.asarray(images).ndim == 4}
  channels = channels or auto_channels(counts)
  if counts <= {channels}:
    return raw
  splits = collections.OrderedDict(
      (name, (convert_channels(images, channels), labels))
      for name, (images, labels) in raw.splits.items())
  return raw._replace(splits=splits)


def read(dataset, source_dir, coarse_labels=False, svhn_extra=False,
         image_size=0, unlabeled_dir='unlabeled', channels=0):
  """Reads `dataset` (one of DATASETS) from `source_dir`.

  For `tfds:NAME`, `source_dir` is the TFDS data directory. Every image of
  the result has `channels` channels (1 or 3; 0: 1 when every image is grey,
  else 3), converted by `convert_channels`, so that every prepared dataset
  trains with every algorithm (which take grey or RGB images).

  Raises:
    ValueError: unknown dataset kind (lists the known ones).
    DataError: problems with the files.
  """
  if channels not in CHANNELS:
    raise ValueError('channels must be one of %s, got %r' % (CHANNELS,
                                                            channels))
  return _with_channels(_read(dataset, source_dir, coarse_labels, svhn_extra,
                              image_size, unlabeled_dir, channels), channels)


def _read(dataset, source_dir, coarse_labels, svhn_extra, image_size,
          unlabeled_dir, channels):
  """`read` before the channel conversion."""
  if dataset in READERS:
    return READERS[dataset].read(source_dir, dict(
        coarse_labels=coarse_labels, svhn_extra=svhn_extra,
        image_size=image_size, unlabeled_dir=unlabeled_dir,
        channels=channels))
  if is_dataset(dataset):
    return read_tfds(dataset[len(TFDS_PREFIX):], source_dir)
  raise ValueError('unknown dataset %r; known: %s'
                   % (dataset, ', '.join(DATASETS)))
