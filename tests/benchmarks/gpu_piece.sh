#!/usr/bin/env bash
# One piece of a grid on the device machine: install, run the cells named by the arguments into
# R (stopped at LIMIT seconds), then pack R's records (no checkpoints) into OUT/piece.tgz.
# Usage: tests/benchmarks/gpu_piece.sh OUT LIMIT CLUSTERBENCH-RUN-ARGS...
set -u
OUT=$1 LIMIT=$2; shift 2
bash tests/benchmarks/device_setup.sh || exit 1
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p R
PYTHONUNBUFFERED=1 timeout "$LIMIT" clusterbench run --results R --quiet "$@" 2>&1 | tee "$OUT/log.txt"
echo "exit ${PIPESTATUS[0]}" | tee -a "$OUT/log.txt"
tar --exclude='*.pt' -czf "$OUT/piece.tgz" R
