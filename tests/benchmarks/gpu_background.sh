#!/usr/bin/env bash
# A grid longer than one device call (10 minutes), on one warm machine: the first call starts
# `clusterbench run --results RESULTS ARGS...` (RESULTS: $CB_RESULTS, default a copy of results/
# outside the checkout, which each call re-sends: the committed cells are skipped there too) in its
# own process session (setsid), which the device keeps running after the call returns, until the
# machine goes back; every call (the first included) then waits up to SECONDS for it and packs
# the cells it has finished so far (record.json and labels.npy of each, done, partial or failed;
# no checkpoints, no unfinished cell) into OUT/piece.tgz as runs/<id>/..., with the log's tail,
# and torch.compile's cache into OUT/compile-cache.tgz (device_setup.sh: copy it to .cache/ here
# and carry .cache, so the next machine compiles from a warm cache).
# Exit 0 while the run goes on or after it succeeded; else non-zero (its exit code is printed).
# ARGS while a run is going are refused with a line (one background run per machine).
# Issue the next call at once: an idle machine goes back after ~30 s, and the run with it.
# Finished cells are records on disk, so what one call packs is never lost; a run killed with its
# machine resumes from the grid on the next machine (finished cells are skipped).
# Usage: tests/benchmarks/gpu_background.sh OUT SECONDS [CLUSTERBENCH-RUN-ARGS...]
#   first call:  ... $OUT 570 --grid results/cifar10-reference.yaml
#   later calls: ... $OUT 590            (no ARGS: only wait and pack)
# A CPU dry run (needs .whl/ as on the device): tests/benchmarks/gpu_background.sh /tmp/o 60 \
#   --methods kmeans "cc[preset=smoke]" --datasets "synthetic[n=64,size=16]" --seeds 3 --budget steps=2 --device cpu
set -u
OUT=$1 WAIT=$2; shift 2
source tests/benchmarks/device_setup.sh || exit 1  # the one device install and environment (once a machine)
JOB=/tmp/clusterbench-bg RESULTS=${CB_RESULTS:-/tmp/clusterbench-bg/results}
alive() { [ -f $JOB/pid ] && kill -0 "$(cat $JOB/pid)" 2>/dev/null \
  && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$(cat $JOB/pid)/stat" 2>/dev/null; }  # a zombie is not running
if [ $# -gt 0 ] && alive; then
  echo "a background run is going (its args: $(cat $JOB/args)); these args are ignored" >&2
elif [ $# -gt 0 ]; then
  mkdir -p $JOB
  [ -e "$RESULTS" ] || cp -a results "$RESULTS" || exit 1
  [ -f $JOB/since ] || touch $JOB/since  # the first start: what any later start finishes is packed too
  rm -f $JOB/rc; printf '%q ' "$@" > $JOB/args
  PYTHONUNBUFFERED=1 RC=$JOB/rc setsid nohup bash -c \
    'clusterbench run --results "$0" --quiet "$@"; echo $? > "$RC"' "$RESULTS" "$@" > $JOB/log.txt 2>&1 < /dev/null &
  echo $! > $JOB/pid
  ! command -v nvidia-smi >/dev/null || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
fi
[ -f $JOB/pid ] || { echo "no background run on this machine (a fresh one: start it again with ARGS)"; exit 2; }
end=$((SECONDS + WAIT))
while alive && [ $SECONDS -lt $end ]; do sleep 5; done
if alive; then echo "still running"; state=0
else state=$(cat $JOB/rc 2>/dev/null || echo "?"); echo "finished: clusterbench run exit $state"; fi
tail -c 4000 $JOB/log.txt > "$OUT/log.txt"
python3 - "$OUT/piece.tgz" "$RESULTS" $JOB/since <<'PY'
import pathlib, sys, tarfile
out, results, since = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]).stat().st_mtime
with tarfile.open(out, "w:gz") as tar:  # the cells finished since the first start: a record exists only then
    for rec in sorted(results.glob("runs/*/record.json")):
        if rec.stat().st_mtime >= since:
            for f in (rec, rec.parent / "labels.npy"):
                if f.is_file():
                    tar.add(f, arcname=str(f.relative_to(results)))
            print("packed", rec.parent.name)
PY
pack_compile_cache "$OUT"
[ "$state" = 0 ]
