"""Pixel normalisation, shared by the input pipeline, eval and the SavedModel.

`norm_spec` builds the plain dict that `normalize` applies in the graph; the
modes: docs/architecture.md.
"""

import hashlib
import json
import os

import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import errors
from input_pipeline import fileio
from input_pipeline import zca

MODES = ('zero_one', 'minus_one_one', 'standardize', 'gcn', 'gcn_zca')
GCN_SCALE = zca.GCN_SCALE
GCN_EPS = zca.GCN_EPS


def norm_spec(info, mode, dataset_dir):
  """Returns the normalisation dict for `mode` on the dataset `info`.

  Args:
    info: parsed dataset_info.json (needs `image_shape`; `mean`/`std` for
      'standardize'; `zca` for 'gcn_zca').
    mode: one of MODES.
    dataset_dir: directory holding dataset_info.json (and zca.npz).

  Returns:
    dict with `mode` and, per mode, `mean`/`std` (float32 [C]), `scale`/`eps`
    (gcn) and `zca_mean` [D] / `zca_matrix` [D, D] (float32 numpy arrays).

  Raises:
    ValueError: unknown mode.
    errors.DataError: the dataset lacks the statistics or the ZCA file.
  """
  if mode not in MODES:
    raise ValueError('unknown normalization %r; known: %s'
                     % (mode, ', '.join(MODES)))
  spec = {'mode': mode}
  channels = int(info['image_shape'][-1])
  if mode == 'standardize':
    for key in ('mean', 'std'):
      values = info.get(key)
      if values is None or len(values) != channels:
        raise errors.DataError(
            '%s: dataset_info.json has no per-channel %r for %d channels'
            % (dataset_dir, key, channels))
      spec[key] = np.asarray(values, np.float32)
    if np.any(spec['std'] <= 0):
      raise errors.DataError('%s: dataset_info.json has a non-positive std'
                             % dataset_dir)
  if mode in ('gcn', 'gcn_zca'):
    spec['scale'] = GCN_SCALE
    spec['eps'] = GCN_EPS
  if mode == 'gcn_zca':
    spec['zca_mean'], spec['zca_matrix'] = _load_zca(info, dataset_dir)
  return spec


def _load_zca(info, dataset_dir):
  """Reads (mean [D], matrix [D, D]) from the dataset's zca.npz."""
  path = os.path.join(dataset_dir, info.get('zca') or zca.FILE_NAME)
  if not info.get('zca') or not os.path.exists(path):
    raise errors.DataError(
        '%s: dataset %r has no ZCA matrix; re-run prepare_data with --zca to '
        'use --normalization=gcn_zca' % (path, info.get('name')))
  return zca.load(path, int(np.prod(info['image_shape'])))


NORM_FILE = 'normalization.json'
ZCA_FILES = {'zca_mean': 'zca_mean.f32', 'zca_matrix': 'zca_matrix.f32'}


def save_norm(norm, directory):
  """Stores a norm_spec dict in a model directory (train.py, at the start).

  `normalization.json` holds the mode and the per-channel / GCN constants;
  with ZCA, the mean and matrix go to raw little-endian float32 files
  (`zca_mean.f32`, `zca_matrix.f32`) that the input pipeline reads in the
  graph (`graph_norm`), so the D×D matrix is not a graph constant. Written
  through temporary names and renamed; returns the JSON's path.
  """
  record = {'mode': norm['mode']}
  for key in ('mean', 'std'):
    if key in norm:
      record[key] = [float(v) for v in np.asarray(norm[key]).ravel()]
  for key in ('scale', 'eps'):
    if key in norm:
      record[key] = float(norm[key])
  if 'zca_matrix' in norm:
    record['zca'] = {}
    for key, name in sorted(ZCA_FILES.items()):
      value = np.asarray(norm[key], '<f4')
      data = value.tobytes()
      fileio.write_atomic(os.path.join(directory, name), data)
      record['zca'][key] = {'file': name, 'shape': list(value.shape),
                            'sha256': hashlib.sha256(data).hexdigest()}
  path = os.path.join(directory, NORM_FILE)
  fileio.write_atomic(path, (json.dumps(record, indent=2, sort_keys=True) +
                             '\n').encode('utf-8'))
  return path


def has_saved_norm(directory):
  return os.path.exists(os.path.join(directory, NORM_FILE))


