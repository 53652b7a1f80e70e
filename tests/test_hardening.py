"""Issue 16: no command destroys a run or a dataset, racing writers never
replace each other, any legal path works, and hostile input gets one line.
"""

import contextlib
import io
import json
import os
import shutil
import struct

from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import dataset_info
from input_pipeline import fileio
from input_pipeline import readers
from input_pipeline import sources
from input_pipeline import splits as splits_lib
from input_pipeline import writer
from input_pipeline.errors import DataError
from launch import eval as eval_lib
from launch import export as export_lib
from launch import report as report_lib
from launch import train as train_lib
from runner import cli
from runner import model_dir as model_dir_lib
from runner import params as params_lib
from tests import data_fixtures

TINY_NET = data_fixtures.TINY_NET
BASE_FLAGS = data_fixtures.BASE_FLAGS

if 'model_dir' not in flags.FLAGS:
  train_lib.define_flags()

start_entry = data_fixtures.start_entry
error_lines = data_fixtures.error_lines


def snapshot(root):
  """{relative path: bytes} of every file under root."""
  found = {}
  for directory, _, files in os.walk(root):
    for name in files:
      path = os.path.join(directory, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, root)] = f.read()
  return found


class HardeningTestBase(data_fixtures.TinyDataTestCase):

  def tearDown(self):
    flags.FLAGS.unparse_flags()
    for held in list(model_dir_lib._HELD):  # pylint: disable=protected-access
      model_dir_lib.unlock(held)
    super(HardeningTestBase, self).tearDown()

  def copy_data(self, name='data_copy'):
    data_dir = os.path.join(self.get_temp_dir(), name)
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
    printer = kwargs.pop('printer', lines.append)
    argv = ['train'] + self.train_args(model_dir, *extra, **kwargs)
    flags.FLAGS(params_lib.reorder_flagfiles(argv))
    try:
      train_lib.run(flags.FLAGS, printer=printer)
    finally:
      flags.FLAGS.unparse_flags()
      model_dir_lib.unlock(model_dir)
    return lines


class ExportTargetTest(HardeningTestBase):
  """The export never touches its own run, and replaces only an export."""

  def test_export_refuses_its_run_and_non_exports(self):
    work = self.get_temp_dir()
    model_dir = os.path.join(work, 'runs', 'run')
    self.train_in_process(model_dir, '--train_steps=5')
    before = snapshot(model_dir)
    for export_dir, needle in (
        (model_dir, 'is --model_dir'),
        (os.path.join(model_dir, 'export'), 'lies inside --model_dir'),
        (os.path.dirname(model_dir), 'contains --model_dir'),
        (model_dir + '/../run/.', 'is --model_dir')):
      with self.assertRaises(cli.UsageError, msg=export_dir) as e:
        export_lib.export(model_dir, export_dir, overwrite=True,
                          verify_images=0, printer=lambda _: None)
      self.assertIn(needle, str(e.exception))
      self.assertEqual(snapshot(model_dir), before, export_dir)
    # --overwrite replaces an export, not any directory.
    precious = os.path.join(work, 'precious')
    os.makedirs(precious)
    with open(os.path.join(precious, 'notes.txt'), 'w') as f:
      f.write('keep me')
    with self.assertRaises(cli.UsageError) as e:
      export_lib.export(model_dir, precious, overwrite=True, verify_images=0,
                        printer=lambda _: None)
    self.assertIn('is not an export', str(e.exception))
    self.assertEqual(os.listdir(precious), ['notes.txt'])
    # A real export, then its --overwrite, still work.
    export_dir = os.path.join(work, 'export')
    for overwrite in (False, True):
      export_lib.export(model_dir, export_dir, overwrite=overwrite,
                        verify_images=0, printer=lambda _: None)
      self.assertTrue(os.path.isfile(os.path.join(export_dir,
                                                  'saved_model.pb')))
    self.assertEqual(snapshot(model_dir), before)
    # Two exports racing for a new EXPORT_DIR: the one that finds it created
    # meanwhile leaves the other's in place (exit 1).
    racing = os.path.join(work, 'export_race')
    original = export_lib.write_saved_model

    def write_after_a_rival(*args):
      shutil.copytree(export_dir, racing)
      return original(*args)

    export_lib.write_saved_model = write_after_a_rival
    try:
      with self.assertRaises(cli.RunError) as e:
        export_lib.export(model_dir, racing, verify_images=0,
                          printer=lambda _: None)
    finally:
      export_lib.write_saved_model = original
    self.assertIn('another export wrote it meanwhile', str(e.exception))
    self.assertEqual(snapshot(racing), snapshot(export_dir))
    self.assertEqual([n for n in os.listdir(work) if '.tmp-' in n or
                      '.old-' in n], [])


