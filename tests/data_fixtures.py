"""Test data and entry points: tiny datasets in the exact published raw formats
(each writer returns what a correct reader must produce), prepared ones
through the real writer and splitter, and `run_entry` / `start_entry`, which
run an entry point as a subprocess. Use: docs/architecture.md.
"""

import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image
import tensorflow.compat.v1 as tf

from benchmarks import synthetic
from input_pipeline import dataset_info
from input_pipeline import splits
from input_pipeline import writer

random_images = synthetic.random_images
tiny_arrays = synthetic.tiny_arrays
write_idx = synthetic.write_idx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny network and the flags of a few-step supervised run (entry-point tests).
TINY_NET = ['--network=resnet', '--filters=4', '--repeat=1', '--scales=1']
BASE_FLAGS = ['--algorithm=supervised', '--batch_size=4',
              '--save_checkpoints_steps=5', '--log_every_steps=5'] + TINY_NET


def subprocess_env(**changes):
  """The environment for an entry point run as a subprocess: quiet, not
  inside `bazel run` (no BUILD_WORKING_DIRECTORY to resolve paths against),
  then `changes` (a value None unsets the variable)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  env.pop('BUILD_WORKING_DIRECTORY', None)
  env.update(changes)
  return {k: v for k, v in env.items() if v is not None}


def entry_command(script, args=()):
  """The command line of an entry point as a user types it: `script` is
  'train' for launch/train.py, or a path from the repository root without
  '.py' ('benchmarks/accuracy')."""
  path = script if '/' in script else 'launch/' + script
  return [sys.executable, os.path.join(ROOT, path + '.py')] + list(args)


def start_entry(script, *args, env=None, **popen_kwargs):
  """Starts entry_command(script, args) with text output piped and the
  environment subprocess_env(**env); popen_kwargs: cwd, preexec_fn, ..."""
  return subprocess.Popen(
      entry_command(script, args), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, universal_newlines=True,
      env=subprocess_env(**(env or {})), **popen_kwargs)


def run_entry(script, *args, env=None, timeout=600, **popen_kwargs):
  """Runs an entry point like start_entry to its end: the CompletedProcess."""
  return subprocess.run(
      entry_command(script, args), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, universal_newlines=True,
      env=subprocess_env(**(env or {})), timeout=timeout, check=False,
      **popen_kwargs)


def error_lines(stderr):
  """The `error: ...` lines an entry point printed."""
  return [l for l in stderr.splitlines() if l.startswith('error:')]


class _Py2Pickler(pickle._Pickler):  # pylint: disable=protected-access
  """Pickles like Python 2's cPickle: every str/bytes is a py2 `str`.

  The CIFAR files were written by Python 2, so their strings (dict keys,
  numpy dtype codes, the raw pixel buffer) are BINSTRING opcodes, which
  Python 3 loads as bytes under encoding='bytes'.
  """

  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def save_py2_str(self, obj):
    data = obj.encode('latin-1') if isinstance(obj, str) else obj
    if len(data) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
    else:
      self.write(pickle.BINSTRING + struct.pack('<i', len(data)) + data)
    self.memoize(obj)

  dispatch[str] = save_py2_str
  dispatch[bytes] = save_py2_str


def py2_pickle(path, obj):
  """Writes `obj` as a Python 2 protocol-2 pickle."""
  with open(path, 'wb') as f:
    _Py2Pickler(f, protocol=2).dump(obj)


def _channel_major(images):
  """[N, 32, 32, 3] -> CIFAR's [N, 3072] (all R, then G, then B)."""
  return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


CIFAR10_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                 'frog', 'horse', 'ship', 'truck']


