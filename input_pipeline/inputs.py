"""tf.data input functions for Estimators: training, evaluation, prediction.

Each builder returns an Estimator `input_fn` over a `sources.DataSource`.
Features, streams, determinism and padding: docs/architecture.md.
"""

import collections
import hashlib
import random

import tensorflow.compat.v1 as tf

from input_pipeline import augment
from input_pipeline import errors
from input_pipeline import preprocessing
from input_pipeline import records

AUTOTUNE = tf.data.experimental.AUTOTUNE
MAX_PARALLEL_READS = 8
_SEED_MOD = 2**31 - 1
_MAX_EPOCHS = 2**62   # "forever" for Dataset.range
# Modes normalised on groups of NORM_BATCH images between the two halves of
# the views (a [64, D] x [D, D] product instead of 64 matrix-vector ones);
# the other modes are cheap per image and run in one map.
GROUP_NORMALIZED = ('gcn_zca',)
NORM_BATCH = 64
PROXY_VIEW = 'sesemi'

# One augmented image per training element: `view` of augment.VIEWS with
# `params`, stored under `key` ('image', 'views' or 'proxy').
Slot = collections.namedtuple('Slot', ['key', 'view', 'params'])


def _graph_only(fn):
  """Marks a tf.data map function as plain graph code (no AutoGraph).

  The pipeline has no data-dependent Python control flow; AutoGraph would
  only re-parse the augmentation code, which takes tens of seconds for
  RandAugment.
  """
  return tf.autograph.experimental.do_not_convert(fn)


def _mix_seed(*parts):
  """A deterministic int in [0, 2^31) from any hashable parts."""
  digest = hashlib.sha256(repr(parts).encode('utf-8')).digest()
  return int.from_bytes(digest[:4], 'little') & 0x7fffffff


def _part_files(source, part):
  if part not in source.files:
    raise ValueError('unknown part %r of %s; parts: %s'
                     % (part, source.name, ', '.join(sorted(source.files))))
  files = list(source.files[part])
  if not files:
    raise errors.DataError('%s: dataset %s has no %r images'
                           % (source.dataset_dir, source.name, part))
  return files


def _graph_norm(norm):
  """The norm dict's arrays as tensors, created once per graph."""
  return preprocessing.graph_norm(norm)


def _norm(source, params, norm):
  """`norm` (a model directory's stored normalisation) or the dataset's."""
  if norm is not None:
    return norm
  return preprocessing.norm_spec(source.info, params['normalization'],
                                 source.dataset_dir)


def _read(files, image_shape, num_shards=1, shard_index=0, cache=False,
          sequential=False):
  """Decoded records {image uint8 [H,W,C], label, index} of `files`.

  Files are read in parallel (a deterministic interleave) unless
  `sequential`, which keeps the file order.
  """
  parallel = 1 if sequential else min(len(files), MAX_PARALLEL_READS)
  dataset = tf.data.TFRecordDataset(files, num_parallel_reads=parallel)
  if num_shards > 1:
    dataset = dataset.shard(num_shards, shard_index)

  @_graph_only
  def parse(serialized):
    return records.parse_example(serialized, image_shape)

  dataset = dataset.map(parse, num_parallel_calls=AUTOTUNE)
  return dataset.cache() if cache else dataset


def epoch_seed(seed, epoch):
  """The shuffle seed of pass `epoch` (int64 tensor) of a stream's records."""
  return (tf.constant(seed % _SEED_MOD, tf.int64) * 1000003 +
          tf.cast(epoch, tf.int64)) % _SEED_MOD


