"""Files in a model directory: its lock, partial writes, checkpoint queries.

`lock(model_dir)`: an exclusive `flock` on `MODEL_DIR/.lock` for the life of
the process. See docs/architecture.md.
"""

import atexit
import errno
import fcntl
import fnmatch
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.python.lib.io import file_io
from tensorflow.python.training import saver as saver_lib

from input_pipeline import runtime
from input_pipeline.errors import DataError
from runner import cli

_GLOB_CHARS = re.compile(r'[*?[]')
_tf_get_matching_files = file_io.get_matching_files


def _literal_directory_matching_files(pattern):
  """file_io.get_matching_files reading a pattern's directory literally.

  TensorFlow's Saver and checkpoint queries (latest_checkpoint, restore,
  removing old checkpoints) check that a checkpoint exists by globbing
  `<model_dir>/model.ckpt-N.index` or `...data-?????-of-?????`, so a
  MODEL_DIR whose path holds `[`, `*` or `?` never finds its own
  checkpoints. Here only the last component is a pattern (the checkpoint
  file names TensorFlow builds); a directory part with glob characters that
  exists as written is listed as it is. Any other pattern goes to
  TensorFlow unchanged.
  """
  if not isinstance(pattern, (str, bytes)):
    return [match for p in pattern
            for match in _literal_directory_matching_files(p)]
  text = pattern.decode('utf-8') if isinstance(pattern, bytes) else pattern
  directory, name = os.path.split(text)
  if not (_GLOB_CHARS.search(directory) and os.path.isdir(directory)):
    return _tf_get_matching_files(pattern)
  return [os.path.join(directory, n) for n in sorted(os.listdir(directory))
          if fnmatch.fnmatchcase(n, name)]


_LINK_DIR = []


def _glob_free_prefix(prefix):
  """`prefix` itself, or a glob-free alias of it made of symbolic links.

  TensorFlow's C++ checkpoint reader (tf.train.load_checkpoint) globs its
  argument too, and takes the pattern as the literal prefix afterwards, so
  escaping cannot help: a checkpoint under a directory with glob characters
  is read through links to its files in a private temporary directory
  (removed when the process ends).
  """
  directory, name = os.path.split(prefix)
  if not (_GLOB_CHARS.search(directory) and os.path.isdir(directory)):
    return prefix
  if not _LINK_DIR:
    _LINK_DIR.append(tempfile.mkdtemp(prefix='ckpt-links-'))
    atexit.register(shutil.rmtree, _LINK_DIR[0], True)
  alias = tempfile.mkdtemp(dir=_LINK_DIR[0])
  for n in os.listdir(directory):
    if n.startswith(name + '.'):
      os.symlink(os.path.join(directory, n), os.path.join(alias, n))
  return os.path.join(alias, name)


try:  # Where checkpoint_utils finds the reader: TF >= 2.2, then TF 1.15.
  from tensorflow.python.training import py_checkpoint_reader as _reader_module  # pylint: disable=g-import-not-at-top
except ImportError:
  from tensorflow.python import pywrap_tensorflow as _reader_module  # pylint: disable=g-import-not-at-top
_tf_new_checkpoint_reader = _reader_module.NewCheckpointReader


def _literal_checkpoint_reader(filepattern):
  if isinstance(filepattern, bytes):
    filepattern = filepattern.decode('utf-8')
  return _tf_new_checkpoint_reader(_glob_free_prefix(filepattern))


_tf_saver_restore = saver_lib.Saver.restore


def _literal_saver_restore(self, sess, save_path):
  # The RestoreV2 op globs its prefix as well (C++).
  if save_path is not None:
    save_path = _glob_free_prefix(
        save_path.decode('utf-8') if isinstance(save_path, bytes)
        else save_path)
  return _tf_saver_restore(self, sess, save_path)


def install_literal_paths():
  """Makes TensorFlow's checkpoint code work in any MODEL_DIR (see above).

  Idempotent; done when this module is imported, which every entry point
  that reads or writes checkpoints does.
  """
  file_io.get_matching_files = _literal_directory_matching_files
  _reader_module.NewCheckpointReader = _literal_checkpoint_reader
  saver_lib.Saver.restore = _literal_saver_restore


install_literal_paths()


