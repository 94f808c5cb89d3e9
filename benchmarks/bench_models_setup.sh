#!/usr/bin/env bash
# Benchmark-only environment for benchmarks/bench_models.py: CPU torch + timm, and what importing vitlab needs.
# timm is installed without its dependencies: torchvision's wheel does not import beside CPU torch
# here, and the benchmark stubs it (benchmarks/torchvision_stub.py); pillow and numpy are needed by
# timm's import-time data modules.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv-timm}  # another torch: TORCH=torch==2.14.1 VENV=.venv-timm-2.14
TORCH=${TORCH:-torch==2.13.0}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "$TORCH"
"$VENV/bin/pip" install -q --no-deps timm safetensors huggingface_hub pyyaml pillow numpy
# vitlab itself with its dependencies (none of them pulls torchvision; torch is already satisfied), so that
# `import vitlab` keeps working whatever its top-level modules import.
"$VENV/bin/pip" install -q -e ..
"$VENV/bin/python" -c "import sys; sys.path.insert(0, '.'); import torchvision_stub; torchvision_stub.install(); import timm; print('timm', timm.__version__, 'ready in benchmarks/$VENV')"