def _epochs(dataset, size, buffer_size, seed, start, whole_passes=False):
  """The records of `dataset` (`size` of them) pass after pass, each pass
  shuffled with its own seed `epoch_seed(seed, pass)`, from stream position
  `start` on: the stream a run that started at position 0 would be at.

  `whole_passes` (the records are cached in memory): each pass is gathered
  into one batch and permuted entirely (a stateless permutation of
  (seed, pass)); the cached records are read once. Otherwise each pass is
  read again and shuffled with a buffer of `buffer_size`. TF 1.15 does not
  share an in-memory cache between the passes of a flat_map, hence the
  two forms. `buffer_size <= 1` keeps the file order in both.
  """
  first_epoch, offset = divmod(int(start), int(size))
  shuffle = buffer_size > 1
  if whole_passes:
    passes = dataset.repeat().batch(int(size), drop_remainder=True)
    passes = passes.enumerate(start=first_epoch)

    @_graph_only
    def permute(epoch, batch):
      if not shuffle:
        return batch
      keys = tf.random.stateless_uniform(
          [int(size)], seed=tf.stack([epoch_seed(seed, epoch),
                                      tf.cast(epoch, tf.int64)]))
      order = tf.argsort(keys)
      return {k: tf.gather(v, order) for k, v in batch.items()}

    stream = passes.map(permute).unbatch()
  else:

    def one_pass(epoch):
      if not shuffle:
        return dataset
      return dataset.shuffle(buffer_size, seed=epoch_seed(seed, epoch),
                             reshuffle_each_iteration=False)

    stream = tf.data.Dataset.range(first_epoch, _MAX_EPOCHS).flat_map(one_pass)
  return stream.skip(offset) if offset else stream


