"""Atomic file system writes: files, directories, their locks and recovery.

The one place the dataset writer, the splits, export and the runner's model
directory write through. See docs/architecture.md ("Data on disk").
"""

import contextlib
import errno
import fcntl
import glob
import os
import re
import shutil
import tempfile

import tensorflow.compat.v1 as tf

from input_pipeline import runtime
from input_pipeline.errors import DataError


def write_atomic(path, data):
  """Writes `data` (str or bytes) to `path` through a temporary file and a
  rename, so a reader sees the old file or the whole new one."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path))
  try:
    os.fchmod(fd, 0o666 & ~_umask())  # as open() would; mkstemp makes 0600
    with os.fdopen(fd, 'wb' if isinstance(data, bytes) else 'w') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.rename(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _leftovers(target, kind):
  """Paths `<target>.<kind>-<pid>` left by processes now dead."""
  found = []
  for path in glob.glob(glob.escape(target) + '.%s-*' % kind):
    match = re.search(r'\.%s-(\d+)$' % re.escape(kind), path)
    if match and not _pid_alive(int(match.group(1))):
      found.append(path)
  return found


class Lock(object):
  """A held `flock`; `release()` (or leaving a `with`) drops it."""

  def __init__(self, fd):
    self._fd = fd

  def release(self):
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self

  def __exit__(self, *unused):
    self.release()


def lock(target, exclusive, what='directory'):
  """Takes the shared or exclusive `flock` of the directory `target`.

  The lock is on the directory itself (no lock file is left anywhere), so
  it follows the version of the dataset or split that was there when it was
  taken: a replacement renames a new directory into place. Never waits.
  Returns a Lock (holding nothing when `target` does not exist: creating is
  made exclusive by the final rename instead, see `replace_directory`).

  Raises:
    DataError: another process holds a conflicting lock; names `target`.
  """
  target = os.path.abspath(target)
  try:
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
  except OSError:
    return Lock(None)
  try:
    fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) |
                fcntl.LOCK_NB)
  except OSError as e:
    os.close(fd)
    if e.errno not in (errno.EAGAIN, errno.EACCES):
      raise DataError('cannot lock %s %s: %s' % (what, target,
                                                 e.strerror or e))
    if exclusive:
      raise DataError('%s %s is in use by another process (a training, an '
                      'evaluation or another prepare_data); try again when '
                      'it ends' % (what, target))
    raise DataError('%s %s is being written by another process; try again '
                    'when it ends' % (what, target))
  return Lock(fd)


def replace_directory(tmp, target, replace=True):
  """Renames the complete directory `tmp` to `target`.

  With `replace`, an existing `target` is first moved to
  `<target>.old-<pid>` (the name `recover_interrupted` puts back if this
  process dies before the second rename) and removed once `tmp` is in
  place. Without it the rename fails (OSError ENOTEMPTY or EEXIST) when
  another process has meanwhile put a directory at `target`: of two
  concurrent writers exactly one wins.
  """
  if replace and os.path.exists(target):
    old = '%s.old-%d' % (target, os.getpid())
    os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old)
  else:
    os.rename(tmp, target)


def recover_interrupted(target, marker):
  """Cleans up after writers of `target` that were killed.

  Removes their `<target>.tmp-<pid>` directories and, when `target` is
  missing, renames back the newest complete `<target>.old-<pid>` (one holding
  the file `marker`) that a killed overwrite had moved aside; other
  `.old-<pid>` copies are removed. Directories of live processes are left
  alone. Returns the path restored, or None.
  """
  for path in _leftovers(target, 'tmp'):
    shutil.rmtree(path, ignore_errors=True)
  restored = None
  for path in sorted(_leftovers(target, 'old'), key=os.path.getmtime,
                     reverse=True):
    complete = os.path.isfile(os.path.join(path, marker))
    if complete and restored is None and not os.path.exists(target):
      os.rename(path, target)
      restored = path
    else:
      shutil.rmtree(path, ignore_errors=True)
  return restored


@contextlib.contextmanager
def atomic_directory(target, overwrite=False, what='directory',
                     marker=None):
  """Yields a fresh `<target>.tmp-<pid>` that replaces `target` on success.

  With `marker` (the file a complete directory holds), first puts back a
  previous version a killed overwrite left at `<target>.old-<pid>`
  (`recover_interrupted`). Raises DataError before yielding if `target`
  exists and overwrite is off, or if the parent directory cannot be created
  or written, and turns file system errors while writing (a full disk) into
  DataError. On an exception the temporary directory is removed; `target`
  is left as it was. An existing target's exclusive lock (`lock`) is held
  throughout, and a target that appears meanwhile is never replaced (the
  DataError says another process wrote it). An existing target that is not
  a complete `what` (no `marker`) and not empty is never replaced.
  """
  target = os.path.abspath(target)
  if marker:
    try:
      restored = recover_interrupted(target, marker)
    except OSError as e:
      raise DataError('cannot recover %s %s: %s'
                      % (what, target, e.strerror or e))
    if restored:
      tf.logging.warning('restored %s %s from %s, left by an interrupted '
                         'overwrite', what, target, restored)
  held = lock(target, True, what)
  try:
    with _atomic_directory_locked(target, overwrite, what, marker,
                                  os.path.exists(target)) as tmp:
      yield tmp
  finally:
    held.release()


@contextlib.contextmanager
def _atomic_directory_locked(target, overwrite, what, marker, existed):
  """atomic_directory holding the exclusive lock of an existing target."""
  if existed and not overwrite:
    raise DataError('%s %s already exists; pass --overwrite to replace it'
                    % (what, target))
  if (os.path.exists(target) and marker and
      not os.path.isfile(os.path.join(target, marker)) and
      not (os.path.isdir(target) and not os.listdir(target))):
    # --overwrite replaces a dataset or split, never another directory.
    raise DataError('%s exists but is not a %s (no %s); refusing to replace '
                    'it' % (target, what, marker))
  parent = os.path.dirname(target)
  tmp = '%s.tmp-%d' % (target, os.getpid())
  try:
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(tmp):
      shutil.rmtree(tmp)
    os.mkdir(tmp)
  except OSError as e:
    raise DataError('cannot write to %s: %s' % (parent, e.strerror or e))
  try:
    yield tmp
    try:
      # Replace only the version this process locked; a target that
      # appeared meanwhile is another writer's, which won.
      replace_directory(tmp, target, replace=existed)
    except OSError as e:
      if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
        raise
      raise DataError('%s %s already exists: another process wrote it '
                      'meanwhile' % (what, target))
  except (OSError, tf.errors.OpError) as e:
    detail = runtime.error_line(e) if isinstance(e, tf.errors.OpError) else (
        str(e.strerror or e).split('\n')[0])
    raise DataError('cannot write %s %s: %s' % (what, target, detail))
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