class DatasetOverwriteTest(HardeningTestBase):
  """prepare --overwrite keeps valid splits and never pulls data from under
  a reader; creating a dataset or split is exclusive."""

  def test_identical_data_keeps_splits(self):
    data_dir = self.copy_data()
    split_dir = splits_lib.split_dir(os.path.join(data_dir, 'tiny'),
                                     self.split)
    before = snapshot(split_dir)
    data_fixtures.prepare_tiny_dataset(data_dir, n_train=64, n_test=16)
    self.assertEqual(snapshot(split_dir), before)
    source = sources.resolve(data_dir, self.split)
    sources.verify(source, deep=True)

  def test_changed_data_refuses_naming_splits_unless_dropped(self):
    data_dir = self.copy_data()
    dataset_dir = os.path.join(data_dir, 'tiny')
    before = snapshot(dataset_dir)
    with self.assertRaises(DataError) as e:
      data_fixtures.prepare_tiny_dataset(data_dir, n_train=64, n_test=16,
                                         seed=7)
    self.assertIn(self.split, str(e.exception))
    self.assertIn('--drop_splits', str(e.exception))
    self.assertEqual(snapshot(dataset_dir), before)
    self.assertEqual([n for n in os.listdir(data_dir) if '.tmp-' in n or
                      '.old-' in n], [])
    splits = {'train': data_fixtures.tiny_arrays(64, seed=7),
              'test': data_fixtures.tiny_arrays(16, seed=8)}
    writer.write_dataset(data_dir, 'tiny', splits,
                         ['class%d' % c for c in range(4)], 'tiny',
                         overwrite=True, drop_splits=True)
    self.assertEqual(writer.existing_splits(dataset_dir), [])

  def test_overwrite_replaces_only_a_dataset(self):
    data_dir = os.path.join(self.get_temp_dir(), 'data_other')
    other = os.path.join(data_dir, 'tiny')
    os.makedirs(other)
    with open(os.path.join(other, 'thesis.tex'), 'w') as f:
      f.write('years of work')
    with self.assertRaises(DataError) as e:
      data_fixtures.prepare_tiny_dataset(data_dir)
    self.assertIn('is not a dataset', str(e.exception))
    self.assertEqual(os.listdir(other), ['thesis.tex'])

  def test_reader_blocks_overwrite_and_writer_blocks_reader(self):
    data_dir = self.copy_data()
    with sources.reading(data_dir, self.split):
      with self.assertRaises(DataError) as e:
        data_fixtures.prepare_tiny_dataset(data_dir, seed=7)
      self.assertIn('in use by another process', str(e.exception))
      with self.assertRaises(DataError) as e:
        data_fixtures.make_tiny_split(data_dir, overwrite=True)
      self.assertIn('in use by another process', str(e.exception))
    with fileio.lock(os.path.join(data_dir, 'tiny'), True, 'dataset'):
      with self.assertRaises(DataError) as e:
        with sources.reading(data_dir, self.split):
          pass
      self.assertIn('being written by another process', str(e.exception))
      # Drawing a split reads the dataset: refused too.
      with self.assertRaises(DataError):
        data_fixtures.make_tiny_split(data_dir, seed=2)
    # Free again: both work.
    data_fixtures.prepare_tiny_dataset(data_dir, n_train=64, n_test=16)
    data_fixtures.make_tiny_split(data_dir, seed=2)

  def test_training_holds_the_shared_lock(self):
    data_dir = self.copy_data()
    dataset_dir = os.path.join(data_dir, 'tiny')
    refusals = []

    def printer(unused_line):
      try:
        fileio.lock(dataset_dir, True, 'dataset').release()
      except DataError as e:
        refusals.append(str(e))

    self.train_in_process(os.path.join(self.get_temp_dir(), 'run_lock'),
                          '--train_steps=5', data_dir=data_dir,
                          printer=printer)
    self.assertNotEmpty(refusals)
    self.assertTrue(all('in use' in r for r in refusals))
    # Released when training ends.
    fileio.lock(dataset_dir, True, 'dataset').release()

  def test_creating_is_exclusive(self):
    """A writer that finds its target created meanwhile does not replace it."""
    data_dir = os.path.join(self.get_temp_dir(), 'data_race')
    target = os.path.join(data_dir, 'tiny')
    original = dataset_info.write_json
    other = []

    def write_json_after_a_rival(path, obj):
      # A rival process completes the same dataset while this one is still
      # writing (its rename into place, simulated by a copy).
      if not other:
        shutil.copytree(os.path.join(self.data_dir, 'tiny'), target)
        other.append(snapshot(target))
      original(path, obj)

    dataset_info.write_json = write_json_after_a_rival
    try:
      with self.assertRaises(DataError) as e:
        writer.write_dataset(
            data_dir, 'tiny', {'train': data_fixtures.tiny_arrays(64)},
            ['class%d' % c for c in range(4)], 'tiny')
    finally:
      dataset_info.write_json = original
    self.assertIn(target, str(e.exception))
    self.assertIn('another process wrote it meanwhile', str(e.exception))
    self.assertEqual(snapshot(target), other[0])
    self.assertEqual(os.listdir(data_dir), ['tiny'])

  def test_two_concurrent_prepares_one_wins(self):
    source = os.path.join(self.get_temp_dir(), 'folder')
    images, labels = data_fixtures.tiny_arrays(40)
    data_fixtures.write_image_folder(
        source, {'c%d' % c: images[labels == c] for c in range(4)})
    data_dir = os.path.join(self.get_temp_dir(), 'data_two')
    args = ['--dataset=image_folder', '--source_dir=' + source,
            '--data_dir=' + data_dir, '--name=race']
    procs = [start_entry('prepare_data', *args) for _ in range(2)]
    results = [(p.wait(timeout=600),) + p.communicate() for p in procs]
    codes = sorted(r[0] for r in results)
    self.assertEqual(codes, [0, 1], results)
    loser = [r for r in results if r[0] == 1][0]
    self.assertOneLine(loser[2], 1, 1, os.path.join(data_dir, 'race'))
    dataset_info.verify(os.path.join(data_dir, 'race'),
                        dataset_info.load(os.path.join(data_dir, 'race')),
                        deep=True)
    self.assertEqual(os.listdir(data_dir), ['race'])


