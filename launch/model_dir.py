"""Files in a model directory: atomic writes and checkpoint queries."""

import os
import tempfile

import tensorflow.compat.v1 as tf

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
