#!/usr/bin/env bash
# The throughput benchmark of issue 6 on one GPU: every deep method at its small-image
# configuration (32x32, batch 256 and 512), CC at the paper's ResNet-34 224x224 batch 256,
# inference, metrics and faiss vs scikit-learn k-means (synthetic and trained-CC features).
# Usage: tests/benchmarks/gpu_bench.sh OUTDIR [METHODS...]   (default: cc tcc vtcc cueco)
# Needs the CIFAR-10 image-folder archive at .data/cifar10_jpeg_imagefolder.tar.gz.
set -u
OUT=${1:-results/bench}; shift || true
METHODS=${*:-cc tcc vtcc cueco}
mkdir -p "$OUT"
source tests/benchmarks/device_setup.sh || exit 1  # the one device install and environment
D="imagefolder[path=.data/cifar10_jpeg_imagefolder.tar.gz]"
LOG="$OUT/bench.log"
export PYTHONFAULTHANDLER=1 PYTHONUNBUFFERED=1
for m in $METHODS; do
  extra=""; [ "$m" = cc ] && extra="--kmeans"
  timeout -s ABRT 240 clusterbench bench --dataset "$D" --methods "$m[preset=fast]" --image-sizes 32 \
    --batch-sizes 256 512 --inference $extra -o "$OUT/bench32-$m.json" 2>&1 | grep -v "^frame #" | tee -a "$LOG"
done
case " $METHODS " in *" cc "*)
  timeout -s ABRT 200 clusterbench bench --dataset "$D" --methods cc --image-sizes 224 --batch-sizes 256 --inference \
    --steps 15 -o "$OUT/bench224-cc.json" 2>&1 | grep -v "^frame #" | tee -a "$LOG" ;;
esac
