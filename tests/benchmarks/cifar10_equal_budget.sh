#!/usr/bin/env bash
# Every method on CIFAR-10 under one identical training budget, on one GPU.
# Usage: tests/benchmarks/cifar10_equal_budget.sh [ARCHIVE] [BUDGET] [RESULTS] [COPY_RECORDS_TO] [METHODS...]
# ARCHIVE is CIFAR-10 as an image folder .tar.gz (train/ and test/ class folders); METHODS
# defaults to "kmeans cc tcc vtcc cueco"; extra `clusterbench run` flags come from $EXTRA.
set -u
DATA=${1:-.data/cifar10_jpeg_imagefolder.tar.gz}
BUDGET=${2:-minutes=1}
RES=${3:-results/cifar10}
COPY=${4:-}
shift 4 2>/dev/null || shift $#
METHODS=${*:-kmeans cc tcc vtcc cueco}
D="imagefolder[path=$DATA]"
copy_records() {
  [ -n "$COPY" ] || return 0
  mkdir -p "$COPY"
  for f in "$RES"/runs/*/record.json; do [ -f "$f" ] && cp "$f" "$COPY/$(basename "$(dirname "$f")").json"; done
  return 0
}
for m in $METHODS; do
  if [ "$m" = kmeans ]; then
    clusterbench run --methods "kmeans[nredo=3]" --datasets "$D" --seeds 0 --results "$RES" --quiet
  else
    protocols="head kmeans"
    [ "$m" = cueco ] && protocols="head kmeans linear"  # CueCo's paper evaluates by linear probe
    clusterbench run --methods "$m[preset=fast]" --datasets "$D" --seeds 0 --budget "$BUDGET" \
      --protocols $protocols --results "$RES" --quiet ${EXTRA:-}
  fi
  copy_records
done
