#!/usr/bin/env bash
# Trains the demo codec v2 (2.5 min) and then the demo LM (~3 min) on one GPU, about 6 minutes in all, from the
# shards carried with the working tree (device_data/, <= 34 MiB: make them here with
#   python scripts/device_train.py --prepare-lm TOKENISED_FOLDER [...] --prepare SHARD_FOLDER [...]).
# Writes codec_v2.safetensors, codec_log.csv, lm.safetensors (or lm.part1/2.safetensors: join them with
# --join-lm), lm_log.csv, summary.json and stdout.log to $OUT (default runs/device).
# Needs only torch, numpy, safetensors, tqdm. `--phase codec|lm`: one phase. `--dry-run`: CPU, tiny, seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/device}"
mkdir -p "$OUT"
export PYTHONPATH=.
PY="${PYTHON:-python}"
"$PY" scripts/device_train.py --out "$OUT" "$@" 2>&1 | tee "$OUT/stdout.log"
