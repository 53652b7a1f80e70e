#!/usr/bin/env bash
# One-time (and idempotent) set-up of a machine for this project:
#   - a Python 3.7 virtual environment in .venv with the pinned requirements
#     (TensorFlow 1.15 supports CPython 3.5-3.7 only), or with --flavor=tf2 a
#     Python 3.11 one with TensorFlow 2.15 (requirements-tf2.lock);
#   - Debian packages: Bazel 4.2.3 and the offline Fashion-MNIST;
#   - .bazelrc.local pointing Bazel at the venv's interpreter.
# Re-running it is fast and changes nothing when everything is in place.
#
# Usage: bash setup.sh [--flavor=stock|intel|tf2|tf2-gpu] [--venv=DIR] [--no-apt]
#   --flavor=intel installs intel-tensorflow==1.15.2 (MKL-DNN, faster on CPU)
#   instead of tensorflow==1.15.0 (the default; what Ascend's npu_bridge needs).
#   --flavor=tf2 makes a Python 3.11 environment with TensorFlow 2.15 (CPU,
#   oneDNN; requirements-tf2.lock, default DIR .venv-tf2); --flavor=tf2-gpu
#   the same with tensorflow[and-cuda]==2.15.1 (requirements-tf2-gpu.lock;
#   resolves, not run on GPU hardware here).
#   --venv=DIR puts the environment in DIR instead of .venv (e.g. both
#   flavours side by side: --flavor=intel --venv=.venv-intel); Bazel uses
#   .venv only, tools/run_tests.sh .venv or (--runtime=tf2) .venv-tf2.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$PWD
FLAVOR=stock
APT=1
VENV=
for arg in "$@"; do
  case "$arg" in
    --flavor=*) FLAVOR=${arg#--flavor=} ;;
    --venv=*) VENV=${arg#--venv=}; case "$VENV" in /*) ;; *) VENV=$ROOT/$VENV ;; esac ;;
    --no-apt) APT=0 ;;
    -h|--help) sed -n 2,21p "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
case "$FLAVOR" in
  stock|intel) PY_WANT=3.7; REQ=$ROOT/requirements.lock; : "${VENV:=$ROOT/.venv}" ;;
  tf2) PY_WANT=3.11; REQ=$ROOT/requirements-tf2.lock; : "${VENV:=$ROOT/.venv-tf2}" ;;
  tf2-gpu) PY_WANT=3.11; REQ=$ROOT/requirements-tf2-gpu.lock; : "${VENV:=$ROOT/.venv-tf2}" ;;
  *) echo "setup.sh: --flavor must be stock, intel, tf2 or tf2-gpu" >&2; exit 2 ;;
esac
say() { echo "[setup] $*"; }

