"""Synthetic images and MNIST-format files, for benchmarks and tests alike
(tests/data_fixtures.py re-exports them).
"""

import gzip
import os
import struct

import numpy as np


def random_images(n, shape=(32, 32, 3), seed=0):
  """uint8 [n, *shape] uniform noise."""
  return np.random.RandomState(seed).randint(
      0, 256, size=(n,) + tuple(shape)).astype(np.uint8)


def tiny_arrays(n, shape=(8, 8, 3), num_classes=4, seed=0):
  """Learnable tiny images: class c is noise around a class-specific level.

  Returns:
    (images uint8 [n, *shape], labels int64 [n]) with labels cycling 0..K-1,
    so every class has n // num_classes or one more images.
  """
  rng = np.random.RandomState(seed)
  labels = np.arange(n) % num_classes
  rng.shuffle(labels)
  levels = np.linspace(40, 215, num_classes)
  images = levels[labels].reshape(-1, 1, 1, 1) + rng.normal(
      0, 20, (n,) + tuple(shape))
  return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def write_idx(directory, prefix, images, labels, gzipped=True):
  """Writes `<prefix>-{images-idx3,labels-idx1}-ubyte[.gz]` (MNIST layout).

  Args:
    directory: output folder.
    prefix: 'train' or 't10k'.
    images: uint8 [N, rows, cols] (or [N, rows, cols, 1]).
    labels: ints [N].
    gzipped: gzip the files (as distributed) or not.
  """
  os.makedirs(directory, exist_ok=True)
  images = np.asarray(images, np.uint8).reshape(len(images), images.shape[1],
                                                images.shape[2])
  n, rows, cols = images.shape
  blobs = {
      '%s-images-idx3-ubyte' % prefix:
          struct.pack('>IIII', 2051, n, rows, cols) + images.tobytes(),
      '%s-labels-idx1-ubyte' % prefix:
          struct.pack('>II', 2049, len(labels)) +
          np.asarray(labels, np.uint8).tobytes(),
  }
  for name, blob in blobs.items():
    path = os.path.join(directory, name + ('.gz' if gzipped else ''))
    opener = gzip.open if gzipped else open
    with opener(path, 'wb') as f:
      f.write(blob)
