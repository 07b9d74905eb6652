#!/usr/bin/env bash
# One piece of a grid on the device machine: install, run the cells named by the arguments into
# R (stopped at LIMIT seconds), then pack R's records (no checkpoints) into OUT/piece.tgz and
# torch.compile's cache into OUT/compile-cache.tgz (see device_setup.sh).
# Usage: tests/benchmarks/gpu_piece.sh OUT LIMIT CLUSTERBENCH-RUN-ARGS...
set -u
OUT=$1 LIMIT=$2; shift 2
source tests/benchmarks/device_setup.sh || exit 1  # the one device install and environment
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p R
PYTHONUNBUFFERED=1 timeout "$LIMIT" clusterbench run --results R --quiet "$@" 2>&1 | tee "$OUT/log.txt"
echo "exit ${PIPESTATUS[0]}" | tee -a "$OUT/log.txt"
tar --exclude='*.pt' -czf "$OUT/piece.tgz" R
pack_compile_cache "$OUT"
