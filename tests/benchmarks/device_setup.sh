#!/usr/bin/env bash
# Install clusterbench on the device machine (torch there, no network): every carried wheel of
# .whl/ (faiss-cpu, submitit, cloudpickle) into /tmp/site, as the device README says, and this
# checkout as an editable package.  Callers then `export PYTHONPATH=/tmp/site`.
# Run from the repository root: tests/benchmarks/device_setup.sh
set -eu
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-deps --no-build-isolation -e .
