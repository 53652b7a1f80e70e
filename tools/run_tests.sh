#!/usr/bin/env bash
# Sets the machine up (idempotent) and runs the whole test suite on 2 workers,
# on both runtimes, as CI does:
#   bash tools/run_tests.sh                  TensorFlow 1.15 (.venv), then 2.15 (.venv-tf2)
#   bash tools/run_tests.sh --runtime=tf1    TensorFlow 1.15 only
#   bash tools/run_tests.sh --runtime=tf2    TensorFlow 2.15 only
#   bash tools/run_tests.sh --fast           the fast tier for the edit loop (TF 1.15
#                                            unless --runtime says otherwise): the
#                                            suite without the tests in SLOW
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh --runtime=tf1 -k splits`.
# Exits non-zero when either runtime's suite fails (both still run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# What the fast tier leaves out (pytest node-id prefixes): the tests that run
# entry points as subprocesses or train real networks, 90 % of the suite's
# time.
SLOW=(
  tests/test_accuracy_benchmark.py
  tests/test_bazel_run.py
  tests/test_distribute.py
  tests/test_hardening.py
  tests/test_launch.py
  tests/test_prepare_data.py
  tests/test_reliability.py
  tests/test_report.py
  tests/test_throughput.py
  tests/test_adaptive_ssl.py::DataTest
  tests/test_adaptive_ssl.py::ModelFnTest
  tests/test_ascend.py::NpuEstimatorTest
  tests/test_ascend.py::ShardingAndShapesTest
  tests/test_augment.py::RealMixAugmentTest
  tests/test_family.py::ModelFnTest
  tests/test_inputs.py::StreamContinuesTest
  tests/test_networks.py::NetworksTest
)
RUNTIMES=
FAST=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime=*) RUNTIMES=${1#--runtime=}; shift ;;
    --fast) FAST=1; shift ;;
    *) break ;;
  esac
done
if [ -z "$RUNTIMES" ]; then
  if [ $FAST = 1 ]; then RUNTIMES=tf1; else RUNTIMES="tf1 tf2"; fi
fi
case "$RUNTIMES" in
  "tf1 tf2"|tf1|tf2) ;;
  *) echo "run_tests.sh: --runtime must be tf1 or tf2" >&2; exit 2 ;;
esac
SELECT=()
if [ $FAST = 1 ]; then
  for prefix in "${SLOW[@]}"; do SELECT+=("--deselect=$prefix"); done
fi
export TF_CPP_MIN_LOG_LEVEL=3
status=0
for runtime in $RUNTIMES; do
  case "$runtime" in
    tf1) bash setup.sh; VENV=.venv ;;
    tf2) bash setup.sh --flavor=tf2; VENV=.venv-tf2 ;;
  esac
  echo "== test suite$([ $FAST = 1 ] && echo ', fast tier,') on $runtime ($("$VENV/bin/python" -c 'import tensorflow as tf; print("TensorFlow", tf.__version__)' 2>/dev/null))"
  start=$SECONDS
  "$VENV/bin/python" -m pytest tests -n 2 -q -p no:cacheprovider "${SELECT[@]}" "$@" || status=$?
  echo "== $runtime: $((SECONDS - start)) s"
done
exit $status