class DatasetSanityTest(HardeningTestBase):
  """Datasets that would prepare but make no sense, or could not train."""

  def folder(self, name, class_images):
    root = os.path.join(self.get_temp_dir(), name)
    shutil.rmtree(root, ignore_errors=True)
    data_fixtures.write_image_folder(root, class_images)
    return root

  def test_fewer_than_two_classes_refused(self):
    images, _ = data_fixtures.tiny_arrays(8)
    root = self.folder('one_class', {'only': images})
    with self.assertRaisesRegex(DataError, 'at least 2 classes'):
      readers.read('image_folder', root)
    with self.assertRaisesRegex(DataError, 'at least 2 classes'):
      writer.write_dataset(os.path.join(self.get_temp_dir(), 'd1'), 'one',
                           {'train': (images, np.zeros(8, int))}, ['only'],
                           'test')

  def test_empty_class_refused(self):
    images, _ = data_fixtures.tiny_arrays(8)
    root = self.folder('empty_class', {'a': images[:4], 'b': images[4:]})
    os.makedirs(os.path.join(root, 'c'))
    with self.assertRaisesRegex(DataError, 'class folder .*/c has no'):
      readers.read('image_folder', root)
    # Any reader: a class without train images is refused by the writer.
    with self.assertRaisesRegex(DataError, r'class 2 \(c\) has no train'):
      writer.write_dataset(os.path.join(self.get_temp_dir(), 'd2'), 'empty',
                           {'train': (images, np.arange(8) % 2)},
                           ['a', 'b', 'c'], 'test')

  def test_mixed_channels_converted_and_train_with_fixmatch(self):
    rgb, labels = data_fixtures.tiny_arrays(24, (8, 8, 3))
    grey = rgb[..., :1]
    rgba = np.concatenate([rgb, np.full(rgb.shape[:3] + (1,), 128,
                                        np.uint8)], -1)
    root = self.folder('mixed', {
        'a': rgba[labels == 0], 'b': grey[labels == 1], 'c': rgb[labels == 2],
        'd': rgba[labels == 3]})
    raw = readers.read('image_folder', root)
    self.assertEqual(raw.splits['train'][0].shape[-1], 3)
    # RGBA loses its alpha, grey is repeated.
    first_a = raw.splits['train'][0][0]
    self.assertAllEqual(first_a, rgb[labels == 0][0])
    grey_raw = readers.read('image_folder', root, channels=1)
    self.assertEqual(grey_raw.splits['train'][0].shape[-1], 1)
    # An all-RGBA folder becomes RGB too.
    rgba_only = readers.read('image_folder', self.folder(
        'rgba', {'a': rgba[:6], 'b': rgba[6:12]}))
    self.assertEqual(rgba_only.splits['train'][0].shape[-1], 3)
    data_dir = os.path.join(self.get_temp_dir(), 'data_mixed')
    writer.write_dataset(data_dir, 'mixed', raw.splits, raw.class_names,
                         raw.source)
    split = data_fixtures.make_tiny_split(data_dir, name='mixed',
                                          labels_per_class=1, valid=4)
    # FixMatch's RandAugment failed with an internal shape error on RGBA.
    model_dir = os.path.join(self.get_temp_dir(), 'run_fixmatch')
    lines = self.train_in_process(
        model_dir, '--train_steps=2', '--save_checkpoints_steps=2',
        '--algorithm=fixmatch', '--batch_size=2', '--uratio=1',
        data_dir=data_dir, split=split)
    self.assertTrue(any(l.startswith('step 2:') for l in lines), lines)


class CommandLineTest(HardeningTestBase):
  """The same protections through the command line: exit codes, one line."""

  def test_exit_codes(self):
    work = self.get_temp_dir()
    model_dir = os.path.join(work, 'cli_run')
    self.train_in_process(model_dir, '--train_steps=5')
    fresh = os.path.join(work, 'cli_fresh')
    procs = {
        'nan': start_entry('train', *self.train_args(fresh, '--lr=nan',
                                                     '--train_steps=5')),
        'memory': start_entry('train', *self.train_args(
            fresh, '--batch_size=100000000', '--train_steps=5')),
        'export_onto_run': start_entry(
            'export', '--model_dir=' + model_dir, '--export_dir=' + model_dir,
            '--overwrite'),
        'name': start_entry(
            'prepare_data', '--dataset=image_folder', '--source_dir=' + work,
            '--data_dir=' + os.path.join(work, 'cli_data'), '--name=tiny\n'),
    }
    results = {k: (p.wait(timeout=600),) + p.communicate()
               for k, p in procs.items()}
    for key, needle in (('nan', '--lr=nan'),
                        ('memory', '--batch_size=100000000'),
                        ('export_onto_run', '--export_dir'),
                        ('name', 'invalid dataset name')):
      code, _, stderr = results[key]
      self.assertOneLine(stderr, 2, code, needle)
    self.assertFalse(os.path.exists(fresh))
    self.assertFalse(os.path.exists(os.path.join(work, 'cli_data')))
    self.assertTrue(os.path.isfile(os.path.join(model_dir, 'params.json')))


class NameTest(tf.test.TestCase):
  """Dataset and split names: ASCII [a-z0-9_] plus the split syntax."""

  def test_names(self):
    for good in ('tiny', 'fashion_mnist', 'cifar10', '0a_b'):
      writer.check_name(good)
    for bad in ('tiny\n', 'Tiny', 'ti-ny', 't\u00efny', 'tiny ', '_x', '',
                'a.b', '../x', '\u0661'):
      with self.assertRaisesRegex(ValueError, 'invalid dataset name', msg=bad):
        writer.check_name(bad)
      self.assertFalse(sources.writer.NAME_RE.match(bad))
    self.assertEqual(splits_lib.parse_split_name('tiny.1@8-8.mis_50'),
                     ('tiny', 1, 8, 8, 'mis_50'))
    # Non-ASCII digits would be a second name for tiny.1@8-8.
    for bad in ('tiny.1@8-8\n', 'tiny.\u0661@8-8', 'tiny.1@\uff18-8',
                'tiny.1@8-8.Tag', 'tiny.1@8-8.t-g', 'Tiny.1@8-8',
                'tiny.1@8-8.\n'):
      with self.assertRaisesRegex(ValueError, 'invalid split name', msg=bad):
        splits_lib.parse_split_name(bad)
      self.assertFalse(splits_lib.SPLIT_RE.match(bad))