def _stream(dataset, params, seed, slots, batch_size, norm, size, start=0,
            cached=False):
  """Shuffled, repeated, augmented, batched stream of the views in `slots`.

  The stream is the records pass after pass, each pass a shuffle seeded by
  (seed, pass) (`_epochs`; `cached`: `dataset` is cached in memory, each
  pass is permuted whole), starting at position `start` (images already
  drawn by earlier steps): a run that stops and restarts its pipeline (each
  evaluation chunk, a resume) continues the stream where it was, and over
  E passes every image is drawn E times. `size` is the number of records
  of `dataset`.

  Each image goes through every slot's view in its two halves (augment.py):
  the pixel-value ops, normalisation, then the geometric and noise ops; for
  GROUP_NORMALIZED modes the normalisation runs on groups of NORM_BATCH
  images in between. The augmentation seed of an image is [seed, its
  position in the stream].

  Returns:
    Dataset of {'label': int64 [B], 'index': int64 [B], key: float32
    [B, H, W, C] for the keys 'image' and 'proxy', [B, V, H, W, C] for
    'views' (its slots in order)}.
  """
  if size < 1:
    raise errors.DataError('a training stream has no images')
  dataset = _epochs(dataset, size, int(params['shuffle_buffer']), seed, start,
                    whole_passes=cached)
  dataset = dataset.enumerate(start=int(start))
  stream_seed = tf.constant(seed, tf.int64)

  @_graph_only
  def pixel_stage(position, example):
    slot_seeds = augment.split_seed(tf.stack([stream_seed, position]),
                                    len(slots))
    image01 = augment.to_unit(example['image'])
    pixels, geometry_seeds = [], []
    for i, slot in enumerate(slots):
      pixel_seed, geometry_seed = augment.view_seeds(slot_seeds[i])
      pixels.append(augment.view_pixels(image01, slot.view, slot.params,
                                        pixel_seed))
      geometry_seeds.append(geometry_seed)
    return {'pixels': tf.stack(pixels), 'seeds': tf.stack(geometry_seeds),
            'label': example['label'], 'index': example['index']}

  @_graph_only
  def normalize_stage(element):
    pixels = element['pixels']
    flat = tf.reshape(pixels, [-1] + pixels.shape.as_list()[-3:])
    normalized = tf.reshape(preprocessing.normalize(flat, norm),
                            tf.shape(pixels))
    normalized.set_shape(pixels.shape)
    return dict(element, pixels=normalized)

  @_graph_only
  def geometry_stage(element):
    images = collections.OrderedDict()
    for i, slot in enumerate(slots):
      images.setdefault(slot.key, []).append(augment.view_geometry(
          element['pixels'][i], slot.view, slot.params, element['seeds'][i]))
    out = {'label': element['label'], 'index': element['index']}
    for key, values in images.items():
      out[key] = tf.stack(values) if key == 'views' else values[0]
    return out

  @_graph_only
  def augment_element(position, example):
    return geometry_stage(normalize_stage(pixel_stage(position, example)))

  if norm['mode'] in GROUP_NORMALIZED:
    dataset = dataset.map(pixel_stage, num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(NORM_BATCH).map(normalize_stage,
                                            num_parallel_calls=AUTOTUNE)
    dataset = dataset.unbatch().map(geometry_stage,
                                    num_parallel_calls=AUTOTUNE)
  else:
    dataset = dataset.map(augment_element, num_parallel_calls=AUTOTUNE)
  return dataset.batch(batch_size, drop_remainder=True)


def _check_train_args(source, needs, num_shards, shard_index):
  if num_shards < 1 or not 0 <= shard_index < num_shards:
    raise ValueError('shard_index %d must be in [0, num_shards=%d)'
                     % (shard_index, num_shards))
  if needs.proxy == 'unlabeled' and needs.proxy_batch > needs.num_unlabeled:
    raise ValueError('proxy_batch %d exceeds the unlabeled batch %d'
                     % (needs.proxy_batch, needs.num_unlabeled))
  shape = source.info['image_shape']
  if needs.proxy and shape[0] != shape[1]:
    raise ValueError('SESEMI proxy transforms need square images, %s has %s'
                     % (source.name, shape))


def unlabeled_files(source, keeps_labeled):
  """The unlabeled pool's files, plus the labeled ones when asked."""
  files = list(source.files.get('unlabeled') or [])
  if keeps_labeled:
    files += [f for f in source.files['labeled'] if f not in files]
  if not files:
    raise errors.DataError('%s: dataset %s has no unlabeled images'
                           % (source.dataset_dir, source.name))
  return files


def unlabeled_count(source, keeps_labeled):
  """Images of `unlabeled_files(source, keeps_labeled)`."""
  count = source.counts.get('unlabeled') or 0
  unlabeled = set(source.files.get('unlabeled') or [])
  if keeps_labeled and not set(source.files['labeled']) <= unlabeled:
    count += source.counts['labeled']
  return count


def shard_size(count, num_shards, shard_index):
  """Records of shard `shard_index` of `count` (Dataset.shard's split)."""
  return len(range(shard_index, count, num_shards))


def train_input_fn(source, needs, params, seed=None, num_shards=1,
                   shard_index=0, start_step=0, batches_per_step=1,
                   norm=None):
  """Estimator input_fn for training; docs/architecture.md.

  Args:
    source: a DataSource.
    needs: an input_pipeline.needs.InputNeeds.
    params: dict with normalization, shuffle_buffer, cache_images and the
      augmentation keys of augment.view.
    seed: int base seed, or None for a fresh one.
    num_shards: number of input shards (workers); each reads every
      num_shards-th record of each stream.
    shard_index: this worker's shard.
    start_step: the global step the first batch is for. Each stream starts
      at position start_step * batches_per_step * its batch size, so the
      pipelines of successive train calls (and of a resumed run) with the
      same seed continue one stream.
    batches_per_step: batches of each stream consumed per global step
      (replicas fed from this pipeline).
    norm: the normalisation (preprocessing.load_norm of the model
      directory); None: the dataset's (preprocessing.norm_spec).

  Returns:
    A zero-argument callable returning a tf.data.Dataset of
    (features, labels).
  """
  _check_train_args(source, needs, num_shards, shard_index)
  image_shape = list(source.info['image_shape'])
  spec = _norm(source, params, norm)
  labeled = _part_files(source, 'labeled')
  num_unlabeled = needs.num_unlabeled
  pool = unlabeled_files(source, needs.unlabeled_keeps_labeled) if (
      num_unlabeled) else []
  base = random.SystemRandom().randrange(2**31) if seed is None else seed
  seeds = {name: _mix_seed(base, name, shard_index, num_shards)
           for name in ('labeled', 'unlabeled', 'proxy')}
  cache = bool(params['cache_images'])

  def read(files):
    return _read(files, image_shape, num_shards, shard_index, cache)

  labeled_slots = [Slot('image', needs.labeled_view, params)]
  unlabeled_slots = [Slot('views', view, params)
                     for view in needs.unlabeled_views]
  proxy_slot = Slot('proxy', PROXY_VIEW, dict(params, aug_flip=False))
  if needs.proxy == 'unlabeled':
    unlabeled_slots.append(proxy_slot)

  labeled_size = shard_size(source.counts['labeled'], num_shards, shard_index)
  pool_size = shard_size(unlabeled_count(source, needs.unlabeled_keeps_labeled),
                         num_shards, shard_index) if num_unlabeled else 0
  steps = int(start_step) * int(batches_per_step)

  def input_fn():
    norm = _graph_norm(spec)
    streams = [_stream(read(labeled), params, seeds['labeled'], labeled_slots,
                       needs.batch_size, norm, labeled_size,
                       steps * needs.batch_size, cache)]
    if num_unlabeled:
      streams.append(_stream(read(pool), params, seeds['unlabeled'],
                             unlabeled_slots, num_unlabeled, norm, pool_size,
                             steps * num_unlabeled, cache))
    if needs.proxy == 'labeled':
      streams.append(_stream(read(labeled), params, seeds['proxy'],
                             [proxy_slot], needs.proxy_batch, norm,
                             labeled_size, steps * needs.proxy_batch, cache))

    @_graph_only
    def combine(*batches):
      features = dict(batches[0])
      del features['index']
      proxy_source = None
      if num_unlabeled:
        unlabeled = batches[1]
        features['unlabeled_label'] = unlabeled['label']
        if needs.unlabeled_index:
          features['unlabeled_index'] = unlabeled['index']
        if 'views' in unlabeled:
          features['unlabeled_views'] = unlabeled['views']
        if needs.proxy == 'unlabeled':
          proxy_source = unlabeled['proxy'][:needs.proxy_batch]
      if needs.proxy == 'labeled':
        proxy_source = batches[-1]['proxy']
      if proxy_source is not None:
        features['proxy_image'], features['proxy_label'] = (
            augment.proxy_transforms(proxy_source))
      return features, features['label']

    dataset = tf.data.Dataset.zip(tuple(streams))
    return dataset.map(combine).prefetch(AUTOTUNE)

  return input_fn


def _padded_batches(source, part, batch_size, params, norm=None):
  """(spec, callable building padded, normalised batches of `part`)."""
  if batch_size < 1:
    raise ValueError('batch_size must be positive, got %d' % batch_size)
  files = _part_files(source, part)
  image_shape = list(source.info['image_shape'])
  spec = _norm(source, params, norm)

  @_graph_only
  def add_mask(example):
    return dict(example, mask=tf.constant(1., tf.float32))

  def build():
    norm = _graph_norm(spec)

    @_graph_only
    def normalize_batch(batch):
      return dict(batch, image=preprocessing.normalize(batch['image'], norm))

    dataset = _read(files, image_shape, sequential=True).map(add_mask)
    padding = {'image': tf.zeros(image_shape, tf.uint8),
               'label': tf.constant(0, tf.int64),
               'index': tf.constant(-1, tf.int64),
               'mask': tf.constant(0., tf.float32)}
    dataset = dataset.concatenate(
        tf.data.Dataset.from_tensors(padding).repeat(batch_size - 1))
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(normalize_batch, num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)

  return build


def eval_input_fn(source, part, batch_size, params, norm=None):
  """Estimator input_fn: one pass over `part`, (features, labels).

  Features: image float32 [B,H,W,C] (normalised, no augmentation), label
  int64 [B], index int64 [B] (-1 for padding), mask float32 [B] (0 for the
  padding of the last batch).
  """
  build = _padded_batches(source, part, batch_size, params, norm)

  def input_fn():
    return build().map(lambda features: (features, features['label']))

  return input_fn


def predict_input_fn(source, part, batch_size, params, norm=None):
  """Estimator input_fn for predict: one pass over `part`, features only.

  Same features as eval_input_fn (image, label, index, mask); rows with
  mask 0 (index -1) are padding and should be dropped by the consumer.
  `norm` as in train_input_fn.
  """
  return _padded_batches(source, part, batch_size, params, norm)
