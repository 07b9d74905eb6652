#!/usr/bin/env bash
# The GPU checks the issues ask for, on one GPU; each writes its records and a summary under OUT.
# Usage: tests/benchmarks/gpu_checks.sh OUT CHECK...   CHECK: clock | failures | workers | torchrun
#   clock     issue 12: cc and vtcc fast presets on CIFAR-10 under minutes=2 in one invocation
#   failures  issue 18: an absurd batch (OOM) and lr=1e3 (NaN) are failed cells, the grid goes on
#   workers   issue 14: --workers 1 --gpus 0 gives the records of a plain run
#   torchrun  issue 14: a 1-process torchrun run gives the records of a plain run
#   tcc-cc    issue 13: TCC and CC fast presets on CIFAR-10, 100 epochs, head and kmeans (TCC >= CC?)
set -u
OUT=$1; shift
source tests/benchmarks/device_setup.sh || exit 1  # the one device install and environment
D="cifar10[path=.data/cifar10_jpeg_imagefolder.tar.gz]"
S="synthetic[n=4096,size=32]"
summary() {  # run id, status, reason, setup/train seconds, metrics of every record under $1
  python3 - "$1" <<'PY'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/runs/*/record.json")):
    r = json.load(open(f)); c = r.get("cost") or {}; p = r.get("protocols") or {}
    print(r["run_id"], r["status"], (r.get("error") or {}).get("reason", "")[:160],
          "train_s=%s setup_s=%s img/s=%s" % (c.get("train_seconds"), c.get("setup_seconds"), c.get("train_images_per_s")),
          {k: {m: round(v, 4) for m, v in d.items() if isinstance(v, float)} for k, d in p.items()},
          (r.get("labels") or {}).get("sha256", "")[:12])
PY
}
for check in "$@"; do
  case $check in
    clock)
      clusterbench run --methods "cc[preset=fast]" "vtcc[preset=fast]" --datasets "$D" --seeds 0 --budget minutes=2 \
        --protocols head kmeans --results "$OUT/clock" --quiet
      clusterbench report --results "$OUT/clock" --paper > "$OUT/clock.md"
      summary "$OUT/clock" > "$OUT/clock.txt" ;;
    failures)
      clusterbench run --methods "cc[preset=fast,batch_size=60000,image_size=224]" "cc[preset=fast,lr=1000]" kmeans \
        --datasets "$S" --seeds 0 --budget steps=300 --results "$OUT/failures" --quiet --no-compile; echo "exit $?"
      summary "$OUT/failures" > "$OUT/failures.txt" ;;
    workers)
      G=(--methods "cc[preset=fast]" --datasets "$S" --seeds 0 --budget steps=200 --quiet --no-compile)
      clusterbench run "${G[@]}" --results "$OUT/plain"
      clusterbench run "${G[@]}" --results "$OUT/workers" --workers 1 --gpus 0
      clusterbench run "${G[@]}" --results "$OUT/plain2"
      for d in plain workers plain2; do echo "== $d"; summary "$OUT/$d"; done > "$OUT/workers.txt" ;;
    torchrun)
      G=(--methods "cc[preset=fast]" --datasets "$S" --seeds 0 --budget steps=200 --quiet --no-compile)
      [ -d "$OUT/plain" ] || clusterbench run "${G[@]}" --results "$OUT/plain"
      torchrun --standalone --nproc-per-node 1 -m clusterbench run "${G[@]}" --results "$OUT/torchrun"
      for d in plain torchrun; do echo "== $d"; summary "$OUT/$d"; done > "$OUT/torchrun.txt" ;;
    tcc-cc)
      clusterbench run --methods "tcc[preset=fast]" "cc[preset=fast]" --datasets "$D" --seeds 0 --budget epochs=100 \
        --protocols head kmeans --results "$OUT/i13" --quiet
      clusterbench report --results "$OUT/i13" --paper > "$OUT/i13.md"
      summary "$OUT/i13" > "$OUT/i13.txt" ;;
    *) echo "unknown check $check" >&2; exit 2 ;;
  esac
done