class StartTest(HardeningTestBase):
  """Memory-shaped flags, NaN flags, and starts that fail leave nothing that
  blocks the retry."""

  def test_batch_that_cannot_fit_is_refused_before_work(self):
    model_dir = os.path.join(self.get_temp_dir(), 'run_huge')
    for flag, needle in (('--batch_size=10000000', '--batch_size=10000000'),
                         ('--eval_batch_size=100000000',
                          '--eval_batch_size=100000000')):
      with self.assertRaises(cli.UsageError) as e:
        self.train_in_process(model_dir, '--train_steps=5', flag)
      self.assertIn(needle, str(e.exception))
      self.assertIn('GB', str(e.exception))
      self.assertFalse(os.path.exists(model_dir))
    with self.assertRaises(cli.UsageError) as e:
      params_lib.check_batch_memory('batch_size', 100, 100, [32, 32, 3],
                                    memory=2 ** 20)
    # A batch larger than the labeled set (8 images) repeats it: fine.
    lines = self.train_in_process(model_dir, '--train_steps=2',
                                  '--batch_size=32',
                                  '--save_checkpoints_steps=2')
    self.assertTrue(any(l.startswith('step 2:') for l in lines), lines)

  def test_non_finite_flags_refused(self):
    model_dir = os.path.join(self.get_temp_dir(), 'run_nan')
    for flag in ('--lr=nan', '--weight_decay=inf', '--ema_decay=-inf'):
      with self.assertRaises(cli.UsageError) as e:
        self.train_in_process(model_dir, '--train_steps=5', flag)
      self.assertIn(flag.split('=')[0], str(e.exception))
      self.assertIn('finite', str(e.exception))
      self.assertFalse(os.path.exists(model_dir))

  def test_non_finite_flags_refused_when_parsed(self):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
      with self.assertRaises(SystemExit) as e:
        cli._parse_flags(['train', '--lr=nan'])  # pylint: disable=protected-access
    flags.FLAGS.unparse_flags()
    self.assertEqual(e.exception.code, 2)
    self.assertEqual(err.getvalue(),
                     'error: --lr=nan: a flag value must be a finite '
                     'number\n')

  def test_failed_start_leaves_nothing_that_blocks_a_retry(self):
    work = self.get_temp_dir()
    # A flag error creates no model directory.
    model_dir = os.path.join(work, 'run_retry')
    with self.assertRaises(cli.UsageError):
      self.train_in_process(model_dir, '--train_steps=5', '--lr=-1')
    self.assertFalse(os.path.exists(model_dir))
    # A start that fails once the directory exists (damaged data) removes
    # the directory it created.
    data_dir = self.copy_data()
    split = sources.resolve(data_dir, self.split)
    path = split.files['labeled'][0]
    with open(path, 'r+b') as f:
      f.seek(os.path.getsize(path) // 2)
      byte = f.read(1)
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte[0] ^ 0xFF]))
    with self.assertRaises(DataError):
      self.train_in_process(model_dir, '--train_steps=5', data_dir=data_dir)
    self.assertFalse(os.path.exists(model_dir))
    # params.json of a start that saved no checkpoint does not block the
    # corrected retry.
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, 'params.json'), 'w') as f:
      json.dump({'algorithm': 'supervised', 'batch_size': 1000}, f)
    self.train_in_process(model_dir, '--train_steps=5')
    with open(os.path.join(model_dir, 'params.json')) as f:
      self.assertEqual(json.load(f)['batch_size'], 4)
    # Once a checkpoint exists, different params are still refused.
    with self.assertRaises(cli.UsageError) as e:
      self.train_in_process(model_dir, '--train_steps=10', '--batch_size=8')
    self.assertIn('cannot resume', str(e.exception))

  def test_output_flags_named_and_report_all_or_nothing(self):
    work = self.get_temp_dir()
    model_dir = os.path.join(work, 'run_out')
    self.train_in_process(model_dir, '--train_steps=5')
    a_file = os.path.join(work, 'a_file')
    with open(a_file, 'w') as f:
      f.write('x')
    with self.assertRaises(cli.UsageError) as e:
      export_lib.export(model_dir, os.path.join(a_file, 'export'),
                        verify_images=0, printer=lambda _: None)
    self.assertIn('--export_dir', str(e.exception))
    self.assertNotIn('--model_dir', str(e.exception))
    with self.assertRaises(cli.UsageError) as e:
      report_lib.report([model_dir], os.path.join(a_file, 'report'),
                        printer=lambda _: None)
    self.assertIn('--output_dir', str(e.exception))
    self.assertNotIn('--model_dir', str(e.exception))
    # prepare_data checks --data_dir before reading the raw files.
    with self.assertRaises(DataError) as e:
      writer.check_writable(os.path.join(a_file, 'data'), '--data_dir')
    self.assertIn('cannot write to --data_dir', str(e.exception))
    # A report that fails while writing leaves no plots without report.md.
    output_dir = os.path.join(work, 'report')
    original = report_lib.markdown

    def failing_markdown(*unused):
      raise RuntimeError('simulated failure')

    report_lib.markdown = failing_markdown
    try:
      with self.assertRaises(RuntimeError):
        report_lib.report([model_dir], output_dir, printer=lambda _: None)
    finally:
      report_lib.markdown = original
    self.assertFalse(os.path.exists(output_dir))
    # A failure on the data (here: a data_dir without the dataset) comes
    # before anything is written.
    with self.assertRaises((DataError, cli.UsageError)):
      report_lib.report([model_dir], output_dir, printer=lambda _: None,
                        data_dir=os.path.join(work, 'no_data'))
    self.assertFalse(os.path.exists(output_dir))


