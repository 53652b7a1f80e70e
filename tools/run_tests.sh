#!/usr/bin/env bash
# Sets the machine up (idempotent) and runs the whole test suite on 2 workers,
# on one runtime:
#   bash tools/run_tests.sh                  TensorFlow 1.15 (.venv, the default)
#   bash tools/run_tests.sh --runtime=tf2    TensorFlow 2.15 (.venv-tf2)
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k splits`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNTIME=tf1
if [ $# -gt 0 ]; then
  case "$1" in --runtime=*) RUNTIME=${1#--runtime=}; shift ;; esac
fi
case "$RUNTIME" in
  tf1) bash setup.sh; VENV=.venv ;;
  tf2) bash setup.sh --flavor=tf2; VENV=.venv-tf2 ;;
  *) echo "run_tests.sh: --runtime must be tf1 or tf2" >&2; exit 2 ;;
esac
export TF_CPP_MIN_LOG_LEVEL=3
exec "$VENV/bin/python" -m pytest tests -n 2 -q -p no:cacheprovider "$@"
