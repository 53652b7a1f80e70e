"""Fault injection (issue 6): locks, NaN, full disks, kill -9, corrupt data,
bad flags; each protection tested so that removing it fails a test.
"""

import ast
import fcntl
import glob
import json
import os
import re
import resource
import shutil
import signal
import tempfile
import time

from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import dataset_info
from input_pipeline import inputs
from input_pipeline import preprocessing
from input_pipeline import records
from input_pipeline import sources
from input_pipeline import splits as splits_lib
from input_pipeline.errors import DataError
from launch import export as export_lib
from launch import train as train_lib
from model_fns import registry
from runner import cli
from runner import hooks as hooks_lib
from runner import model_dir as model_dir_lib
from runner import params as params_lib
from tests import data_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_NET = data_fixtures.TINY_NET
BASE_FLAGS = data_fixtures.BASE_FLAGS

if 'model_dir' not in flags.FLAGS:
  train_lib.define_flags()

start_entry = data_fixtures.start_entry
run_entry = data_fixtures.run_entry


def file_size_limit(limit):
  """preexec_fn: writes past `limit` bytes fail with EFBIG (no SIGXFSZ)."""
  def apply():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
  return apply


def wait_for(predicate, proc=None, timeout=120, interval=0.002):
  """Polls until predicate() is true; fails if `proc` ends first."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return True
    if proc is not None and proc.poll() is not None:
      return predicate()
    time.sleep(interval)
  return False


def kill9(proc):
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)


error_lines = data_fixtures.error_lines


def load_all_tensors(checkpoint):
  """Reads every tensor of a checkpoint (fails on a partial one)."""
  reader = tf.train.load_checkpoint(checkpoint)
  shapes = reader.get_variable_to_shape_map()
  for name in shapes:
    reader.get_tensor(name)
  return reader, len(shapes)


def checkpoint_steps(model_dir):
  """Steps of every `model.ckpt-N.index` on disk."""
  return sorted(int(os.path.basename(p)[len('model.ckpt-'):-len('.index')])
                for p in glob.glob(os.path.join(model_dir,
                                                'model.ckpt-*.index')))


def rewrite_shard(directory, entry, shard_index, edit):
  """Rewrites one shard with edit(records) and updates its sha256/bytes."""
  shard = entry['shards'][shard_index]
  path = os.path.join(directory, shard['file'])
  data = list(tf.io.tf_record_iterator(path))
  with tf.io.TFRecordWriter(path) as writer:
    for record in edit(data):
      writer.write(record)
  shard['sha256'] = dataset_info.sha256_file(path)
  shard['bytes'] = os.path.getsize(path)
  return path


def example(image, label, index):
  return records.make_example(image, label, index)


class ReliabilityTestBase(data_fixtures.TinyDataTestCase):
  """Tiny prepared data shared by a class (copied where a test damages it)."""

  def tearDown(self):
    flags.FLAGS.unparse_flags()
    for held in list(model_dir_lib._HELD):  # pylint: disable=protected-access
      model_dir_lib.unlock(held)
    super(ReliabilityTestBase, self).tearDown()

  def copy_data(self):
    data_dir = os.path.join(self.get_temp_dir(), 'data_copy')
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.copytree(self.data_dir, data_dir)
    return data_dir

  def train_args(self, model_dir, *extra, **kwargs):
    return (['--data_dir=' + kwargs.get('data_dir', self.data_dir),
             '--dataset=' + kwargs.get('split', self.split),
             '--model_dir=' + model_dir] + BASE_FLAGS + list(extra))

  def train_in_process(self, model_dir, *extra, **kwargs):
    """Runs train.run in this process; returns the printed lines."""
    lines = []
    argv = ['train'] + self.train_args(model_dir, *extra, **kwargs)
    flags.FLAGS(params_lib.reorder_flagfiles(argv))
    try:
      train_lib.run(flags.FLAGS, printer=lines.append)
    finally:
      flags.FLAGS.unparse_flags()
      model_dir_lib.unlock(model_dir)
    return lines

  def assertCheckpointsLoad(self, model_dir):
    steps = checkpoint_steps(model_dir)
    for step in steps:
      reader, count = load_all_tensors(
          os.path.join(model_dir, 'model.ckpt-%d' % step))
      self.assertEqual(reader.get_tensor('global_step'), step)
      self.assertGreater(count, 3)
    state = tf.train.get_checkpoint_state(model_dir)
    if state is not None:
      for path in state.all_model_checkpoint_paths:
        load_all_tensors(path)
    return steps


class LockTest(ReliabilityTestBase):

  def test_second_process_refused_and_kill_releases(self):
    model_dir = os.path.join(self.get_temp_dir(), 'run')
    first = start_entry('train', *self.train_args(
        model_dir, '--train_steps=100000', '--save_checkpoints_steps=50000'))
    lock_path = os.path.join(model_dir, model_dir_lib.LOCK_FILE)

    def locked_by_first():
      if not os.path.exists(lock_path):
        return False
      with open(lock_path) as f:
        if f.read().strip() != str(first.pid):
          return False
        try:
          fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
          return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False
    try:
      self.assertTrue(wait_for(locked_by_first, first, interval=0.05),
                      first.stderr.read() if first.poll() is not None else '')
      result = run_entry('train', *self.train_args(
          model_dir, '--train_steps=100000', '--save_checkpoints_steps=50000'))
      self.assertOneLine(
          result.stderr, 2, result.returncode, 'error: model_dir %s is in '
          'use by another training process (pid %d)' % (model_dir, first.pid))
    finally:
      kill9(first)
    # The kernel released the dead process's lock: the next run takes it.
    model_dir_lib.lock(model_dir)
    with open(lock_path) as f:
      self.assertEqual(f.read().strip(), str(os.getpid()))
    model_dir_lib.unlock(model_dir)


class NumericalFaultTest(ReliabilityTestBase):

  def test_huge_lr_stops_with_step_and_terms_exit_1(self):
    model_dir = os.path.join(self.get_temp_dir(), 'run')
    result = run_entry('train', *self.train_args(
        model_dir, '--train_steps=10', '--lr=1e30', '--log_every_steps=1'))
    line = self.assertOneLine(result.stderr, 1, result.returncode, 'error: ',
                              'at step ', 'lr 1e+30', 'xe ')
    self.assertRegex(line, r'(loss is (nan|inf) at step \d+|weights are not '
                     r'finite after step \d+) \(')
    self.assertNotIn('step 10:', result.stdout)
    # No checkpoint but the initial one holds non-finite values.
    for step in self.assertCheckpointsLoad(model_dir):
      reader = tf.train.load_checkpoint(
          os.path.join(model_dir, 'model.ckpt-%d' % step))
      for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
          self.assertTrue(np.all(np.isfinite(value)), (step, name))

  def test_nan_after_a_checkpoint_keeps_it(self):
    """Resumes with a stored std that makes the inputs overflow: NaN at step
    6. (The run's normalisation is MODEL_DIR/normalization.json, stored at
    the start; a resumed run keeps it.)"""
    model_dir = os.path.join(self.get_temp_dir(), 'run')
    self.train_in_process(model_dir, '--train_steps=5',
                          '--normalization=standardize')
    before = load_all_tensors(os.path.join(model_dir, 'model.ckpt-5'))[0]
    norm_path = os.path.join(model_dir, preprocessing.NORM_FILE)
    with open(norm_path) as f:
      good = f.read()
    norm = json.loads(good)
    norm['std'] = [1e-45] * 3
    with open(norm_path, 'w') as f:
      json.dump(norm, f)
    with self.assertRaises(cli.RunError) as caught:
      self.train_in_process(model_dir, '--train_steps=10',
                            '--normalization=standardize')
    message = str(caught.exception)
    self.assertRegex(message, r'^loss is nan at step 6 \(lr 0.002, '
                     r'xe nan\); the last good checkpoint is model.ckpt-5$')
    self.assertEqual(checkpoint_steps(model_dir), [0, 5])
    self.assertEqual(tf.train.latest_checkpoint(model_dir),
                     os.path.join(model_dir, 'model.ckpt-5'))
    after = load_all_tensors(os.path.join(model_dir, 'model.ckpt-5'))[0]
    for name in before.get_variable_to_shape_map():
      self.assertAllEqual(before.get_tensor(name), after.get_tensor(name))
    # Resuming with the good normalisation goes on from the kept checkpoint.
    with open(norm_path, 'w') as f:
      f.write(good)
    lines = self.train_in_process(model_dir, '--train_steps=10',
                                  '--normalization=standardize')
    self.assertIn('(step 5)', '\n'.join(lines))
    self.assertEqual(checkpoint_steps(model_dir)[-1], 10)

  def test_overflowed_weights_are_not_saved(self):
    """A finite loss with weights that overflowed in the step is caught at
    the checkpoint step, before the saver writes them."""
    model_dir = self.get_temp_dir()

    def model_fn(features, labels, mode, params):
      del features, labels, mode, params
      step = tf.train.get_or_create_global_step()
      weight = tf.get_variable('w', initializer=1.0)
      with tf.name_scope('train/'):
        loss = tf.identity(weight * 1., name='loss')
        xe = tf.identity(weight * 0., name='xe')
      # The update waits for the fetched values: they are the step's inputs.
      with tf.control_dependencies([loss, xe]):
        train_op = tf.group(tf.assign(weight, weight * 1e20),
                            tf.assign_add(step, 1))
      return tf.estimator.EstimatorSpec(tf.estimator.ModeKeys.TRAIN,
                                        loss=loss, train_op=train_op)

    estimator = tf.estimator.Estimator(model_fn, config=tf.estimator.RunConfig(
        model_dir=model_dir, save_checkpoints_steps=2))
    input_fn = lambda: tf.data.Dataset.from_tensors(({'x': 0.}, 0)).repeat()
    # Step 1: w = 1e20; step 2: w = inf while the step's loss is 1e20.
    with self.assertRaisesRegex(cli.RunError,
                                r'^weights are not finite after step 2 '
                                r'\(loss 1e\+20, xe 0\); the last good '
                                r'checkpoint is model.ckpt-0$'):
      estimator.train(input_fn, max_steps=4,
                      hooks=hooks_lib.guarded_saver(model_dir, 2, 4))
    self.assertEqual(checkpoint_steps(model_dir), [0])


class DiskFullTest(ReliabilityTestBase):

  def test_checkpoint_write_fails_previous_intact(self):
    model_dir = os.path.join(self.get_temp_dir(), 'run')
    self.train_in_process(model_dir, '--train_steps=5')
    before = load_all_tensors(os.path.join(model_dir, 'model.ckpt-5'))[0]
    result = run_entry(
        'train', *self.train_args(model_dir, '--train_steps=10'),
        preexec_fn=file_size_limit(16 * 1024))
    line = self.assertOneLine(result.stderr, 1, result.returncode,
                              'error: cannot write ', model_dir,
                              'File too large')
    self.assertNotRegex(line, r'_temp_|\.tmp[0-9a-f]|tempstate')
    # The newest checkpoint listed is named as intact, and it is: it loads
    # (a save stopped before the state file was replaced is not listed).
    latest = tf.train.latest_checkpoint(model_dir)
    self.assertIn('the last checkpoint, %s, is intact'
                  % os.path.basename(latest), line)
    load_all_tensors(latest)
    after = load_all_tensors(os.path.join(model_dir, 'model.ckpt-5'))[0]
    for name in before.get_variable_to_shape_map():
      self.assertAllEqual(before.get_tensor(name), after.get_tensor(name))
    self.assertEqual(model_dir_lib.remove_partial_writes(model_dir), [])
    with open(os.path.join(model_dir, 'params.json')) as f:
      self.assertEqual(json.load(f)['train_steps'], 10)

  def test_export_write_fails_previous_export_intact(self):
    model_dir = os.path.join(self.get_temp_dir(), 'run')
    self.train_in_process(model_dir, '--train_steps=5')
    export_dir = os.path.join(self.get_temp_dir(), 'export')
    export_lib.export(model_dir, export_dir, verify_images=0,
                      printer=lambda _: None)
    with open(os.path.join(export_dir, 'saved_model.pb'), 'rb') as f:
      saved = f.read()
    result = run_entry(
        'export', '--model_dir=' + model_dir, '--export_dir=' + export_dir,
        '--overwrite', '--verify_images=0',
        preexec_fn=file_size_limit(8 * 1024))
    self.assertOneLine(result.stderr, 1, result.returncode,
                       'error: cannot write ',
                       'File too large', '%s is unchanged' % export_dir)
    with open(os.path.join(export_dir, 'saved_model.pb'), 'rb') as f:
      self.assertEqual(f.read(), saved)
    self.assertEqual(glob.glob(export_dir + '.*'), [])
    images = np.zeros([2, 8, 8, 3], np.uint8)
    got = export_lib.load_saved_model(export_dir)('serving_default', images)
    self.assertEqual(got['probabilities'].shape, (2, 4))


class KillTest(ReliabilityTestBase):

  def test_kill_during_training_then_resume(self):
    model_dir = os.path.join(self.get_temp_dir(), 'run')
    args = self.train_args(model_dir, '--train_steps=20',
                           '--log_every_steps=1')
    proc = start_entry('train', *args)

    def lists_checkpoint_5():
      try:
        with open(os.path.join(model_dir, 'checkpoint')) as f:
          return 'model.ckpt-5"' in f.read()
      except IOError:
        return False
    try:
      self.assertTrue(wait_for(lists_checkpoint_5, proc, interval=0.005))
    finally:
      kill9(proc)
    # What TensorFlow would restore loads; files of a save the kill cut
    # short are not listed in the state file and go at the next start.
    state = tf.train.get_checkpoint_state(model_dir)
    self.assertEqual(state.model_checkpoint_path,
                     os.path.join(model_dir, 'model.ckpt-5'))
    for path in state.all_model_checkpoint_paths:
      load_all_tensors(path)
    with open(os.path.join(model_dir, 'params.json')) as f:
      self.assertEqual(json.load(f)['train_steps'], 20)
    events = glob.glob(os.path.join(model_dir, 'events.out.tfevents.*'))
    self.assertNotEmpty(events)
    for path in events:
      self.assertNotEmpty(read_events(path))
    lines = self.train_in_process(model_dir, '--train_steps=20',
                                  '--log_every_steps=1')
    self.assertIn('resuming from %s (step 5)'
                  % os.path.join(model_dir, 'model.ckpt-5'), '\n'.join(lines))
    final = tf.train.latest_checkpoint(model_dir)
    self.assertEqual(model_dir_lib.checkpoint_step(final), 20)
    self.assertIn('step 20/20', '\n'.join(lines))
    self.assertCheckpointsLoad(model_dir)

  def test_partial_writes_are_removed_at_start(self):
    """What a kill leaves mid-save goes; listed checkpoints stay."""
    model_dir = self.get_temp_dir()
    keep = ['checkpoint', 'graph.pbtxt', 'params.json', 'model.ckpt-5.index',
            'model.ckpt-5.meta', 'model.ckpt-5.data-00000-of-00001',
            'events.out.tfevents.1.host']
    partial = ['model.ckpt-10.index', 'model.ckpt-10.data-00000-of-00001',
               'model.ckpt-10_temp_%s' % ('a' * 32),
               'graph.pbtxt.tmp%s' % ('0f' * 16),
               'model.ckpt-5.meta.tmp%s' % ('1' * 32),
               'model.ckpt-10.data-00000-of-00001.tempstate123']
    for name in keep + partial:
      if name.endswith('_temp_' + 'a' * 32):
        os.mkdir(os.path.join(model_dir, name))
      else:
        with open(os.path.join(model_dir, name), 'w') as f:
          f.write('x')
    with open(os.path.join(model_dir, 'checkpoint'), 'w') as f:
      f.write('model_checkpoint_path: "model.ckpt-5"\n'
              'all_model_checkpoint_paths: "model.ckpt-5"\n')
    self.assertEqual(model_dir_lib.remove_partial_writes(model_dir),
                     sorted(partial))
    self.assertEqual(sorted(os.listdir(model_dir)), sorted(keep))
    os.remove(os.path.join(model_dir, 'checkpoint'))
    self.assertEqual(model_dir_lib.remove_partial_writes(model_dir), [])

  def test_kill_during_export_leaves_no_partial_target(self):
    model_dir = os.path.join(self.get_temp_dir(), 'run')
    self.train_in_process(model_dir, '--train_steps=5')
    export_dir = os.path.join(self.get_temp_dir(), 'export')
    proc = start_entry('export', '--model_dir=' + model_dir,
                       '--export_dir=' + export_dir)
    tmp = '%s.tmp-%d' % (export_dir, proc.pid)
    try:
      self.assertTrue(wait_for(lambda: os.path.exists(tmp), proc))
    finally:
      kill9(proc)
    self.assertFalse(os.path.exists(export_dir))
    self.assertTrue(os.path.exists(tmp))  # The killed run's leftover.
    export_lib.export(model_dir, export_dir, verify_images=0,
                      printer=lambda _: None)
    self.assertFalse(os.path.exists(tmp))
    self.assertTrue(os.path.isfile(os.path.join(export_dir, 'saved_model.pb')))

    # Killed between moving the old export aside and renaming the new one
    # in: the next export puts the old one back first.
    with open(os.path.join(export_dir, 'saved_model.pb'), 'rb') as f:
      saved = f.read()
    aside = '%s.old-%d' % (export_dir, proc.pid)  # proc is dead.
    os.rename(export_dir, aside)
    self.assertEqual(export_lib.recover(export_dir), aside)
    with open(os.path.join(export_dir, 'saved_model.pb'), 'rb') as f:
      self.assertEqual(f.read(), saved)
    self.assertFalse(os.path.exists(aside))

  def test_kill_during_prepare_then_rerun(self):
    base = self.get_temp_dir()
    raw = os.path.join(base, 'raw')
    images, labels = data_fixtures.tiny_arrays(3000, (28, 28, 1), 10)
    data_fixtures.write_idx(raw, 'train', images[..., 0], labels)
    data_fixtures.write_idx(raw, 't10k', images[:500, ..., 0], labels[:500])
    data_dir = os.path.join(base, 'data')
    args = ['--dataset=mnist', '--source_dir=' + raw, '--data_dir=' + data_dir]
    proc = start_entry('prepare_data', *args)
    tmp = os.path.join(data_dir, 'mnist.tmp-%d' % proc.pid)
    try:
      self.assertTrue(wait_for(lambda: os.path.exists(tmp), proc))
    finally:
      kill9(proc)
    self.assertFalse(os.path.exists(os.path.join(data_dir, 'mnist')))
    self.assertEqual(dataset_info.prepared_datasets(data_dir), [])
    result = run_entry('prepare_data', *args)
    self.assertEqual(result.returncode, 0, result.stderr)
    dataset_dir, info = dataset_info.load_named(data_dir, 'mnist')
    dataset_info.verify(dataset_dir, info, deep=True)

    split = 'mnist.1@100-100'
    split_args = ['--data_dir=' + data_dir, '--split=' + split]
    proc = start_entry('prepare_data', *split_args)
    split_tmp = '%s.tmp-%d' % (splits_lib.split_dir(dataset_dir, split),
                               proc.pid)
    try:
      self.assertTrue(wait_for(lambda: os.path.exists(split_tmp), proc))
    finally:
      kill9(proc)
    with self.assertRaisesRegex(DataError, 'never created'):
      sources.resolve(data_dir, split)
    result = run_entry('prepare_data', *split_args)
    self.assertEqual(result.returncode, 0, result.stderr)
    source = sources.resolve(data_dir, split)
    sources.verify(source, deep=True)
    self.assertEqual(source.counts['labeled'], 100)


def read_events(path):
  """Events of a file; a record cut off by kill -9 ends the file."""
  events = []
  try:
    for event in tf.train.summary_iterator(path):
      events.append(event)
  except tf.errors.DataLossError:
    pass
  return events


class CorruptDataTest(ReliabilityTestBase):
  """Damaged shards: one DataError naming the shard and the problem.

  The labeled part is checked record by record before training; a damaged
  shard of another part fails inside TensorFlow during training, and the
  data is then re-checked to name it (SESEMI reads the unlabeled part).
  """

  def part_entry(self, data_dir, part):
    dataset_dir = os.path.join(data_dir, 'tiny')
    split_path = os.path.join(splits_lib.split_dir(dataset_dir, self.split),
                              splits_lib.SPLIT_FILE)
    with open(split_path) as f:
      split = json.load(f)
    shard = os.path.join(os.path.dirname(split_path),
                         split['parts'][part]['shards'][0]['file'])
    return split_path, split, shard

  def damage(self, part, edit):
    """Rewrites a part's shard with edit(records), consistently with
    split.json (sha256 and size), so only reading the records finds it."""
    data_dir = self.copy_data()
    split_path, split, _ = self.part_entry(data_dir, part)
    path = rewrite_shard(os.path.dirname(split_path), split['parts'][part], 0,
                         edit)
    with open(split_path, 'w') as f:
      json.dump(split, f)
    return data_dir, path

  def assertTrainingFails(self, data_dir, pattern, *extra):
    model_dir = tempfile.mkdtemp(dir=self.get_temp_dir())
    with self.assertRaisesRegex(DataError, pattern):
      self.train_in_process(model_dir, '--train_steps=2', *extra,
                            data_dir=data_dir)
    self.assertEqual([s for s in checkpoint_steps(model_dir) if s > 0], [])

  def test_truncated_shard(self):
    data_dir = self.copy_data()
    _, _, path = self.part_entry(data_dir, 'unlabeled')
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) - 7)
    self.assertTrainingFails(data_dir, r'^shard %s has \d+ bytes, expected '
                             r'\d+ \(truncated or replaced\)$'
                             % re.escape(path))

  def test_flipped_byte(self):
    data_dir = self.copy_data()
    paths = {part: self.part_entry(data_dir, part)[2]
             for part in ('labeled', 'unlabeled')}
    for path in paths.values():
      with open(path, 'r+b') as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    # Before training: the labeled part's record CRC.
    self.assertTrainingFails(data_dir, r'^corrupt shard %s: .*corrupted record'
                             % re.escape(paths['labeled']))
    # During training (the labeled shard restored): the unlabeled part's,
    # found by TensorFlow, then named by re-checking the data.
    shutil.copy(self.part_entry(self.data_dir, 'labeled')[2],
                paths['labeled'])
    self.assertTrainingFails(data_dir, r'^corrupt shard %s: .*corrupted record'
                             % re.escape(paths['unlabeled']),
                             '--algorithm=sesemi', '--batch_size=2')
    # --verify_data checks every part before training.
    self.assertTrainingFails(data_dir, r'^corrupt shard %s: '
                             % re.escape(paths['unlabeled']), '--verify_data')

  def test_wrong_image_shape(self):
    def edit(data):
      feature = tf.train.Example.FromString(data[0]).features.feature
      return [example(np.zeros([16, 16, 3], np.uint8),
                      feature['label'].int64_list.value[0],
                      feature['index'].int64_list.value[0])] + data[1:]
    data_dir, path = self.damage('unlabeled', edit)
    self.assertTrainingFails(data_dir, r'^corrupt shard %s: record 0 holds a '
                             r'\[16, 16, 3\] image, expected \[8, 8, 3\]$'
                             % re.escape(path), '--algorithm=sesemi',
                             '--batch_size=2')
    data_dir, path = self.damage('labeled', edit)
    self.assertTrainingFails(data_dir, r'^corrupt shard %s: record 0 holds a '
                             r'\[16, 16, 3\] image' % re.escape(path))

  def test_label_out_of_range(self):
    def edit(data):
      feature = tf.train.Example.FromString(data[3]).features.feature
      image = records.decode_png(feature['image'].bytes_list.value[0])
      return data[:3] + [example(image, 7, feature['index'].int64_list.value[
          0])] + data[4:]
    data_dir, path = self.damage('labeled', edit)
    self.assertTrainingFails(data_dir, r'^corrupt shard %s: record 3 has '
                             r'label 7, outside 0..3$' % re.escape(path))

  def test_description_disagrees_with_shards(self):
    data_dir = self.copy_data()
    info_path = os.path.join(data_dir, 'tiny', dataset_info.INFO_FILE)
    with open(info_path) as f:
      info = json.load(f)
    info['image_shape'] = [16, 16, 3]
    with open(info_path, 'w') as f:
      json.dump(info, f)
    self.assertTrainingFails(data_dir, r'^corrupt shard \S+/labeled-00000-of-'
                             r'\d+.tfrecord: record 0 holds a \[8, 8, 3\] '
                             r'image, expected \[16, 16, 3\]$')
    info['image_shape'] = [8, 8, 3]
    info['splits']['test']['count'] += 1
    with open(info_path, 'w') as f:
      json.dump(info, f)
    self.assertTrainingFails(data_dir, r'^%s: part test has count 17 but its '
                             r'shards hold 16$' % re.escape(info_path))


class BadFlagsTest(ReliabilityTestBase):

  def test_bad_flags_checked_before_any_work(self):
    base = self.get_temp_dir()
    not_a_dir = os.path.join(base, 'file')
    with open(not_a_dir, 'w') as f:
      f.write('x')
    cases = [
        (['--algorithm=nope'], {}, 'unknown algorithm'),
        (['--network=nope'], {}, 'unknown network'),
        ([], {'split': 'nope'}, "unknown dataset 'nope'"),
        ([], {'split': '../tiny'}, 'invalid dataset name'),
        ([], {'split': 'tiny.1@200-8'}, '200 labels, more than the 64'),
        ([], {'split': 'tiny.1@6-8'}, 'cannot be split evenly over the 4'),
        ([], {'split': 'tiny.1@8-60'}, 'validation set of 60 is too large'),
        (['--lr=-1'], {}, '--lr must be positive'),
        (['--lr=0'], {}, '--lr must be positive'),
        (['--batch_size=0'], {}, '--batch_size must be positive'),
        (['--batch_size=-4'], {}, '--batch_size must be positive'),
        (['--iterations_per_loop=3'], {},
         '--iterations_per_loop=3 does not divide --train_steps=10'),
        (['--iterations_per_loop=2', '--save_checkpoints_steps=5'], {},
         '--iterations_per_loop=2 does not divide --save_checkpoints_steps=5'),
        (['--iterations_per_loop=0'], {}, '--iterations_per_loop must be'),
        (['--save_checkpoints_steps=0'], {}, '--save_checkpoints_steps must'),
        (['--eval_batch_size=0'], {}, '--eval_batch_size must be positive'),
        (['--data_dir='], {}, '--data_dir is required'),
        (['--data_dir=' + os.path.join(base, 'nowhere')], {},
         'does not exist'),
        (['--model_dir=' + os.path.join(not_a_dir, 'run')], {},
         'is not writable'),
    ]
    model_dir = os.path.join(base, 'run')
    for extra, kwargs, needle in cases:
      with self.assertRaises((cli.UsageError, ValueError), msg=needle) as e:
        self.train_in_process(model_dir, '--train_steps=10', *extra, **kwargs)
      self.assertIn(needle, str(e.exception))
      self.assertNotIn('\n', str(e.exception))
      self.assertFalse(os.path.exists(os.path.join(model_dir, 'params.json')),
                       needle)
      self.assertEqual(checkpoint_steps(model_dir), [], needle)
    # The same through the command line: exit 2 and one line.
    result = run_entry('train', *self.train_args(
        model_dir, '--train_steps=10', '--iterations_per_loop=3'))
    self.assertOneLine(result.stderr, 2, result.returncode,
                       '--iterations_per_loop=3')
    self.assertFalse(os.path.exists(os.path.join(model_dir, 'params.json')))


class SecurityTest(tf.test.TestCase):

  def snapshot(self, root):
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, dirs, files in os.walk(root) for n in dirs + files)

  def test_names_cannot_leave_the_data_directory(self):
    base = self.get_temp_dir()
    raw = os.path.join(base, 'raw', 'shapes')
    outside = os.path.join(base, 'outside_class')
    data_fixtures.write_image_folder(raw, {
        'a': data_fixtures.random_images(3, (8, 8, 3)),
        'b': data_fixtures.random_images(3, (8, 8, 3), seed=1)})
    data_fixtures.write_image_folder(outside, {
        'c': data_fixtures.random_images(3, (8, 8, 3), seed=2)})
    # A class folder that is a symlink out of the source folder is refused.
    os.symlink(os.path.join(outside, 'c'), os.path.join(raw, 'c'))
    data_dir = os.path.join(base, 'data')
    os.mkdir(data_dir)
    folder = ['--dataset=image_folder', '--source_dir=' + raw,
              '--unlabeled_dir=']
    cases = [
        (folder + ['--name=../evil'], 2, 'invalid dataset name'),
        (folder + ['--name=a/b'], 2, 'invalid dataset name'),
        (['--dataset=tfds:../../evil', '--source_dir=' + raw], 2,
         'invalid dataset name'),
        (['--split=../evil.1@4-0'], 2, 'invalid split name'),
        (folder, 1, 'outside the source directory'),
    ]
    before = [n for n in self.snapshot(base) if not n.startswith('data')]
    for args, expected, needle in cases:
      result = run_entry('prepare_data', '--data_dir=' + data_dir, *args)
      self.assertEqual(result.returncode, expected, result.stderr)
      self.assertIn(needle, ''.join(error_lines(result.stderr)))
      self.assertEqual(os.listdir(data_dir), [])
    os.remove(os.path.join(raw, 'c'))
    result = run_entry('prepare_data', '--data_dir=' + data_dir, *folder)
    self.assertEqual(result.returncode, 0, result.stderr)
    after = [n for n in self.snapshot(base) if not n.startswith('data')]
    self.assertEqual(after, [n for n in before if n != 'raw/shapes/c'])
    self.assertEqual(os.listdir(data_dir), ['shapes'])
    info = dataset_info.load(os.path.join(data_dir, 'shapes'))
    self.assertEqual(info['class_names'], ['a', 'b'])

  def test_no_eval_exec_or_unrestricted_unpickling(self):
    """No eval/exec/compile/__import__, no pickle.load(s) or Unpickler but
    the restricted one, no np.load with allow_pickle=True, anywhere in the
    product's Python code."""
    found, scanned = [], 0
    for package in ('input_pipeline', 'model_fns', 'runner', 'launch'):
      for path in glob.glob(os.path.join(ROOT, package, '**', '*.py'),
                            recursive=True):
        relative = os.path.relpath(path, ROOT)
        with open(path) as f:
          source = f.read()
        scanned += 1
        found.extend('%s:%d %s' % (relative, line, name)
                     for line, name in unsafe_calls(source)
                     if (relative, name) not in SCAN_ALLOWED)
    self.assertGreater(scanned, 30)
    self.assertEqual(found, [])

  def test_scanner_flags_each_forbidden_form(self):
    source = ('eval(x)\nexec(y)\ncompile(s, "f", "exec")\n__import__("os")\n'
              'import pickle\npickle.loads(b)\npickle.load(f)\n'
              'class U(pickle.Unpickler):\n  pass\n'
              'np.load(p, allow_pickle=True)\nnp.load(p, allow_pickle=False)\n'
              'model.eval()\nestimator.evaluate(x)\n')
    self.assertEqual(unsafe_calls(source), [
        (1, 'eval'), (2, 'exec'), (3, 'compile'), (4, '__import__'),
        (6, 'pickle.loads'), (7, 'pickle.load'), (8, 'pickle.Unpickler'),
        (10, 'allow_pickle')])