# --- Debian packages --------------------------------------------------------
APT_PKGS=()
command -v bazel >/dev/null 2>&1 || APT_PKGS+=(bazel-bootstrap)
[ -d /usr/share/bazel/rules/java ] || APT_PKGS+=(bazel-rules-java)
[ -d /usr/share/datasets/fashion-mnist ] || APT_PKGS+=(dataset-fashion-mnist)
if [ ${#APT_PKGS[@]} -gt 0 ]; then
  if [ "$APT" = 1 ] && [ "$(id -u)" = 0 ]; then
    say "installing Debian packages: ${APT_PKGS[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q "${APT_PKGS[@]}" >/dev/null
  else
    say "missing Debian packages: ${APT_PKGS[*]}"
    say "run: sudo apt-get update && sudo apt-get install -y ${APT_PKGS[*]}"
    [ "$APT" = 1 ] && exit 1
  fi
fi

# --- Python 3.7 (TensorFlow 1.15) or 3.11 (TensorFlow 2.15) ------------------
IS_WANTED="import sys, venv; sys.exit(sys.version_info[:2] != tuple(map(int, '$PY_WANT'.split('.'))))"
find_python() {
  local c override
  if [ "$PY_WANT" = 3.7 ]; then override=${PYTHON37:-}; else override=${PYTHON311:-}; fi
  for c in "$override" "python$PY_WANT" \
           "$(pyenv root 2>/dev/null)"/versions/"$PY_WANT".*/bin/python \
           "$HOME"/.pyenv/versions/"$PY_WANT".*/bin/python "/usr/bin/python$PY_WANT" \
           "/usr/local/bin/python$PY_WANT" python3; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c "$IS_WANTED" 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

VENV_PY=$VENV/bin/python
if ! { [ -x "$VENV_PY" ] && "$VENV_PY" -c "$IS_WANTED" 2>/dev/null; }; then
  if ! PY=$(find_python); then
    if [ "$PY_WANT" = 3.7 ]; then
      echo "setup.sh: no Python 3.7 interpreter found (TensorFlow 1.15 needs 3.5-3.7)." >&2
      echo "setup.sh: install one, e.g. 'pyenv install 3.7.16', or set PYTHON37=/path/to/python3.7" >&2
    else
      echo "setup.sh: no Python 3.11 interpreter found (the tf2 flavours: TensorFlow 2.15 needs 3.9-3.11; the locks are for 3.11)." >&2
      echo "setup.sh: install one, e.g. 'pyenv install 3.11.7', or set PYTHON311=/path/to/python3.11" >&2
    fi
    exit 1
  fi
  say "creating $VENV from $PY"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

# Requirements: install only when the lock or the flavour changed.
STAMP=$VENV/.installed
WANT="$(sha256sum "$REQ" | cut -d' ' -f1) $FLAVOR"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  SIZE="~500 MB"; [ "$FLAVOR" = tf2-gpu ] && SIZE="~3 GB (CUDA wheels)"
  say "installing pinned requirements ($FLAVOR, $(basename "$REQ")); the first time downloads $SIZE"
  "$VENV_PY" -m pip install -q --disable-pip-version-check --upgrade "pip==23.2.1"
  if [ "$FLAVOR" = intel ]; then
    grep -v '^tensorflow==' "$REQ" > "$VENV/requirements.intel"
    "$VENV_PY" -m pip uninstall -q -y tensorflow >/dev/null 2>&1 || true
    "$VENV_PY" -m pip install -q --disable-pip-version-check \
      -r "$VENV/requirements.intel" intel-tensorflow==1.15.2
  elif [ "$FLAVOR" = stock ]; then
    "$VENV_PY" -m pip uninstall -q -y intel-tensorflow >/dev/null 2>&1 || true
    "$VENV_PY" -m pip install -q --disable-pip-version-check -r "$REQ"
  else
    # tf2 <-> tf2-gpu: tensorflow-cpu and tensorflow both provide the module.
    OTHER=tensorflow; [ "$FLAVOR" = tf2-gpu ] && OTHER=tensorflow-cpu
    "$VENV_PY" -m pip uninstall -q -y "$OTHER" >/dev/null 2>&1 || true
    "$VENV_PY" -m pip install -q --disable-pip-version-check -r "$REQ"
  fi
  "$VENV_PY" -c 'import tensorflow, tensorflow_datasets' 2>/dev/null ||
    { echo "setup.sh: TensorFlow failed to import in $VENV" >&2; exit 1; }
  echo "$WANT" > "$STAMP"
fi

# --- Bazel ------------------------------------------------------------------
if [ "$VENV" = "$ROOT/.venv" ] && [ "$PY_WANT" = 3.7 ]; then
  BAZELRC_LOCAL="build --python_path=$VENV_PY"
  if [ "$(cat "$ROOT/.bazelrc.local" 2>/dev/null)" != "$BAZELRC_LOCAL" ]; then
    echo "$BAZELRC_LOCAL" > "$ROOT/.bazelrc.local"
  fi
fi
say "ready: $("$VENV_PY" --version 2>&1), $("$VENV_PY" -c 'import tensorflow as tf; print("TensorFlow", tf.__version__)' 2>/dev/null)"