def prepare(model_dir, flag='--model_dir'):
  """Creates model_dir; raises cli.UsageError naming `flag` when it cannot
  be written."""
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=model_dir, prefix='.probe-')
    probe.close()
  except OSError as e:
    raise cli.UsageError('%s %s is not writable: %s'
                         % (flag, model_dir, e.strerror or e))
  return model_dir


def check_writable(model_dir, flag='--model_dir'):
  """cli.UsageError when `model_dir` could not be created or written.

  Creates nothing: the nearest existing ancestor must be a writable
  directory (a directory that exists must be writable itself).
  """
  path = model_dir
  while not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  if not os.path.isdir(path):
    raise cli.UsageError('%s %s is not writable: %s is not a directory'
                         % (flag, model_dir, path))
  if not os.access(path, os.W_OK | os.X_OK):
    raise cli.UsageError('%s %s is not writable: permission denied on %s'
                         % (flag, model_dir, path))


def remove_if_unused(model_dir):
  """Removes a model_dir that holds nothing but its lock file."""
  try:
    if set(os.listdir(model_dir)) <= {LOCK_FILE}:
      shutil.rmtree(model_dir)
  except OSError:
    pass


LOCK_FILE = '.lock'

# Held locks (open files) by model_dir: the lock lives as long as the file.
_HELD = {}


def lock(model_dir):
  """Takes the model_dir's training lock for the rest of the process.

  Raises:
    cli.UsageError: another live process holds it; the message gives its pid.
  """
  model_dir = os.path.abspath(model_dir)
  if model_dir in _HELD:
    return
  path = os.path.join(model_dir, LOCK_FILE)
  f = open(path, 'a+')
  try:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    f.seek(0)
    owner = f.read().strip() or 'unknown'
    f.close()
    if e.errno not in (errno.EAGAIN, errno.EACCES):
      raise cli.UsageError('cannot lock --model_dir %s: %s'
                           % (model_dir, e.strerror or e))
    raise cli.UsageError('model_dir %s is in use by another training process '
                         '(pid %s)' % (model_dir, owner))
  f.seek(0)
  f.truncate()
  f.write('%d\n' % os.getpid())
  f.flush()
  _HELD[model_dir] = f


def unlock(model_dir):
  """Releases a lock taken by `lock` in this process (for in-process use)."""
  f = _HELD.pop(os.path.abspath(model_dir), None)
  if f is not None:
    f.close()


# Temporary files of TensorFlow's writers: the Saver's `<prefix>_temp_<hex>/`
# (sharded) or `<file>.tempstate<digits>`, and file_io's atomic writes
# (`checkpoint.tmp<hex>`, `graph.pbtxt.tmp<hex>`).
_PARTIAL_RE = re.compile(r'(_temp_[0-9a-f]{32}$|\.tempstate\d+$|'
                         r'\.tmp[0-9a-f]{32}$)')


_CHECKPOINT_FILE_RE = re.compile(r'^model\.ckpt-(\d+)\.(index|meta|'
                                 r'data-\d+-of-\d+)$')


def checkpoint_step_from_name(checkpoint):
  """N of a `.../model.ckpt-N` prefix (-1 for another name)."""
  match = re.search(r'model\.ckpt-(\d+)$', checkpoint)
  return int(match.group(1)) if match else -1


def remove_partial_writes(model_dir):
  """Deletes what checkpoint and state writes that never ended left behind.

  Every such file is written under a temporary name and renamed; a process
  killed (or stopped by a full disk) in between leaves the temporary. The
  Saver then writes the final `.index` in place and only afterwards lists
  the checkpoint in the `checkpoint` state file (itself replaced
  atomically), so the files of a checkpoint newer than the newest listed one
  are an interrupted save and go too: TensorFlow would never restore them.
  Without a state file no checkpoint file is touched. Only call this while
  holding the lock. Returns the names removed.
  """
  state = tf.train.get_checkpoint_state(model_dir)
  paths = list(state.all_model_checkpoint_paths) + [
      state.model_checkpoint_path] if state else []
  listed = [checkpoint_step_from_name(p) for p in paths if p]
  newest = max(listed) if listed else float('inf')
  removed = []
  for name in sorted(os.listdir(model_dir)):
    match = _CHECKPOINT_FILE_RE.match(name)
    if not (_PARTIAL_RE.search(name) or
            (match and int(match.group(1)) > newest)):
      continue
    path = os.path.join(model_dir, name)
    if os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      os.remove(path)
    removed.append(name)
  return removed


