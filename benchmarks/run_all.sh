#!/usr/bin/env bash
# Run every CPU benchmark (each prints ratios measured side by side in one run and writes its section
# under docs/benchmarks/), then gather the sections into docs/benchmarks.md. `make bench` calls this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
[ -f "$TCMALLOC" ] && export LD_PRELOAD="$TCMALLOC${LD_PRELOAD:+:$LD_PRELOAD}"
"$PY" benchmarks/bench_cache.py
"$PY" benchmarks/bench_models.py --markdown docs/benchmarks/models.md
"$PY" benchmarks/bench_train.py
"$PY" benchmarks/bench_train_step.py --markdown docs/benchmarks/train_step.md
"$PY" benchmarks/bench_inference.py --markdown docs/benchmarks/inference.md
"$PY" benchmarks/bench_scope.py --markdown docs/benchmarks/scope.md
"$PY" benchmarks/bench_image_memory.py
"$PY" benchmarks/bench_service.py
bash benchmarks/bench_dicom_node.sh
bash benchmarks/collect.sh
