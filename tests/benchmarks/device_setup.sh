#!/usr/bin/env bash
# Install clusterbench on a machine that has torch but no network: faiss from a carried wheel.
# Run from the repository root: tests/benchmarks/device_setup.sh
set -eu
python3 -m pip install -q --no-deps --no-index .whl/faiss_cpu-*.whl 2>&1 | grep -v "WARNING: Running pip" || true
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "WARNING: Running pip" || true
python3 -c "import torch, faiss, clusterbench; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
