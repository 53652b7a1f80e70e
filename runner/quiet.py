"""Imported by every entry point before TensorFlow: quiet native logs.

Sets TF_CPP_MIN_LOG_LEVEL=3 unless the user set it (README, "Seeing
TensorFlow's own logs"). See docs/architecture.md.
"""

import os

DEFAULT_LEVEL = '3'

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', DEFAULT_LEVEL)
