"""What differs between TensorFlow 1.15 and 2.15, in one place.

The rest of the code has no version branches; this module is in the lowest
layer so that every package can import it. What it covers:
docs/architecture.md.
"""

import tensorflow.compat.v1 as tf

VERSION = tf.__version__
MAJOR = int(VERSION.split('.')[0])
TF2 = MAJOR >= 2


def dim(dimension):
  """A static dimension as a Python int, or None when unknown."""
  return tf.compat.dimension_value(dimension)


def graph_mode():
  """Turns eager execution off (TF 2); TF 1.15 is already in graph mode.

  Must run before any graph is built: `tf.placeholder`, Estimator input
  functions under MultiWorkerMirroredStrategy (which deep-copies in eager
  mode) and the product's session code assume graph mode.
  """
  if tf.executing_eagerly():
    tf.disable_eager_execution()


def onednn_enabled():
  """True when this TensorFlow runs oneDNN (MKL-DNN) kernels on CPU.

  intel-tensorflow 1.15 and TF 2.x on x86 (unless TF_ENABLE_ONEDNN_OPTS=0).
  """
  if TF2:
    try:
      from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
      return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
      return False
  try:
    from tensorflow.python import pywrap_tensorflow  # pylint: disable=g-import-not-at-top
    return bool(pywrap_tensorflow.IsMklEnabled())
  except (ImportError, AttributeError):
    return False


_GPU_AVAILABLE = []


def gpu_available():
  """True when TensorFlow sees a GPU (asked once per process)."""
  if not _GPU_AVAILABLE:
    _GPU_AVAILABLE.append(
        bool(tf.config.experimental.list_physical_devices('GPU')))
  return _GPU_AVAILABLE[0]


_TF2_PREFIX = 'Graph execution error:'


def error_line(error):
  """The one line of a TensorFlow error that names the cause.

  TF 1.15: the message's first line. TF 2: the message starts with
  `Graph execution error:`, where the node was defined and `Node: '...'`;
  the cause is the line after that.
  """
  message = getattr(error, 'message', None) or str(error) or ''
  lines = message.split('\n')
  if lines and lines[0].strip().startswith(_TF2_PREFIX):
    for i, line in enumerate(lines):
      if line.startswith('Node: ') and i + 1 < len(lines):
        return lines[i + 1].strip()
    rest = [l.strip() for l in lines[1:]
            if l.strip() and not l.startswith((' ', '\t', 'Detected at'))]
    if rest:
      return rest[0]
  return lines[0].strip() if lines else ''


def _tfds_gcs_utils():
  from tensorflow_datasets.core.utils import gcs_utils  # pylint: disable=g-import-not-at-top
  return gcs_utils


def disable_tfds_gcs():
  """Stops tensorflow_datasets from looking up metadata on GCS.

  Returns a token for `restore_tfds_gcs`. tfds 3.2.1 (TF 1.15) has the
  function `gcs_utils.is_gcs_disabled`; tfds 4.x the flag
  `gcs_utils._is_gcs_disabled`.
  """
  gcs_utils = _tfds_gcs_utils()
  if hasattr(gcs_utils, 'is_gcs_disabled'):
    saved = ('is_gcs_disabled', gcs_utils.is_gcs_disabled)
    gcs_utils.is_gcs_disabled = lambda: True
  else:
    saved = ('_is_gcs_disabled', getattr(gcs_utils, '_is_gcs_disabled', False))
    gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access
  return saved


def restore_tfds_gcs(token):
  """Undoes `disable_tfds_gcs`."""
  setattr(_tfds_gcs_utils(), token[0], token[1])


def dense_initializer():
  """Glorot-uniform kernels drawn from the graph seed on both runtimes.

  This is TF 1.15's default for `tf.layers.dense`; TF 2's default Keras
  initializer ignores the graph seed, so it is passed explicitly.
  """
  return tf.glorot_uniform_initializer()
