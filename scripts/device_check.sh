#!/usr/bin/env bash
# GPU serving check: batch-1 p50/p99, parity and fresh noise of every GPU path (scripts/device_check.py).
#
# usage: scripts/device_check.sh [--policy P.onnx] [--calls N]
# env:   PYTHON  the interpreter (default: .venv/bin/python if present, else python3: on a GPU
#                machine, the one with its PyTorch and, optionally, onnxruntime-gpu)
# Without a CUDA GPU it prints one line and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" scripts/device_check.py "$@"