# The one allowed use: readers' restricted unpickler (resolves numpy only).
SCAN_ALLOWED = {('input_pipeline/readers.py', 'pickle.Unpickler')}
_FORBIDDEN_CALLS = {'eval', 'exec', 'compile', '__import__'}
_FORBIDDEN_ATTRS = {('pickle', 'load'), ('pickle', 'loads'),
                    ('pickle', 'Unpickler'), ('marshal', 'loads'),
                    ('yaml', 'load'), ('dill', 'load'), ('dill', 'loads')}


def unsafe_calls(source):
  """[(line, what)] of code-executing calls in Python source."""
  found = []
  for node in ast.walk(ast.parse(source)):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and
        node.func.id in _FORBIDDEN_CALLS):
      found.append((node.lineno, node.func.id))
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and (node.value.id, node.attr) in _FORBIDDEN_ATTRS):
      found.append((node.lineno, '%s.%s' % (node.value.id, node.attr)))
    if isinstance(node, ast.Call) and any(
        # ast.NameConstant (Python 3.7) and ast.Constant (3.8+) hold .value.
        k.arg == 'allow_pickle' and getattr(k.value, 'value', None) is not False
        for k in node.keywords):
      found.append((node.lineno, 'allow_pickle'))
  return sorted(found)


class ReproducibilityTest(ReliabilityTestBase):

  def first_batches(self, seed, count=3):
    source = sources.resolve(self.data_dir, self.split)
    algorithm = registry.get('sesemi')
    flags.FLAGS(['train', '--algorithm=sesemi', '--batch_size=2'] + TINY_NET)
    try:
      params = params_lib.resolve(flags.FLAGS, {
          'num_classes': 4, 'image_shape': [8, 8, 3], 'dataset': self.split,
          'data_dir': self.data_dir})
    finally:
      flags.FLAGS.unparse_flags()
    params['seed'] = seed
    needs = algorithm.input_needs(params)
    input_fn = inputs.train_input_fn(source, needs, params,
                                     seed=train_lib.input_seed(params))
    with tf.Graph().as_default():
      features, _ = tf.data.make_one_shot_iterator(input_fn()).get_next()
      with tf.Session() as sess:
        return [sess.run(features) for _ in range(count)]

  def test_same_seed_same_first_batches(self):
    """train.py's pipelines: the same --seed gives the same first batches
    (every stream: labeled, unlabeled, proxy); another seed does not. The
    same seed gives the same split: tests/test_splits.py
    (test_same_seed_same_bytes_other_seed_other_draw)."""
    first, again, other = (self.first_batches(1), self.first_batches(1),
                           self.first_batches(2))
    self.assertContainsSubset(['image', 'label', 'proxy_image'], first[0])
    for a, b in zip(first, again):
      self.assertEqual(sorted(a), sorted(b))
      for key in a:
        self.assertAllEqual(a[key], b[key])
    for key in ('image', 'proxy_image'):
      self.assertFalse(all(np.array_equal(a[key], b[key])
                           for a, b in zip(first, other)), key)

if __name__ == '__main__':
  tf.test.main()
