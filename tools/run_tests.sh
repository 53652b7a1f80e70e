#!/usr/bin/env bash
# Sets the machine up (idempotent) and runs the whole test suite on 2 workers.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k splits`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest tests -n 2 -q -p no:cacheprovider "$@"
