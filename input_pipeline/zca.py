"""Global contrast normalisation and ZCA whitening in numpy (SESEMI's recipe).

The formulas: docs/architecture.md.
"""

import numpy as np

from input_pipeline.errors import DataError

GCN_SCALE = 55.0
GCN_EPS = 1e-10
ZCA_REGULARIZATION = 0.1
ZCA_EPS = 1e-10
FILE_NAME = 'zca.npz'

_CHUNK = 4096


def gcn_numpy(images, scale=GCN_SCALE, eps=GCN_EPS):
  """GCN of uint8 images [N, ...] -> float32 of the same shape."""
  images = np.asarray(images)
  flat = images.reshape(len(images), -1).astype(np.float64) / 255.0
  flat -= flat.mean(axis=1, keepdims=True)
  norm = np.sqrt(np.sum(flat * flat, axis=1, keepdims=True))
  norm[norm < eps] = 1.0
  return (scale * flat / norm).astype(np.float32).reshape(images.shape)


def _gcn_chunks(images):
  for start in range(0, len(images), _CHUNK):
    chunk = gcn_numpy(images[start:start + _CHUNK])
    yield chunk.reshape(len(chunk), -1).astype(np.float64)


def fit_zca(images_uint8, regularization=ZCA_REGULARIZATION, eps=ZCA_EPS):
  """Fits ZCA on GCN'd uint8 images [N, H, W, C].

  Returns:
    (mean float32 [D], matrix float32 [D, D]).
  """
  images = np.asarray(images_uint8)
  n = len(images)
  if n < 2:
    raise DataError('ZCA needs at least 2 training images, got %d' % n)
  total = None
  for chunk in _gcn_chunks(images):
    part = chunk.sum(axis=0)
    total = part if total is None else total + part
  mean = total / n
  cov = np.zeros((mean.size, mean.size), np.float64)
  for chunk in _gcn_chunks(images):
    chunk -= mean
    cov += chunk.T.dot(chunk)
  cov /= n - 1
  cov += regularization * np.eye(mean.size)
  eigenvalues, eigenvectors = np.linalg.eigh(cov)
  matrix = (eigenvectors * (1.0 / np.sqrt(eigenvalues + eps))).dot(
      eigenvectors.T)
  return mean.astype(np.float32), matrix.astype(np.float32)


def apply_numpy(images_uint8, mean, matrix):
  """GCN then ZCA of uint8 images [N, H, W, C] -> float32, same shape."""
  images = np.asarray(images_uint8)
  flat = gcn_numpy(images).reshape(len(images), -1).astype(np.float64)
  white = (flat - mean).dot(matrix.astype(np.float64))
  return white.astype(np.float32).reshape(images.shape)


def save(path, mean, matrix):
  """Writes mean/matrix as an .npz file."""
  with open(path, 'wb') as f:
    np.savez(f, mean=np.asarray(mean, np.float32),
             matrix=np.asarray(matrix, np.float32))


def load(path, dim=None):
  """Reads (mean [D], matrix [D, D]) float32; DataError naming the file."""
  try:
    with np.load(path, allow_pickle=False) as data:
      mean, matrix = data['mean'], data['matrix']
  except Exception as e:  # pylint: disable=broad-except
    # A damaged .npz raises OSError, KeyError, ValueError, but also
    # zipfile.BadZipFile, zlib.error, EOFError, ...: all a problem of the file.
    raise DataError('cannot read ZCA file %s: %s: %s'
                    % (path, type(e).__name__, e))
  d = mean.size if dim is None else dim
  if mean.shape != (d,) or matrix.shape != (d, d):
    raise DataError('ZCA file %s holds mean %s and matrix %s, expected [%d] '
                    'and [%d, %d]' % (path, mean.shape, matrix.shape, d, d, d))
  return mean.astype(np.float32), matrix.astype(np.float32)
