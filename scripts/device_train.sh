#!/usr/bin/env bash
# Trains the demo codec v2 on one GPU in about 6 minutes from the shards carried with the working tree
# (device_data/codec2, <= 60 MiB: make them here with
#   python scripts/device_train.py --prepare SHARD_FOLDER [...]).
# Writes codec_v2.safetensors, log.csv, summary.json and stdout.log to $OUT (default runs/device).
# Needs only torch, numpy, safetensors, tqdm. `--dry-run`: CPU, tiny model, under 2 minutes.
# The demo LM's recipe joins here once the codec's tokens exist.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/device}"
mkdir -p "$OUT"
export PYTHONPATH=.
PY="${PYTHON:-python}"
"$PY" scripts/device_train.py --out "$OUT" "$@" 2>&1 | tee "$OUT/stdout.log"
