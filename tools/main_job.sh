#!/usr/bin/env bash
# The main job on a fresh machine: set up, prepare the offline Fashion-MNIST
# (Debian's copy) with a 100-label split, train SESEMI, print the evaluation
# table and export a SavedModel. About 5 minutes on 2 quiet CPU cores.
#
# Outputs (override with OUT=...): $OUT/data (TFRecords and the split),
# $OUT/runs/sesemi (checkpoints, events, params.json, eval_results.json),
# $OUT/export/sesemi (the SavedModel). Re-running resumes and re-exports.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-out}
SPLIT=fashion_mnist.1@100-5000
bash setup.sh
PY=.venv/bin/python
if [ ! -f "$OUT/data/fashion_mnist/dataset_info.json" ]; then
  $PY launch/prepare_data.py --dataset=fashion_mnist \
    --source_dir=/usr/share/datasets/fashion-mnist --data_dir="$OUT/data"
fi
if [ ! -f "$OUT/data/fashion_mnist/splits/$SPLIT/split.json" ]; then
  $PY launch/prepare_data.py --data_dir="$OUT/data" --split="$SPLIT"
fi
$PY launch/train.py --flagfile=launch/configs/sesemi_fmnist_quickstart.cfg \
  --data_dir="$OUT/data" --dataset="$SPLIT" --model_dir="$OUT/runs/sesemi" "$@"
$PY launch/eval.py --model_dir="$OUT/runs/sesemi"
$PY launch/export.py --model_dir="$OUT/runs/sesemi" \
  --export_dir="$OUT/export/sesemi" --overwrite
