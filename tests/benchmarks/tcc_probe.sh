#!/usr/bin/env bash
# TCC's candidate switches for short runs (methods/tcc.py, "Candidate switches") on CIFAR-10, one GPU:
# today's fast preset, one cell per candidate and the proposed combination; seed 0, 30 epochs, head and
# kmeans, all in one `clusterbench run`.  Records in OUT/probe, the tables in OUT/probe.md, one line per
# record (metrics, last loss terms, graph/compile status) in OUT/probe.txt.
# Usage: tests/benchmarks/tcc_probe.sh OUT [CELL...]
#   CELL (default: all six, in this order):
#   fast      tcc[preset=fast]: the baseline (head 0.235 / k-means 0.339 at 100 epochs)
#   scale     + assign_scale=10          logits 10 <f, C_k> (SwAV's temperature 0.1)
#   fraction  + gumbel_noise_fraction=0.25   Gumbel noise off after the code's quarter of the run
#   mlp       + projector=mlp            MoCo v2's 2-layer head
#   splits    + bn_splits=8              shuffle-BN in 8 groups (MoCo's CIFAR-10 demo)
#   combo     all four + tau_cluster=0.2 the proposed fast
#   fixed     scale + train_centres=false   the centres kept at the simplex, as the TF code runs (not in the default list)
#   combofixed  combo + train_centres=false (not in the default list)
# An H100 trains a cell in ~80 s (TCC fast: 22.7k img/s; shuffle-BN's split BatchNorm costs more), plus
# compile and evaluation: six cells may not fit one 10-minute device call; run them in two
# (`... OUT fast scale fraction`, then `... OUT mlp splits combo`: a done cell is not trained again,
# and probe.md covers all of OUT/probe).
# A dry run on the CPU: TCC_PROBE_DATA="synthetic[n=64,size=16]" TCC_PROBE_BUDGET=steps=2 \
#   TCC_PROBE_FLAGS="--device cpu" tests/benchmarks/tcc_probe.sh /tmp/probe
# A CPU proxy (scikit-learn's digits, 40 epochs = 160 steps, ~12 min a cell on 2 cores; the
# records of 2026-12-07 are in results/checks/2026-12-07-cpu-tcc-digits/):
#   TCC_PROBE_DATA=digits TCC_PROBE_BUDGET=epochs=40 TCC_PROBE_FLAGS="--device cpu" \
#   tests/benchmarks/tcc_probe.sh OUT fast combo scale
set -u
OUT=$1; shift
D=${TCC_PROBE_DATA:-"cifar10[path=.data/cifar10_jpeg_imagefolder.tar.gz]"}
BUDGET=${TCC_PROBE_BUDGET:-epochs=30}
declare -A CELLS=(
  [fast]="tcc[preset=fast]"
  [scale]="tcc[preset=fast,assign_scale=10]"
  [fraction]="tcc[preset=fast,gumbel_noise_fraction=0.25]"
  [mlp]="tcc[preset=fast,projector=mlp]"
  [splits]="tcc[preset=fast,bn_splits=8]"
  [combo]="tcc[preset=fast,assign_scale=10,gumbel_noise_fraction=0.25,projector=mlp,bn_splits=8,tau_cluster=0.2]"
  [fixed]="tcc[preset=fast,assign_scale=10,train_centres=false]"
  [combofixed]="tcc[preset=fast,assign_scale=10,gumbel_noise_fraction=0.25,projector=mlp,bn_splits=8,tau_cluster=0.2,train_centres=false]"
)
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(fast scale fraction mlp splits combo)
METHODS=()
for n in "${NAMES[@]}"; do
  [ -n "${CELLS[$n]:-}" ] || { echo "unknown cell $n (cells: ${!CELLS[*]})" >&2; exit 2; }
  METHODS+=("${CELLS[$n]}")
done
mkdir -p "$OUT"
# shellcheck disable=SC2086  # TCC_PROBE_FLAGS is a list of flags
clusterbench run --methods "${METHODS[@]}" --datasets "$D" --seeds 0 --budget "$BUDGET" \
  --protocols head kmeans --results "$OUT/probe" --quiet ${TCC_PROBE_FLAGS:-}
echo "run exit $?"
clusterbench report --results "$OUT/probe" > "$OUT/probe.md"
python3 - "$OUT/probe" > "$OUT/probe.txt" <<'PY'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/runs/*/record.json")):
    r = json.load(open(f)); p = r.get("protocols") or {}; c = r.get("cost") or {}
    last = (r.get("curve") or [{}])[-1]; d = r.get("stats") or {}
    print(r["method_spec"], r["status"], (r.get("error") or {}).get("reason", "")[:160],
          {k: {m: round(v, 4) for m, v in v_.items() if isinstance(v, float)} for k, v_ in p.items()},
          {k: round(v, 4) for k, v in last.items() if k.startswith("loss")},
          "img/s=%.0f graphs=%s compiled=%s" % (c.get("train_images_per_s") or 0, d.get("cuda_graphs"),
                                              d.get("compiled_model")))
PY
cat "$OUT/probe.txt"
