#!/usr/bin/env bash
# One prepared GPU check for a short window (<= 5 minutes): correctness first, then speed.
#
#   bash benchmarks/device_check.sh [--out DIR] [--dry-run] [--budget S] [--phases ...]
#
# Runs from the tree (PYTHONPATH=., no install) with ${PYTHON:-python3}; writes
# ${OUT:-device_check_out}/device_check.json after every phase (and realtime.py's small/base JSON +
# PNG). --dry-run runs every phase on the CPU at tiny shapes. Phases and their JSON:
# benchmarks/device_check.py. The seeded full-size golden is read from shared/golden (carry a copy:
# docs/benchmarks.md, "GPU check").
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/device_check.py "$@"
