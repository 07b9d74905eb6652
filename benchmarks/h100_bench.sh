#!/usr/bin/env bash
# The throughput benchmark of issue 6 on one GPU: every deep method at its small-image
# configuration (32x32, batch 256 and 512), CC at the paper's ResNet-34 224x224 batch 256,
# inference, metrics and faiss vs scikit-learn k-means.
# Usage: benchmarks/h100_bench.sh OUTDIR [METHODS...]   (default: cc tcc vtcc cueco)
set -u
OUT=${1:-results/bench}; shift || true
METHODS=${*:-cc tcc vtcc cueco}
mkdir -p "$OUT"
D="imagefolder[path=.data/cifar10_jpeg_imagefolder.tar.gz]"
export PYTHONFAULTHANDLER=1
for m in $METHODS; do
  extra=""; [ "$m" = cc ] && extra="--kmeans"
  timeout -s ABRT 240 clusterbench bench --dataset "$D" --methods "$m[preset=fast]" --image-sizes 32 \
    --batch-sizes 256 512 --inference $extra -o "$OUT/bench32-$m.json" 2>&1 | grep -v "^frame #" | tee "$OUT/bench32-$m.log"
done
case " $METHODS " in *" cc "*)
  timeout -s ABRT 200 clusterbench bench --dataset "$D" --methods cc --image-sizes 224 --batch-sizes 256 --inference \
    --steps 15 -o "$OUT/bench224-cc.json" 2>&1 | grep -v "^frame #" | tee "$OUT/bench224-cc.log"
  timeout -s ABRT 120 clusterbench bench --dataset "$D" --methods "cc[preset=fast]" --batch-sizes 512 --no-pil \
    --profile > "$OUT/profile32-cc.log" 2>&1 ;;
esac
