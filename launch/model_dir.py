"""Files in a model directory: the lock, atomic writes, checkpoint queries.

One training process at a time per model directory: `lock(model_dir)` takes
an exclusive `fcntl.flock` on `MODEL_DIR/.lock` (holding the owner's pid) for
the life of the process. The kernel drops the lock when the process ends,
however it ends (kill -9 included), so a crashed run never leaves it stuck.
"""

import errno
import fcntl
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import runtime
from launch import cli


def prepare(model_dir):
  """Creates model_dir; raises cli.UsageError when it cannot be written."""
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=model_dir, prefix='.probe-')
    probe.close()
  except OSError as e:
    raise cli.UsageError('--model_dir %s is not writable: %s'
                         % (model_dir, e.strerror or e))
  return model_dir


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


def write_atomic(path, text):
  """Writes text to path through a temporary file and a rename."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path))
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.rename(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


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