def load_norm(directory, with_arrays=True):
  """The norm_spec dict `save_norm` stored in `directory`.

  With ZCA the dict also has `zca_files` ({key: (path, shape)}); the arrays
  `zca_mean` / `zca_matrix` are read only when `with_arrays` (the input
  pipeline reads the files in the graph instead).

  Raises:
    errors.DataError: a missing or damaged file, named.
  """
  path = os.path.join(directory, NORM_FILE)
  try:
    with open(path) as f:
      record = json.load(f)
    norm = {'mode': record['mode']}
  except (IOError, OSError, ValueError, KeyError) as e:
    raise errors.DataError('cannot read the normalisation %s: %s' % (path, e))
  for key in ('mean', 'std'):
    if key in record:
      norm[key] = np.asarray(record[key], np.float32)
  for key in ('scale', 'eps'):
    if key in record:
      norm[key] = record[key]
  if record.get('zca'):
    norm['zca_files'] = {}
    for key, entry in record['zca'].items():
      file_path = os.path.join(directory, entry['file'])
      shape = [int(d) for d in entry['shape']]
      expected = 4 * int(np.prod(shape))
      if (not os.path.exists(file_path) or
          os.path.getsize(file_path) != expected):
        raise errors.DataError('%s is missing or not %d bytes (float32 %s)'
                               % (file_path, expected, shape))
      if 'sha256' in entry:
        with open(file_path, 'rb') as f:
          digest = hashlib.sha256(f.read()).hexdigest()
        if digest != entry['sha256']:
          raise errors.DataError('%s is damaged: its sha256 differs from the '
                                 'one recorded in %s' % (file_path, path))
      norm['zca_files'][key] = (file_path, shape)
      if with_arrays:
        norm[key] = np.fromfile(file_path, '<f4').reshape(shape).astype(
            np.float32)
  return norm


def stored_norm(directory):
  """`load_norm(directory, with_arrays=False)`, or None when the directory
  has no stored normalisation (a model directory from before it was stored:
  callers then use the dataset's, `norm_spec`)."""
  if has_saved_norm(directory):
    return load_norm(directory, with_arrays=False)
  return None


def graph_norm(norm):
  """The norm dict with its arrays as tensors of the current graph.

  Small arrays become constants; ZCA stored by `save_norm` (`zca_files`) is
  read from its files when the graph runs, so the matrix is not a constant
  in graph.pbtxt.
  """
  out = {}
  files = norm.get('zca_files') or {}
  for key, value in norm.items():
    if key == 'zca_files':
      continue
    if key in files:
      continue
    out[key] = tf.constant(value) if hasattr(value, 'shape') else value
  for key, (path, shape) in files.items():
    raw = tf.io.decode_raw(tf.io.read_file(path), tf.float32,
                           little_endian=True)
    out[key] = tf.reshape(raw, shape, name='read_' + key)
  return out


def normalize(images, norm):
  """Normalises pixels per `norm` (a norm_spec dict).

  Args:
    images: [H, W, C] or [N, H, W, C] uint8, or float32 on the [0, 255]
      scale, with a static shape (except N).
    norm: dict from norm_spec; its numpy arrays may also be tensors.

  Returns:
    float32 tensor of the input's shape.
  """
  mode = norm['mode']
  x = tf.cast(images, tf.float32)
  if mode == 'zero_one':
    return x / 255.
  if mode == 'minus_one_one':
    return x / 127.5 - 1.
  if mode == 'standardize':
    return (x / 255. - norm['mean']) / norm['std']
  if mode not in ('gcn', 'gcn_zca'):
    raise ValueError('unknown normalization %r; known: %s'
                     % (mode, ', '.join(MODES)))
  single = x.shape.ndims == 3
  if single:
    x = x[None]
  shape = x.shape.as_list()[1:]
  # float64 as in zca.gcn_numpy: a constant image then has an exactly zero
  # residual (norm below eps) instead of amplified float32 rounding noise.
  flat = tf.reshape(tf.cast(x, tf.float64) / 255., [-1, int(np.prod(shape))])
  flat -= tf.reduce_mean(flat, axis=1, keepdims=True)
  length = tf.sqrt(tf.reduce_sum(tf.square(flat), axis=1, keepdims=True))
  length = tf.where(length < norm['eps'], tf.ones_like(length), length)
  flat = tf.cast(norm['scale'] * flat / length, tf.float32)
  if mode == 'gcn_zca':
    flat = tf.matmul(flat - norm['zca_mean'], norm['zca_matrix'])
  out = tf.reshape(flat, [-1] + shape)
  return out[0] if single else out
