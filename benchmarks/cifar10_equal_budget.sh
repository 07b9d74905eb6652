#!/usr/bin/env bash
# Every method on CIFAR-10 under one identical training budget, on one GPU.
# Usage: benchmarks/cifar10_equal_budget.sh [ARCHIVE] [BUDGET] [RESULTS] [COPY_RECORDS_TO]
# ARCHIVE is CIFAR-10 as an image folder .tar.gz (train/ and test/ class folders).
set -u
DATA=${1:-.data/cifar10_jpeg_imagefolder.tar.gz}
BUDGET=${2:-minutes=1}
RES=${3:-results/cifar10}
COPY=${4:-}
D="imagefolder[path=$DATA]"
copy_records() {
  [ -n "$COPY" ] || return 0
  mkdir -p "$COPY"
  for f in "$RES"/runs/*/record.json; do cp "$f" "$COPY/$(basename "$(dirname "$f")").json"; done
}
clusterbench run --methods "kmeans[nredo=3]" --datasets "$D" --seeds 0 --results "$RES"; copy_records
for m in "cc[preset=fast]" "tcc[preset=fast]" "vtcc[preset=fast]" "cueco[preset=fast]"; do
  protocols="head kmeans"
  case $m in cueco*) protocols="head kmeans linear" ;; esac  # CueCo's paper evaluates by linear probe
  clusterbench run --methods "$m" --datasets "$D" --seeds 0 --budget "$BUDGET" --protocols $protocols \
    --results "$RES"
  copy_records
done