def write_cifar10_python(directory, n_per_batch=4, n_test=None, seed=0):
  """Writes `<directory>/cifar-10-batches-py/` with 5 train batches + test.

  Train labels cycle over the 10 classes (shuffled within each batch), so
  5 * n_per_batch train images hold every class about equally often.

  Returns:
    {'train': (images, labels), 'test': (images, labels)}, images uint8
    [N, 32, 32, 3], labels int64 [N] (train = batches 1..5 in order).
  """
  n_test = n_per_batch if n_test is None else n_test
  batch_dir = os.path.join(directory, 'cifar-10-batches-py')
  os.makedirs(batch_dir, exist_ok=True)
  rng = np.random.RandomState(seed)
  train_images, train_labels = [], []
  for i in range(1, 7):
    n = n_per_batch if i < 6 else n_test
    images = rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    first = (i - 1) * n_per_batch
    labels = rng.permutation(np.arange(first, first + n) % 10).tolist()
    name = 'data_batch_%d' % i if i < 6 else 'test_batch'
    py2_pickle(os.path.join(batch_dir, name), {
        'batch_label': 'training batch %d of 5' % i if i < 6 else
                       'testing batch 1 of 1',
        'labels': labels, 'data': _channel_major(images),
        'filenames': ['img_%d.png' % j for j in range(n)]})
    if i < 6:
      train_images.append(images)
      train_labels.extend(labels)
    else:
      test = (images, np.array(labels, np.int64))
  py2_pickle(os.path.join(batch_dir, 'batches.meta'), {
      'label_names': CIFAR10_NAMES, 'num_cases_per_batch': n_per_batch,
      'num_vis': 3072})
  return {'train': (np.concatenate(train_images),
                    np.array(train_labels, np.int64)),
          'test': test}


def write_cifar10_binary(directory, n_per_batch=4, n_test=None, seed=0):
  """Writes `<directory>/cifar-10-batches-bin/`; returns like the above."""
  n_test = n_per_batch if n_test is None else n_test
  batch_dir = os.path.join(directory, 'cifar-10-batches-bin')
  os.makedirs(batch_dir, exist_ok=True)
  rng = np.random.RandomState(seed)
  result = {'train': ([], [])}
  for i in range(1, 7):
    n = n_per_batch if i < 6 else n_test
    images = rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    labels = rng.randint(0, 10, n).astype(np.uint8)
    rows = np.concatenate([labels[:, None], _channel_major(images)], axis=1)
    name = 'data_batch_%d.bin' % i if i < 6 else 'test_batch.bin'
    with open(os.path.join(batch_dir, name), 'wb') as f:
      f.write(rows.astype(np.uint8).tobytes())
    if i < 6:
      result['train'][0].append(images)
      result['train'][1].append(labels)
    else:
      result['test'] = (images, labels.astype(np.int64))
  with open(os.path.join(batch_dir, 'batches.meta.txt'), 'w') as f:
    f.write('\n'.join(CIFAR10_NAMES) + '\n\n')
  result['train'] = (np.concatenate(result['train'][0]),
                     np.concatenate(result['train'][1]).astype(np.int64))
  return result


def write_cifar100_python(directory, n_train=6, n_test=4, seed=0):
  """Writes `<directory>/cifar-100-python/{train,test,meta}`.

  Returns:
    {split: (images, fine_labels, coarse_labels)}.
  """
  batch_dir = os.path.join(directory, 'cifar-100-python')
  os.makedirs(batch_dir, exist_ok=True)
  rng = np.random.RandomState(seed)
  result = {}
  for split, n in (('train', n_train), ('test', n_test)):
    images = rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    fine = rng.randint(0, 100, n)
    coarse = fine // 5
    py2_pickle(os.path.join(batch_dir, split), {
        'filenames': ['f%d.png' % j for j in range(n)],
        'batch_label': split, 'fine_labels': fine.tolist(),
        'coarse_labels': coarse.tolist(), 'data': _channel_major(images)})
    result[split] = (images, fine.astype(np.int64), coarse.astype(np.int64))
  py2_pickle(os.path.join(batch_dir, 'meta'), {
      'fine_label_names': ['fine%02d' % i for i in range(100)],
      'coarse_label_names': ['coarse%02d' % i for i in range(20)]})
  return result


def write_svhn(directory, n_train=5, n_test=3, n_extra=0, seed=0):
  """Writes SVHN `<split>_32x32.mat` files (X [32,32,3,N], y [N,1] in 1..10).

  Returns:
    {split: (images [N, 32, 32, 3], labels with 10 mapped to 0)}.
  """
  import scipy.io  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  rng = np.random.RandomState(seed)
  result = {}
  for split, n in (('train', n_train), ('test', n_test), ('extra', n_extra)):
    if not n:
      continue
    images = rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    y = rng.randint(1, 11, (n, 1)).astype(np.uint8)
    y[0, 0] = 10
    scipy.io.savemat(os.path.join(directory, '%s_32x32.mat' % split),
                     {'X': images.transpose(1, 2, 3, 0), 'y': y})
    result[split] = (images, np.where(y[:, 0] == 10, 0, y[:, 0]).astype(
        np.int64))
  return result


