"""The TFRecord schema: one tf.train.Example per image; docs/architecture.md."""

import io

import numpy as np
from PIL import Image
import tensorflow.compat.v1 as tf

FEATURES = {
    'image': tf.io.FixedLenFeature([], tf.string),
    'label': tf.io.FixedLenFeature([], tf.int64),
    'index': tf.io.FixedLenFeature([], tf.int64),
}


def encode_png(image):
  """Encodes a uint8 [H, W, C] array (C in 1, 3, 4) as PNG bytes."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError('images must be uint8, got %s' % image.dtype)
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError('images must be [H, W, C] with C in 1, 3, 4; got %s'
                     % (image.shape,))
  pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  buf = io.BytesIO()
  pil.save(buf, format='PNG', compress_level=1)
  return buf.getvalue()


def decode_png(data):
  """Decodes PNG bytes to a uint8 [H, W, C] array (numpy side, for tools)."""
  arr = np.asarray(Image.open(io.BytesIO(data)))
  return arr[..., None] if arr.ndim == 2 else arr


def make_example(image, label, index):
  """Returns a serialised tf.train.Example for one uint8 image."""
  feature = {
      'image': tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[encode_png(image)])),
      'label': tf.train.Feature(int64_list=tf.train.Int64List(
          value=[int(label)])),
      'index': tf.train.Feature(int64_list=tf.train.Int64List(
          value=[int(index)])),
  }
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString(
          deterministic=True)


def parse_example(serialized, image_shape):
  """Graph op: serialised Example -> dict(image uint8 [H,W,C], label, index).

  The decoded image gets the static shape `image_shape`; an image whose shape
  differs fails at run time with an InvalidArgumentError naming the shapes.
  """
  parsed = tf.io.parse_single_example(serialized, FEATURES)
  image = tf.io.decode_png(parsed['image'], channels=int(image_shape[-1]))
  image = tf.ensure_shape(image, list(image_shape))
  return {'image': image, 'label': parsed['label'], 'index': parsed['index']}


def read_examples(path):
  """Yields (image uint8 [H,W,C], label, index) from one TFRecord file."""
  for record in tf.io.tf_record_iterator(path):
    example = tf.train.Example.FromString(record)
    f = example.features.feature
    yield (decode_png(f['image'].bytes_list.value[0]),
           f['label'].int64_list.value[0], f['index'].int64_list.value[0])
