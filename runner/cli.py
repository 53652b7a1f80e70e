"""What every entry point shares: one-line errors, exit codes, paths.

`run(main)`: DataError and RunError exit 1, UsageError, ValueError and flag
errors exit 2, each as one line `error: <message>`; anything else is a bug
and keeps its traceback. See docs/architecture.md.
"""

import math
import os
import sys
import warnings

from absl import app
from absl import flags

from input_pipeline.errors import DataError

EXIT_DATA_ERROR = 1
EXIT_USAGE_ERROR = 2


class UsageError(Exception):
  """A bad flag or flag combination; the message names the flag."""


class RunError(Exception):
  """A run that started correctly failed: a non-finite loss, a full disk.

  Exit code 1 like DataError (the command may succeed when run again once the
  cause is fixed); the message names the step or the file and says what was
  kept.
  """


def fail(message, code):
  """Prints `error: <message>` as one line on stderr and exits with `code`."""
  line = ' '.join(str(message).split())
  sys.stderr.write('error: %s\n' % line)
  sys.stderr.flush()
  sys.exit(code)


def non_finite_flag(flag_values):
  """'--name=value' of the first float flag set to NaN or +-Inf, or None.

  absl's float parser accepts 'nan' and 'inf', which no hyperparameter
  means; they are refused when flags are parsed.
  """
  for name in sorted(flag_values):
    value = flag_values[name].value
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
      if isinstance(v, float) and not math.isfinite(v):
        return '--%s=%s' % (name, v)
  return None


def _parse_flags(argv):
  try:
    parsed = flags.FLAGS(argv)
  except flags.Error as e:
    fail(e, EXIT_USAGE_ERROR)
  bad = non_finite_flag(flags.FLAGS)
  if bad:
    fail('%s: a flag value must be a finite number' % bad, EXIT_USAGE_ERROR)
  return parsed


def _guarded(main_fn):
  def main(argv):
    try:
      return main_fn(argv)
    except (DataError, RunError) as e:
      fail(e, EXIT_DATA_ERROR)
    except (UsageError, ValueError, flags.Error) as e:
      fail(e, EXIT_USAGE_ERROR)
  return main


def quiet_tensorflow():
  """Keeps TensorFlow's own INFO logs and deprecation notices off the console.

  The product prints its own progress. TensorFlow's native (C++) logs are
  silenced by runner/quiet.py, which entry points import before TensorFlow;
  set TF_CPP_MIN_LOG_LEVEL=0 and --verbosity=1 (absl) to see everything
  TensorFlow says.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  # TF 2 warns (Python `warnings`) on every tf.compat.v1.layers call.
  warnings.filterwarnings('ignore', message=r'`tf\.layers\.\w+` is deprecated')
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.util import deprecation  # pylint: disable=g-import-not-at-top
  deprecation._PRINT_DEPRECATION_WARNINGS = False  # pylint: disable=protected-access
  tf.get_logger().setLevel('ERROR')
  tf.get_logger().propagate = False
  from input_pipeline import runtime  # pylint: disable=g-import-not-at-top
  runtime.graph_mode()


def run(main_fn, argv=None):
  """absl.app.run(main_fn) with one-line errors and the exit codes above."""
  quiet_tensorflow()
  app.run(_guarded(main_fn), argv=argv, flags_parser=_parse_flags)


def resolve_path(path):
  """Expands `~` and resolves a relative path against the user's directory.

  Under `bazel run` the program starts in its runfiles tree and the user's
  directory is $BUILD_WORKING_DIRECTORY; elsewhere it is the current
  directory. None and '' are returned unchanged.
  """
  if not path:
    return path
  path = os.path.expanduser(path)
  if not os.path.isabs(path):
    path = os.path.join(os.environ.get('BUILD_WORKING_DIRECTORY') or
                        os.getcwd(), path)
  return os.path.normpath(path)