def write_image_folder(directory, class_images, ext='.png'):
  """Writes `<directory>/<class>/<i:03d><ext>` for {class: uint8 [N,H,W,C]}."""
  for name, images in class_images.items():
    folder = os.path.join(directory, name)
    os.makedirs(folder, exist_ok=True)
    for i, image in enumerate(images):
      image = np.asarray(image, np.uint8)
      Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
          os.path.join(folder, '%03d%s' % (i, ext)))


def prepare_tiny_dataset(data_dir, name='tiny', shape=(8, 8, 3), num_classes=4,
                         n_train=64, n_test=16, n_unlabeled=0, zca=False,
                         seed=0):
  """Writes a real prepared dataset `<data_dir>/<name>` through the writer.

  Args:
    data_dir: DATA directory.
    name: dataset name.
    shape: image shape [H, W, C].
    num_classes: classes named 'class0', 'class1', ...
    n_train: train images (labels cycle over the classes, see tiny_arrays).
    n_test: test images.
    n_unlabeled: if > 0, an `unlabeled` split of that many images, label -1.
    zca: also write zca.npz.
    seed: seed of the pixel noise and label order.

  Returns:
    The dataset directory.
  """
  dataset_splits = {
      'train': tiny_arrays(n_train, shape, num_classes, seed),
      'test': tiny_arrays(n_test, shape, num_classes, seed + 1),
  }
  if n_unlabeled:
    images, _ = tiny_arrays(n_unlabeled, shape, num_classes, seed + 2)
    dataset_splits['unlabeled'] = (images, np.full(n_unlabeled, -1, np.int64))
  return writer.write_dataset(
      data_dir, name, dataset_splits,
      ['class%d' % c for c in range(num_classes)], 'tiny', zca=zca,
      overwrite=True)


def make_tiny_split(data_dir, name='tiny', seed=1, labels_per_class=2,
                    valid=8, num_classes=None, tag=None, **kwargs):
  """Creates the split NAME.SEED@LABELS-VALID[.TAG] of a prepared dataset.

  Args:
    data_dir: DATA directory holding `name` (e.g. from prepare_tiny_dataset).
    name: prepared dataset name.
    seed: split seed.
    labels_per_class: labeled images per labeled class.
    valid: validation images.
    num_classes: number of labeled classes (default: all the dataset's, or
      len(labeled_classes) when that keyword is given).
    tag: optional tag (required with class filters / extra unlabeled data).
    **kwargs: passed to splits.create_split (labeled_classes,
      unlabeled_classes, extra_unlabeled, overwrite).

  Returns:
    The split name, ready for sources.resolve(data_dir, split_name).
  """
  if num_classes is None:
    if kwargs.get('labeled_classes') is not None:
      num_classes = len(kwargs['labeled_classes'])
    else:
      num_classes = dataset_info.load(os.path.join(data_dir,
                                                   name))['num_classes']
  split_name = splits.format_split_name(name, seed,
                                        labels_per_class * num_classes, valid,
                                        tag)
  splits.create_split(data_dir, split_name, **kwargs)
  return split_name


class TinyDataTestCase(tf.test.TestCase):
  """A TestCase whose tests share one tiny prepared dataset, made once.

  setUpClass writes `prepare_tiny_dataset(n_train=64, n_test=16)` (8x8x3,
  4 classes) into a fresh directory `cls.data_dir` and creates the split
  `cls.split` ('tiny.1@8-8'); tearDownClass removes the directory. A test
  that damages the data copies it first.
  """

  def assertOneLine(self, stderr, code, got_code, *needles):
    """Exactly one `error:` line holding every needle, no traceback, and
    exit code `code`; returns the line."""
    lines = error_lines(stderr)
    self.assertLen(lines, 1, stderr)
    self.assertNotIn('Traceback', stderr)
    self.assertEqual(got_code, code, stderr)
    for needle in needles:
      self.assertIn(needle, lines[0])
    return lines[0]

  @classmethod
  def setUpClass(cls):
    super(TinyDataTestCase, cls).setUpClass()
    cls.data_dir = tempfile.mkdtemp(prefix=cls.__name__ + '_data')
    prepare_tiny_dataset(cls.data_dir, n_train=64, n_test=16)
    cls.split = make_tiny_split(cls.data_dir)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.data_dir, ignore_errors=True)
    super(TinyDataTestCase, cls).tearDownClass()
