#!/usr/bin/env bash
# The device machine's one install and environment (torch there, no network).  Source it from the
# repository root: `source tests/benchmarks/device_setup.sh || exit 1`.  It
# - installs every carried wheel of .whl/ (faiss-cpu, submitit, cloudpickle) into /tmp/site, as the
#   device README says, and this checkout as an editable package; exports PYTHONPATH=/tmp/site;
# - points torch.compile's cache (TORCHINDUCTOR_CACHE_DIR; Triton's kernels go under it too) at
#   /tmp/inductor-cache, filled from .cache/compile-cache.tgz where one was carried.  A warm cache
#   cuts a cell's setup (compile, outside the training clock) from tens of seconds to a few (on the
#   CPU, cc[preset=smoke] --compile: 42.9 s cold, 4.2 s warm, same run id and numbers); a cache
#   that does not match (other torch, other GPU) is simply not used.
# `pack_compile_cache OUT` writes the cache to OUT/compile-cache.tgz (skipped over 16 MiB, the
# device's limit per file); back here, copy it to .cache/ and carry .cache next time.
# Sourcing it again on the same machine (a later call) only sets the environment again.
export PYTHONPATH=/tmp/site TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
if [ ! -f /tmp/site/.clusterbench-device-setup ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && python3 -m pip install -q --no-deps --no-build-isolation -e . || return 1
  mkdir -p "$TORCHINDUCTOR_CACHE_DIR"
  if [ -f .cache/compile-cache.tgz ]; then
    tar -xzf .cache/compile-cache.tgz -C "$TORCHINDUCTOR_CACHE_DIR" \
      && echo "compile cache: $(du -sh "$TORCHINDUCTOR_CACHE_DIR" | cut -f1) unpacked"
  fi
  touch /tmp/site/.clusterbench-device-setup
fi
pack_compile_cache() {  # OUT: the cache as it stands, for the next machine
  tar -czf "$1/compile-cache.tgz" -C "$TORCHINDUCTOR_CACHE_DIR" . 2>/dev/null || { rm -f "$1/compile-cache.tgz"; return 0; }
  if [ "$(stat -c %s "$1/compile-cache.tgz")" -gt 16777216 ]; then
    echo "compile cache over 16 MiB: not packed"; rm -f "$1/compile-cache.tgz"
  fi
}
