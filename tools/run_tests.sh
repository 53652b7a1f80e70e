#!/usr/bin/env bash
# Sets the machine up (idempotent) and runs the whole test suite on 2 workers,
# on both runtimes, as CI does:
#   bash tools/run_tests.sh                  TensorFlow 1.15 (.venv), then 2.15 (.venv-tf2)
#   bash tools/run_tests.sh --runtime=tf1    TensorFlow 1.15 only
#   bash tools/run_tests.sh --runtime=tf2    TensorFlow 2.15 only
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh --runtime=tf1 -k splits`.
# Exits non-zero when either runtime's suite fails (both still run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNTIMES="tf1 tf2"
if [ $# -gt 0 ]; then
  case "$1" in --runtime=*) RUNTIMES=${1#--runtime=}; shift ;; esac
fi
case "$RUNTIMES" in
  "tf1 tf2"|tf1|tf2) ;;
  *) echo "run_tests.sh: --runtime must be tf1 or tf2" >&2; exit 2 ;;
esac
export TF_CPP_MIN_LOG_LEVEL=3
status=0
for runtime in $RUNTIMES; do
  case "$runtime" in
    tf1) bash setup.sh; VENV=.venv ;;
    tf2) bash setup.sh --flavor=tf2; VENV=.venv-tf2 ;;
  esac
  echo "== test suite on $runtime ($("$VENV/bin/python" -c 'import tensorflow as tf; print("TensorFlow", tf.__version__)' 2>/dev/null))"
  start=$SECONDS
  "$VENV/bin/python" -m pytest tests -n 2 -q -p no:cacheprovider "$@" || status=$?
  echo "== $runtime: $((SECONDS - start)) s"
done
exit $status
