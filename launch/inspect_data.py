r"""Shows what a prepared dataset or split holds and what training will see.

  python launch/inspect_data.py --data_dir=DATA --dataset=cifar10.1@250-500 \
      --output=/tmp/cifar10.png [--samples=8] [--normalization=gcn]

Prints the number of images per part and the class histogram of every part,
and with --output writes a PNG contact sheet: one row per labeled sample
(the raw image, then its 'weak', 'strong', 'realmix' and 'sesemi' views)
and a last row with the 6 SESEMI proxy images of the first sample. Views
are rescaled to [0, 1] per image for display. Errors end with one line
`error: ...` and exit code 1 (data) or 2 (flags).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags
import matplotlib
matplotlib.use('Agg')
from matplotlib import pyplot as plt
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import augment
from input_pipeline import preprocessing
from input_pipeline import records
from input_pipeline import runtime
from input_pipeline import sources
from input_pipeline.errors import DataError
from model_fns import hparams
from runner import cli

FLAGS = flags.FLAGS

PARTS = ('labeled', 'unlabeled', 'valid', 'test', 'train')
VIEW_COLUMNS = tuple(v for v in augment.VIEWS if v != 'none')
PROXY_NAMES = ('rot 0', 'rot 90', 'rot 180', 'rot 270', 'flip lr', 'flip ud')
COLUMNS = 6
CELL_INCHES = 1.25
DPI = 96


def define_flags():
  flags.DEFINE_string('data_dir', None,
                      'Prepared data (launch/prepare_data.py).')
  flags.DEFINE_string('dataset', None,
                      'Dataset name or split NAME.SEED@LABELS-VALID[.TAG].')
  flags.DEFINE_string('output', None, 'PNG contact sheet to write (optional).')
  flags.DEFINE_integer('samples', 8, 'Labeled images shown on the sheet.')
  flags.DEFINE_enum('normalization', hparams.COMMON_DEFAULTS['normalization'],
                    preprocessing.MODES, 'Normalisation of the views.')
  flags.DEFINE_integer('seed', 0, 'Seed of the augmentations shown.')


def sheet_size(samples):
  """(width, height) in pixels of the contact sheet for `samples` rows."""
  cell = int(CELL_INCHES * DPI)
  return COLUMNS * cell, (samples + 1) * cell


def class_histogram(files, num_classes):
  """Counts per class of the records in `files`; the last entry is label -1.

  Raises:
    DataError: a file is unreadable or holds a label outside the classes.
  """
  counts = np.zeros(num_classes + 1, np.int64)
  for path in files:
    try:
      for record in tf.io.tf_record_iterator(path):
        label = tf.train.Example.FromString(
            record).features.feature['label'].int64_list.value[0]
        if not -1 <= label < num_classes:
          raise DataError('%s: label %d outside 0..%d'
                          % (path, label, num_classes - 1))
        counts[label] += 1
    except tf.errors.OpError as e:
      raise DataError('%s: unreadable records (%s)' % (path, runtime.error_line(e)))
  return counts


def _first_images(files, count):
  images = []
  for path in files:
    for image, _, _ in records.read_examples(path):
      images.append(image)
      if len(images) == count:
        return images
  return images


def _views(images, source, normalization, seed):
  """{'raw'|view name: [N,H,W,C]} and the proxy images [6,H,W,C] or None."""
  shape = list(source.info['image_shape'])
  params = dict(hparams.COMMON_DEFAULTS, normalization=normalization)
  norm = preprocessing.norm_spec(source.info, normalization,
                                 source.dataset_dir)
  with tf.Graph().as_default():
    image = tf.placeholder(tf.uint8, shape)
    seed_t = tf.placeholder(tf.int64, [2])
    image01 = augment.to_unit(image)
    ops = {name: augment.view(image01, name, params, norm, seed_t)
           for name in VIEW_COLUMNS}
    if shape[0] == shape[1]:
      source_view = augment.view(image01, 'sesemi',
                                 dict(params, aug_flip=False), norm, seed_t)
      ops['proxy'] = augment.proxy_transforms(source_view[None])[0]
    out = {name: [] for name in ops}
    with tf.Session() as sess:
      for i, x in enumerate(images):
        for name, value in sess.run(ops, {image: x, seed_t: [seed, i]}).items():
          out[name].append(value)
  proxy = out.pop('proxy', [None])[0]
  out = {name: np.stack(values) for name, values in out.items()}
  out['raw'] = np.stack(images).astype(np.float32) / 255.
  return out, proxy


def _show(axis, image, title=None):
  low, high = image.min(), image.max()
  image = (image - low) / (high - low) if high > low else image * 0.
  if image.shape[-1] == 1:
    axis.imshow(image[..., 0], cmap='gray', vmin=0., vmax=1.)
  else:
    axis.imshow(np.clip(image, 0., 1.))
  if title:
    axis.set_title(title, fontsize=7)


def write_sheet(path, views, proxy, samples):
  """Writes the contact sheet (size `sheet_size(samples)`)."""
  width, height = sheet_size(samples)
  figure = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
  grid = figure.subplots(samples + 1, COLUMNS, squeeze=False)
  for axis in grid.ravel():
    axis.axis('off')
  for row in range(min(samples, len(views['raw']))):
    for column, name in enumerate(('raw',) + VIEW_COLUMNS):
      _show(grid[row, column], views[name][row], name if row == 0 else None)
  if proxy is not None:
    for column in range(6):
      _show(grid[samples, column], proxy[column],
            'proxy %d: %s' % (column, PROXY_NAMES[column]))
  figure.savefig(path, dpi=DPI, format='png')
  plt.close(figure)


def run(data_dir, dataset, output=None, samples=8,
        normalization=hparams.COMMON_DEFAULTS['normalization'], seed=0,
        printer=print):
  """Prints counts and histograms; writes the sheet when `output` is set.

  Returns:
    dict with `counts` {part: images} and `histogram` {part: [per class
    counts..., unknown]} of the non-empty parts.
  """
  if samples < 1:
    raise cli.UsageError('--samples must be positive, got %d' % samples)
  source = sources.resolve(data_dir, dataset)
  info = source.info
  num_classes = int(info['num_classes'])
  names = list(info.get('class_names') or range(num_classes))
  parts = [p for p in PARTS if source.counts.get(p)]
  printer('%s: %s images, %d classes' % (
      source.name, 'x'.join(str(d) for d in info['image_shape']),
      num_classes))
  printer('images per part:')
  for part in PARTS:
    printer('  %-10s %8d' % (part, source.counts.get(part, 0)))
  histogram = {p: class_histogram(source.files[p], num_classes) for p in parts}
  printer('class histogram:')
  printer('  %-20s' % 'class' + ''.join('%11s' % p for p in parts))
  for c in range(num_classes + 1):
    label = 'unknown (-1)' if c == num_classes else '%d %s' % (c, names[c])
    printer('  %-20s' % label[:20] +
            ''.join('%11d' % histogram[p][c] for p in parts))
  if output:
    images = _first_images(source.files['labeled'], samples)
    views, proxy = _views(images, source, normalization, seed)
    write_sheet(cli.resolve_path(output), views, proxy, samples)
    printer('wrote %s (%d samples: raw, %s; SESEMI proxies of sample 0)'
            % (output, len(images), ', '.join(VIEW_COLUMNS)))
  return {'counts': {p: source.counts[p] for p in parts},
          'histogram': {p: histogram[p].tolist() for p in parts}}


def main(argv):
  del argv
  if not FLAGS.data_dir or not FLAGS.dataset:
    raise cli.UsageError('--data_dir and --dataset are required')
  run(cli.resolve_path(FLAGS.data_dir), FLAGS.dataset, FLAGS.output,
      FLAGS.samples, FLAGS.normalization, FLAGS.seed)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