def _variants_of_file(data):
  """Malformed versions of a file's bytes: truncations, zero size, a flipped
  header, garbage."""
  yield 'empty', b''
  for cut in (1, 7, 15, len(data) // 2, len(data) - 1):
    if 0 < cut < len(data):
      yield 'truncated_%d' % cut, data[:cut]
  yield 'flipped_head', bytes([data[0] ^ 0xFF]) + data[1:]
  yield 'garbage', b'\x00\xff' * 64
  yield 'appended', data + b'\x01\x02\x03'


def _idx_header(magic, *dims):
  return struct.pack('>I' + 'I' * len(dims), magic, *dims)


class ReaderFuzzTest(HardeningTestBase):
  """Malformed raw files of every reader: one DataError (exit 1) each, never
  another exception (a traceback, or exit 2 for a data problem), and no
  dataset directory left behind.

  Each case runs what prepare_data runs (readers.read, then the writer) in
  this process; cli.run turns DataError into one `error:` line and exit 1.
  """

  def prepare(self, kind, source_dir, **kwargs):
    """(exit code prepare_data would give, message)."""
    data_dir = os.path.join(self.get_temp_dir(), 'fuzz_data')
    shutil.rmtree(data_dir, ignore_errors=True)
    try:
      raw = readers.read(kind, source_dir, **kwargs)
      writer.write_dataset(data_dir, 'fuzz', raw.splits, raw.class_names,
                           raw.source)
      code, message = 0, None
    except DataError as e:
      code, message = 1, str(e)
    except (cli.UsageError, ValueError) as e:
      code, message = 2, str(e)
    if code:
      left = os.listdir(data_dir) if os.path.isdir(data_dir) else []
      self.assertEqual(left, [], (kind, source_dir, message))
    return code, message

  def fuzz_file(self, kind, make_source, relative, variants=None,
                tolerated=()):
    """Replaces `relative` in a fresh valid source by each variant.

    Each must be refused with a DataError, except the `tolerated` ones,
    which the format lets read fine (trailing bytes after a pickle's STOP,
    a PNG cut inside its final IEND chunk): those may also succeed.
    """
    results = {}
    for name, data in variants or _variants_of_file(
        open(os.path.join(make_source('probe'), relative), 'rb').read()):
      root = make_source(name)
      with open(os.path.join(root, relative), 'wb') as f:
        f.write(data)
      code, message = self.prepare(kind, root)
      results[name] = code
      self.assertIn(code, (0, 1) if name in tolerated else (1,),
                    '%s %s %s: exit %d, %s' % (kind, relative, name, code,
                                               message))
    return results

  def source(self, prefix, write):
    def make(name):
      root = os.path.join(self.get_temp_dir(), prefix + '_' + name)
      shutil.rmtree(root, ignore_errors=True)
      write(root)
      return root
    return make

  def test_idx(self):
    images, labels = data_fixtures.tiny_arrays(20, (6, 6, 1), 10)

    def write(root):
      data_fixtures.write_idx(root, 'train', images, labels, gzipped=False)
      data_fixtures.write_idx(root, 't10k', images[:10], labels[:10],
                              gzipped=False)

    make = self.source('idx', write)
    self.assertEqual(self.prepare('fashion_mnist', make('ok'))[0], 0)
    body = images.tobytes()
    headers = [
        ('wrong_magic', _idx_header(2049, 20, 6, 6) + body),
        ('zero_images', _idx_header(2051, 0, 6, 6)),
        ('zero_rows', _idx_header(2051, 20, 0, 6)),
        ('zero_all', _idx_header(2051, 0, 0, 0)),
        ('huge_header', _idx_header(2051, 2 ** 32 - 1, 2 ** 32 - 1,
                                    2 ** 32 - 1) + body),
        ('huge_count', _idx_header(2051, 2 ** 31, 6, 6) + body),
    ]
    self.fuzz_file('fashion_mnist', make, 'train-images-idx3-ubyte')
    self.fuzz_file('fashion_mnist', make, 'train-images-idx3-ubyte', headers)
    self.fuzz_file('fashion_mnist', make, 'train-labels-idx1-ubyte')
    self.fuzz_file('fashion_mnist', make, 'train-labels-idx1-ubyte', [
        ('wrong_magic', _idx_header(2051, 20) + labels.astype(np.uint8)
         .tobytes()),
        ('label_out_of_range', _idx_header(2049, 20) + bytes([200] * 20)),
        ('huge_count', _idx_header(2049, 2 ** 32 - 1))])

    # Gzipped: a corrupt stream.
    def write_gz(root):
      data_fixtures.write_idx(root, 'train', images, labels)
      data_fixtures.write_idx(root, 't10k', images[:10], labels[:10])

    self.fuzz_file('fashion_mnist', self.source('idxgz', write_gz),
                   'train-images-idx3-ubyte.gz')

  def test_cifar_pickles(self):
    make = self.source('cifar_py', lambda root: data_fixtures
                       .write_cifar10_python(root, n_per_batch=2))
    self.assertEqual(self.prepare('cifar10', make('ok'))[0], 0)
    batch = os.path.join('cifar-10-batches-py', 'data_batch_1')
    meta = os.path.join('cifar-10-batches-py', 'batches.meta')
    self.fuzz_file('cifar10', make, batch, tolerated=('appended',))
    self.fuzz_file('cifar10', make, meta, tolerated=('appended',))
    pixels = np.zeros((2, 3072), np.uint8)

    def pickled(obj):
      path = os.path.join(self.get_temp_dir(), 'pickled')
      data_fixtures.py2_pickle(path, obj)
      with open(path, 'rb') as f:
        return f.read()

    self.fuzz_file('cifar10', make, batch, [
        ('not_a_dict', pickled([1, 2, 3])),
        ('no_data', pickled({b'labels': [0, 1]})),
        ('no_labels', pickled({b'data': pixels})),
        ('int_keys', pickled({1: pixels, 2: [0, 1]})),
        ('data_list', pickled({b'data': [[0] * 3072] * 2, b'labels': [0, 1]})),
        ('data_float', pickled({b'data': pixels.astype(np.float32),
                                b'labels': [0, 1]})),
        ('data_wrong_width', pickled({b'data': pixels[:, :100],
                                      b'labels': [0, 1]})),
        ('data_1d', pickled({b'data': pixels.reshape(-1), b'labels': [0, 1]})),
        ('data_none', pickled({b'data': None, b'labels': [0, 1]})),
        ('labels_short', pickled({b'data': pixels, b'labels': [0]})),
        ('labels_text', pickled({b'data': pixels, b'labels': b'ab'})),
        ('labels_none', pickled({b'data': pixels, b'labels': None})),
        ('labels_strings', pickled({b'data': pixels,
                                    b'labels': ['cat', 'dog']})),
        ('labels_huge', pickled({b'data': pixels, b'labels': [2 ** 70, 0]})),
        ('labels_out_of_range', pickled({b'data': pixels,
                                         b'labels': [10, -3]})),
        ('labels_nested', pickled({b'data': pixels, b'labels': [[0, 1]]})),
        ('zero_images', pickled({b'data': np.zeros((0, 3072), np.uint8),
                                 b'labels': []})),
    ])
    self.fuzz_file('cifar10', make, meta, [
        ('not_a_dict', pickled('names')),
        ('no_names', pickled({b'other': 1})),
        ('names_int', pickled({b'label_names': 7})),
        ('names_none', pickled({b'label_names': None})),
        ('names_empty', pickled({b'label_names': []})),
        ('one_name', pickled({b'label_names': [b'only']})),
    ])
    # CIFAR-100 and its meta keys.
    make100 = self.source('cifar100', lambda root: data_fixtures
                          .write_cifar100_python(root, n_train=20, n_test=4))
    for name in ('train', 'meta'):
      self.fuzz_file('cifar100', make100, os.path.join('cifar-100-python',
                                                       name),
                     tolerated=('appended',))

  def test_cifar_binary(self):
    make = self.source('cifar_bin', lambda root: data_fixtures
                       .write_cifar10_binary(root, n_per_batch=8))
    self.assertEqual(self.prepare('cifar10', make('ok'))[0], 0)
    batch = os.path.join('cifar-10-batches-bin', 'data_batch_1.bin')
    # Cut at a record boundary, a binary batch is a smaller valid batch.
    self.fuzz_file('cifar10', make, batch,
                   tolerated=('truncated_%d' % (8 * 3073 // 2),))
    self.fuzz_file('cifar10', make, batch, [
        ('label_out_of_range', bytes([77]) + bytes(3072))])
    meta = os.path.join('cifar-10-batches-bin', 'batches.meta.txt')
    self.fuzz_file('cifar10', make, meta, [
        ('empty', b''), ('one_name', b'only\n'),
        ('not_utf8', b'\xff\xfe\x00name\n' * 10)])

  def test_svhn_mat(self):
    make = self.source('svhn', lambda root: data_fixtures.write_svhn(
        root, n_train=80, n_test=4))
    self.assertEqual(self.prepare('svhn', make('ok'))[0], 0)
    # The first bytes are the .mat's descriptive text header.
    self.fuzz_file('svhn', make, 'train_32x32.mat',
                   tolerated=('flipped_head', 'appended'))
    import scipy.io  # pylint: disable=g-import-not-at-top

    def mat(**variables):
      path = os.path.join(self.get_temp_dir(), 'variables.mat')
      scipy.io.savemat(path, variables)
      with open(path, 'rb') as f:
        return f.read()

    x = np.zeros((32, 32, 3, 20), np.uint8)
    y = (np.arange(20) % 10 + 1).astype(np.uint8).reshape(-1, 1)
    self.fuzz_file('svhn', make, 'train_32x32.mat', [
        ('no_x', mat(y=y)), ('no_y', mat(X=x)),
        ('x_float', mat(X=x.astype(np.float32), y=y)),
        ('x_3d', mat(X=x[..., 0], y=y)),
        ('x_zero', mat(X=np.zeros((32, 32, 3, 0), np.uint8),
                       y=np.zeros((0, 1), np.uint8))),
        ('x_zero_size', mat(X=np.zeros((0, 32, 3, 20), np.uint8), y=y)),
        ('y_short', mat(X=x, y=y[:5])),
        ('y_out_of_range', mat(X=x, y=y + 10)),
        ('y_text', mat(X=x, y='abc')),
        ('y_cell', mat(X=x, y=np.array([['a'], ['b']], dtype=object))),
        ('x_cell', mat(X=np.array([[1, 'a']], dtype=object), y=y)),
    ])

  def test_image_folder(self):
    images, labels = data_fixtures.tiny_arrays(12, (6, 6, 3), 2)
    make = self.source('folder', lambda root: data_fixtures.write_image_folder(
        root, {'a': images[labels == 0], 'b': images[labels == 1]}))
    self.assertEqual(self.prepare('image_folder', make('ok'))[0], 0)
    png = os.path.join('a', '000.png')
    size = os.path.getsize(os.path.join(make('probe'), png))
    self.fuzz_file('image_folder', make, png,
                   tolerated=('appended', 'truncated_%d' % (size - 1)))
    huge = (b'\x89PNG\r\n\x1a\n' + struct.pack('>I', 13) + b'IHDR' +
            struct.pack('>IIBBBBB', 2 ** 31 - 1, 2 ** 31 - 1, 8, 2, 0, 0, 0) +
            b'\x00' * 4)
    zero = (b'\x89PNG\r\n\x1a\n' + struct.pack('>I', 13) + b'IHDR' +
            struct.pack('>IIBBBBB', 0, 0, 8, 2, 0, 0, 0) + b'\x00' * 4)
    self.fuzz_file('image_folder', make, png, [
        ('huge_header', huge), ('zero_size', zero),
        ('jpeg_named_png', b'\xff\xd8\xff\xe0' + b'\x00' * 20)])

  def test_tfds_directory(self):
    tfds_dir = os.path.join(self.get_temp_dir(), 'tfds_ok')
    with readers.tfds_offline():
      _fuzz_tfds_builder()(data_dir=tfds_dir).download_and_prepare()
    name = _fuzz_tfds_builder().name
    self.assertEqual(self.prepare('tfds:' + name, tfds_dir)[0], 0)
    version_dir = os.path.join(tfds_dir, name, '1.0.0')
    files = sorted(os.listdir(version_dir))
    for relative in files:
      def make(variant, relative=relative):
        root = os.path.join(self.get_temp_dir(), 'tfds_' + variant)
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(tfds_dir, root)
        return root
      rel = os.path.join(name, '1.0.0', relative)
      data = open(os.path.join(version_dir, relative), 'rb').read()
      variants = list(_variants_of_file(data))
      if relative.endswith('.json'):
        variants += [('wrong_type', b'[1, 2, 3]'), ('null', b'null'),
                     ('empty_object', b'{}')]
      for variant_name, blob in variants:
        root = make(variant_name)
        with open(os.path.join(root, rel), 'wb') as f:
          f.write(blob)
        code, message = self.prepare('tfds:' + name, root)
        # A damaged file TFDS does not need may still read fine (0); a
        # damaged one it needs is a DataError (1); never anything else.
        self.assertIn(code, (0, 1), '%s %s: exit %d, %s'
                      % (relative, variant_name, code, message))
    # Missing files.
    for relative in files:
      root = os.path.join(self.get_temp_dir(), 'tfds_missing')
      shutil.rmtree(root, ignore_errors=True)
      shutil.copytree(tfds_dir, root)
      os.remove(os.path.join(root, name, '1.0.0', relative))
      code, message = self.prepare('tfds:' + name, root)
      self.assertIn(code, (0, 1), '%s missing: exit %d, %s'
                    % (relative, code, message))


class ModelDirFuzzTest(HardeningTestBase):
  """Damaged model-directory states, for every entry point that reads one
  (train resuming, eval, export, report): a one-line error with exit 1 or 2,
  never another exception (a traceback)."""

  @classmethod
  def setUpClass(cls):
    super(ModelDirFuzzTest, cls).setUpClass()
    # A dataset with zca.npz, and a run that normalises with it.
    data_fixtures.prepare_tiny_dataset(cls.data_dir, name='tinyzca', zca=True)
    cls.zca_split = data_fixtures.make_tiny_split(cls.data_dir, name='tinyzca')

  def outcome(self, fn):
    try:
      fn()
      return 0, None
    except (DataError, cli.RunError) as e:
      return 1, str(e)
    except (cli.UsageError, ValueError, flags.Error) as e:
      return 2, str(e)

  def entry_points(self, model_dir, checkpoint=None):
    work = self.get_temp_dir()
    quiet = lambda _: None

    def train():
      self.train_in_process(model_dir, '--train_steps=10',
                            '--normalization=gcn_zca', split=self.zca_split)

    def evaluate():
      eval_lib.run(model_dir, checkpoint=checkpoint, tune_images=8,
                   printer=quiet)

    def export():
      export_dir = os.path.join(work, 'fuzz_export')
      shutil.rmtree(export_dir, ignore_errors=True)
      export_lib.export(model_dir, export_dir, checkpoint=checkpoint,
                        verify_images=2, printer=quiet)

    def report():
      output_dir = os.path.join(work, 'fuzz_report')
      shutil.rmtree(output_dir, ignore_errors=True)
      report_lib.report([model_dir], output_dir, printer=quiet)

    entries = [('eval', evaluate), ('export', export), ('report', report)]
    if checkpoint is None:
      entries.append(('train', train))  # Last: a success writes.
    return entries

  def test_damaged_model_dirs(self):
    work = self.get_temp_dir()
    good = os.path.join(work, 'good_run')
    self.train_in_process(good, '--train_steps=5', '--normalization=gcn_zca',
                          split=self.zca_split)
    prefix = 'model.ckpt-5'

    def write(name, data):
      def damage(model_dir):
        with open(os.path.join(model_dir, name), 'wb') as f:
          f.write(data)
      return damage

    def remove(*names):
      def damage(model_dir):
        for name in names:
          os.remove(os.path.join(model_dir, name))
      return damage

    def truncate(name, keep=0.5):
      def damage(model_dir):
        path = os.path.join(model_dir, name)
        with open(path, 'r+b') as f:
          f.truncate(int(os.path.getsize(path) * keep))
      return damage

    data_file = prefix + '.data-00000-of-00001'
    cases = [
        ('params_missing', remove('params.json')),
        ('params_corrupt', write('params.json', b'{"algorithm": ')),
        ('params_binary', write('params.json', b'\xff\xfe\x00')),
        ('params_list', write('params.json', b'[1, 2]')),
        ('params_string', write('params.json', b'"supervised"')),
        ('params_null', write('params.json', b'null')),
        ('params_empty_object', write('params.json', b'{}')),
        ('index_without_data', remove(data_file)),
        ('data_without_index', remove(prefix + '.index')),
        ('index_truncated', truncate(prefix + '.index')),
        ('index_empty', truncate(prefix + '.index', 0)),
        ('data_truncated', truncate(data_file)),
        ('data_empty', truncate(data_file, 0)),
        ('state_file_garbage', write('checkpoint', b'\x00garbage{{')),
        ('state_file_points_nowhere', write(
            'checkpoint', b'model_checkpoint_path: "model.ckpt-999"\n')),
    ]
    failures = []
    for name, damage in cases:
      model_dir = os.path.join(work, 'run_' + name)
      shutil.rmtree(model_dir, ignore_errors=True)
      shutil.copytree(good, model_dir)
      damage(model_dir)
      for entry, fn in self.entry_points(model_dir):
        try:
          code, message = self.outcome(fn)
        except Exception as e:  # pylint: disable=broad-except
          failures.append('%s/%s: %s: %s' % (name, entry, type(e).__name__,
                                             str(e)[:200]))
          continue
        # A state whose checkpoint TensorFlow does not list at all is a run
        # without checkpoints (train starts afresh, the others say so);
        # every other state must be refused.
        if code == 0 and not name.startswith(('data_without_index',
                                              'state_file')):
          failures.append('%s/%s: succeeded' % (name, entry))
    # --checkpoint that is not one.
    not_one = os.path.join(work, 'not_a_checkpoint')
    with open(not_one, 'w') as f:
      f.write('hello')
    for checkpoint in (not_one, os.path.join(work, 'missing'), work,
                       os.path.join(good, prefix + '.index')):
      for entry, fn in self.entry_points(good, checkpoint):
        try:
          code, message = self.outcome(fn)
        except Exception as e:  # pylint: disable=broad-except
          failures.append('--checkpoint=%s/%s: %s: %s'
                          % (checkpoint, entry, type(e).__name__,
                             str(e)[:200]))
          continue
        if code == 0 and entry != 'report':
          failures.append('--checkpoint=%s/%s: succeeded' % (checkpoint,
                                                             entry))
    # A corrupt ZCA file: the copy the run stored in its model directory,
    # which eval, export and a resumed train read (not the data's zca.npz).
    zca_path = os.path.join(good, 'zca_matrix.f32')
    saved = open(zca_path, 'rb').read()
    try:
      for variant, blob in _variants_of_file(saved):
        with open(zca_path, 'wb') as f:
          f.write(blob)
        for entry, fn in self.entry_points(good):
          try:
            code, message = self.outcome(fn)
          except Exception as e:  # pylint: disable=broad-except
            failures.append('zca %s/%s: %s: %s' % (variant, entry,
                                                   type(e).__name__,
                                                   str(e)[:200]))
            continue
          if code == 0 and entry != 'report' and variant != 'appended':
            failures.append('zca %s/%s: succeeded' % (variant, entry))
    finally:
      with open(zca_path, 'wb') as f:
        f.write(saved)
    self.assertEqual(failures, [], '\n'.join(failures))


_TFDS_BUILDER = []


def _fuzz_tfds_builder():
  """A tiny TFDS builder (defined once, on first use: TFDS registers it)."""
  if not _TFDS_BUILDER:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    class TinyTfdsForFuzz(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version('1.0.0')

      def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({
                'image': tfds.features.Image(shape=(6, 6, 3)),
                'label': tfds.features.ClassLabel(names=['x', 'y'])}))

      def _split_generators(self, dl_manager):
        return [tfds.core.SplitGenerator(name=tfds.Split.TRAIN,
                                         gen_kwargs={'n': 6}),
                tfds.core.SplitGenerator(name=tfds.Split.TEST,
                                         gen_kwargs={'n': 2})]

      def _generate_examples(self, n):
        for i in range(n):
          yield i, {'image': np.full((6, 6, 3), i, np.uint8),
                    'label': i % 2}

    _TFDS_BUILDER.append(TinyTfdsForFuzz)
  return _TFDS_BUILDER[0]


# Legal in a path, special to a glob, a list flag or a shell.
WEIRD = 'a [0]*?, b-é'


class AnyPathTest(HardeningTestBase):
  """Model, data, export and report directories with glob characters,
  commas, spaces and non-ASCII letters: train, resume, eval, export, report."""

  def test_train_resume_eval_export_report(self):
    work = os.path.join(self.get_temp_dir(), WEIRD)
    data_dir = os.path.join(work, 'data ' + WEIRD)
    shutil.copytree(self.data_dir, data_dir)
    model_dir = os.path.join(work, 'run ' + WEIRD)
    self.train_in_process(model_dir, '--train_steps=5', '--ema_decay=0.5',
                          data_dir=data_dir)
    self.assertEqual(model_dir_lib.latest_checkpoint(model_dir),
                     os.path.join(model_dir, 'model.ckpt-5'))
    lines = self.train_in_process(model_dir, '--train_steps=15',
                                  '--ema_decay=0.5', '--keep_checkpoint_max=1',
                                  data_dir=data_dir)
    self.assertTrue(any('resuming from' in l and '(step 5)' in l
                        for l in lines), lines)
    self.assertEqual(model_dir_lib.checkpoint_step(
        model_dir_lib.latest_checkpoint(model_dir)), 15)
    # keep_checkpoint_max removed the older checkpoints (TensorFlow globs).
    self.assertEqual(sorted(n for n in os.listdir(model_dir)
                            if n.endswith('.index')), ['model.ckpt-15.index'])
    results = eval_lib.run(model_dir, printer=lambda _: None)
    self.assertEqual(results['step'], 15)
    export_dir = os.path.join(work, 'export ' + WEIRD)
    for overwrite in (False, True):
      export_lib.export(model_dir, export_dir, overwrite=overwrite,
                        verify_images=4, printer=lambda _: None)
    self.assertTrue(os.path.isfile(os.path.join(export_dir, 'saved_model.pb')))
    output_dir = os.path.join(work, 'report ' + WEIRD)
    data = report_lib.report([model_dir], output_dir, printer=lambda _: None)
    self.assertTrue(data['plots']['accuracy'])  # eval events were found
    self.assertTrue(os.path.isfile(os.path.join(output_dir, 'report.md')))
    self.assertEqual([n for n in os.listdir(work) if '.tmp-' in n], [])


if __name__ == '__main__':
  tf.test.main()
