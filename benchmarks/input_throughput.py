r"""Throughput of the training input pipeline on CIFAR-shaped data.

  python benchmarks/input_throughput.py [--images=5000] [--batches=20] \
      [--warmup=3] [--configs=sesemi,sesemi_zca,mixmatch,fixmatch]

The data and the configurations: docs/benchmarks.md.
"""

import collections
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import inputs
from input_pipeline import records
from input_pipeline import zca
from model_fns import hparams
from model_fns import registry
from runner import cli

FLAGS = flags.FLAGS

SHAPE = (32, 32, 3)
NUM_CLASSES = 10
SHARDS = 4
Source = collections.namedtuple(
    'Source', ['name', 'dataset_dir', 'info', 'split', 'files', 'counts'])

# name -> (algorithm module, parameter overrides). The needs and the
# normalisation are the algorithm's own (its DEFAULTS over COMMON_DEFAULTS).
CONFIGS = collections.OrderedDict([
    ('sesemi', ('sesemi', {})),
    ('sesemi_zca', ('sesemi', {'normalization': 'gcn_zca'})),
    ('mixmatch', ('mixmatch', {})),
    ('realmix', ('realmix', {})),
    ('fixmatch', ('fixmatch', {})),
])


def config_params(name):
  """(InputNeeds, params) of a configuration, from its algorithm module."""
  algorithm, overrides = CONFIGS[name]
  module = registry.get(algorithm)
  params = dict(hparams.COMMON_DEFAULTS)
  params.update(module.DEFAULTS)
  params.update(overrides, algorithm=algorithm, num_classes=NUM_CLASSES,
                image_shape=list(SHAPE), cache_images=FLAGS.cache_images,
                shuffle_buffer=FLAGS.shuffle_buffer)
  return module.input_needs(params), params


def define_flags():
  flags.DEFINE_integer('images', 5000, 'Random images written.')
  flags.DEFINE_integer('batches', 20, 'Timed batches per configuration.')
  flags.DEFINE_integer('warmup', 3, 'Untimed batches first.')
  flags.DEFINE_list('configs', list(CONFIGS), 'Configurations to run.')
  flags.DEFINE_bool('cache_images', True, 'Cache decoded images.')
  flags.DEFINE_integer('shuffle_buffer', 10000, 'Shuffle buffer.')


def write_source(directory, count, with_zca):
  """Writes `count` random images; returns a DataSource-like tuple."""
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, (count,) + SHAPE).astype(np.uint8)
  labels = rng.randint(0, NUM_CLASSES, count)
  num_labeled = count // 5
  files = {'labeled': [], 'unlabeled': [], 'valid': []}
  for part, start, stop in (('labeled', 0, num_labeled),
                            ('unlabeled', num_labeled, count)):
    for shard, chunk in enumerate(np.array_split(np.arange(start, stop),
                                                 SHARDS)):
      path = os.path.join(directory, '%s-%05d-of-%05d.tfrecord'
                          % (part, shard, SHARDS))
      with tf.io.TFRecordWriter(path) as writer:
        for i in chunk:
          writer.write(records.make_example(images[i], labels[i], i))
      files[part].append(path)
  info = {'name': 'bench', 'image_shape': list(SHAPE),
          'num_classes': NUM_CLASSES, 'mean': [.5] * 3, 'std': [.25] * 3,
          'zca': None}
  if with_zca:
    mean, matrix = zca.fit_zca(images)
    zca.save(os.path.join(directory, zca.FILE_NAME), mean, matrix)
    info['zca'] = zca.FILE_NAME
  counts = {'labeled': num_labeled, 'unlabeled': count - num_labeled,
            'valid': 0}
  return Source('bench', directory, info, None, files, counts)


def measure(source, needs, params, batches, warmup):
  """Returns (build seconds, seconds per batch) for one configuration."""
  with tf.Graph().as_default():
    start = time.time()
    dataset = inputs.train_input_fn(source, needs, params, seed=0)()
    element = tf.data.make_one_shot_iterator(dataset).get_next()
    # Touch every tensor so the timed loop pays for all of it.
    fetch = tf.group(*[tf.reduce_sum(tf.cast(t, tf.float32))
                       for t in tf.nest.flatten(element)])
    with tf.Session() as sess:
      for _ in range(warmup):
        sess.run(fetch)
      build = time.time() - start
      start = time.time()
      for _ in range(batches):
        sess.run(fetch)
      return build, (time.time() - start) / batches


def main(argv):
  del argv
  unknown = [c for c in FLAGS.configs if c not in CONFIGS]
  if unknown:
    raise cli.UsageError('--configs: unknown %s; known: %s'
                         % (', '.join(unknown), ', '.join(CONFIGS)))
  if FLAGS.batches < 1 or FLAGS.images < 100:
    raise cli.UsageError('--batches must be >= 1 and --images >= 100')
  directory = tempfile.mkdtemp(prefix='input_throughput-')
  try:
    source = write_source(directory, FLAGS.images,
                          'sesemi_zca' in FLAGS.configs)
    print('%d random %s images in %s; %d timed batches after %d warm-up, '
          'cache_images=%s' % (FLAGS.images, 'x'.join(map(str, SHAPE)),
                               directory, FLAGS.batches, FLAGS.warmup,
                               FLAGS.cache_images))
    results = {}
    for name in FLAGS.configs:
      needs, params = config_params(name)
      normalization = params['normalization']
      labeled, total = needs.batch_size, needs.images_per_step
      build, seconds = measure(source, needs, params, FLAGS.batches,
                               FLAGS.warmup)
      results[name] = {
          'needs': needs._asdict(),
          'normalization': normalization, 'labeled_per_step': labeled,
          'images_per_step': total, 'ms_per_step': round(1000 * seconds, 1),
          'labeled_images_per_s': round(labeled / seconds, 1),
          'total_images_per_s': round(total / seconds, 1),
          'build_and_warmup_s': round(build, 1)}
      print('%-11s %-14s %4d labeled / %4d total a step: %8.1f ms/step, '
            '%8.1f labeled/s, %8.1f images/s (build+warm-up %.1f s)'
            % (name, normalization, labeled, total, 1000 * seconds,
               labeled / seconds, total / seconds, build))
    print(json.dumps({'benchmark': 'input_throughput', 'cpus': os.cpu_count(),
                      'images': FLAGS.images, 'batches': FLAGS.batches,
                      'results': results}, sort_keys=True))
  finally:
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
