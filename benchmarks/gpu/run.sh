#!/usr/bin/env bash
# The GPU benchmark in one command, under 8 minutes on one H100: the CUDA tests, then the released-size step
# benchmark (bench.py), one JSON in benchmarks/results/gpu_<gpu>.json.
#   bash benchmarks/gpu/run.sh            # on the GPU machine
#   bash benchmarks/gpu/run.sh --dry-run  # tiny sizes on the CPU: the same code paths, for CI
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
if [ "${1:-}" = "--dry-run" ]; then
    shift
    exec "$PY" benchmarks/gpu/bench.py --dry-run "$@"
fi
junit=$(mktemp --suffix=.xml)
# the tests that need CUDA (they skip on CPU): offload and fp8 on the device, attention backends, compile
timeout 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_memory.py tests/test_attention.py tests/test_compile.py \
    --junitxml="$junit" || true
exec timeout 300 "$PY" benchmarks/gpu/bench.py --tests-junit "$junit" "$@"