# What a write that the file system refused says (strerror, as TensorFlow and
# Python both report it).
_WRITE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)
_WRITE_FAILURE_RE = re.compile(r'(No space left on device|File too large|'
                               r'Disk quota exceeded|Read-only file system)')


# The temporary part of a path TensorFlow was writing (see _PARTIAL_RE).
_TEMP_SUFFIX_RE = re.compile(r'(_temp_[0-9a-f]{32}/.*|\.tempstate\d+|'
                             r'\.tmp[0-9a-f]{32})$')


def write_failure(error):
  """'<path>: <reason>' when `error` is a write the file system refused.

  Covers a full disk, a file-size limit, a quota and a read-only file system,
  whether Python raised it (OSError) or TensorFlow (an OpError, e.g.
  OutOfRangeError for EFBIG, ResourceExhaustedError for ENOSPC). Returns
  None for any other error.
  """
  if isinstance(error, OSError):
    if error.errno in _WRITE_ERRNOS:
      return '%s: %s' % (error.filename or 'a file', error.strerror)
    return None
  if isinstance(error, tf.errors.OpError):
    line = runtime.error_line(error)
    match = _WRITE_FAILURE_RE.search(line)
    if match:
      path = _TEMP_SUFFIX_RE.sub('', line[:match.start()].rstrip('; :'))
      return '%s: %s' % (path or 'a file', match.group(1))
  return None


def check_checkpoint(checkpoint, flag=None):
  """Reads every tensor of `checkpoint` once; returns it when it is whole.

  A checkpoint prefix without its `.index`, with a truncated or foreign
  index, or with data files missing or cut short otherwise fails deep inside
  TensorFlow with a traceback.

  Raises:
    cli.UsageError: `flag` (e.g. '--checkpoint') names a path that is not a
      checkpoint prefix at all.
    DataError: the checkpoint exists but is damaged (names it).
  """
  if not os.path.isfile(checkpoint + '.index'):
    hint = ''
    if checkpoint.endswith('.index') and os.path.isfile(checkpoint):
      hint = ' (give the prefix %s)' % checkpoint[:-len('.index')]
    message = '%s is not a checkpoint: no %s.index%s' % (
        checkpoint, checkpoint, hint)
    if flag:
      raise cli.UsageError('%s=%s' % (flag, message))
    raise DataError(message)
  try:
    reader = tf.train.load_checkpoint(checkpoint)
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)
  except tf.errors.OpError as e:
    raise DataError('checkpoint %s is damaged: %s' % (
        checkpoint, (e.message or '').split('\n')[0]))
  except (IndexError, ValueError) as e:
    # TF 2.15's reader raises IndexError for a short data file.
    raise DataError('checkpoint %s is damaged: %s' % (checkpoint, e))
  return checkpoint


def has_checkpoint(model_dir):
  """Whether model_dir holds any checkpoint file (listed or not)."""
  try:
    names = os.listdir(model_dir)
  except OSError:
    return False
  return any(_CHECKPOINT_FILE_RE.match(n) for n in names)


def latest_checkpoint(model_dir):
  """The newest checkpoint prefix in model_dir, or None."""
  return tf.train.latest_checkpoint(model_dir)


def checkpoint_step(checkpoint):
  """The global step stored in a checkpoint."""
  reader = tf.train.load_checkpoint(checkpoint)
  return int(reader.get_tensor(tf.GraphKeys.GLOBAL_STEP))


CHECK_IMAGES_FILE = 'export_check_images.npz'


def has_check_images(model_dir):
  return os.path.exists(os.path.join(model_dir, CHECK_IMAGES_FILE))


def save_check_images(model_dir, images):
  """Stores uint8 images [N,H,W,C] the export is checked on (train.py)."""
  path = os.path.join(model_dir, CHECK_IMAGES_FILE)
  tmp = '%s.tmp-%d.npz' % (path, os.getpid())
  np.savez_compressed(tmp, images=np.asarray(images, np.uint8))
  os.replace(tmp, path)


def load_check_images(model_dir):
  """The images `save_check_images` stored, or None."""
  path = os.path.join(model_dir, CHECK_IMAGES_FILE)
  if not os.path.exists(path):
    return None
  with np.load(path, allow_pickle=False) as data:
    return data['images']
