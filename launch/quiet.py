"""Imported by every entry point before TensorFlow: quiet native logs.

TensorFlow's C++ logging reads TF_CPP_MIN_LOG_LEVEL once, when the library
loads, so it must be set before the first `import tensorflow`. Level 3 keeps
TF 1.15's `failed call to cuInit` (an ERROR line on CPU-only machines) and
TF 2's oneDNN and CPU-feature notices (INFO) off the console. A value the
user set is kept: `TF_CPP_MIN_LOG_LEVEL=0 python launch/train.py ...` shows
everything TensorFlow says (README, "Seeing TensorFlow's own logs").
"""

import os

DEFAULT_LEVEL = '3'

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', DEFAULT_LEVEL)
