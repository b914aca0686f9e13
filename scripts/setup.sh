#!/usr/bin/env bash
# Set up msnas-graph on a fresh Debian/Ubuntu machine: graphviz's `dot`, PyTorch (CPU wheel
# pinned for CI; bring your own CUDA build otherwise) and the package with its dev extras.
# Idempotent: re-running it is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dot >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq graphviz >/dev/null
fi

PY="${PYTHON:-python3}"
# The package accepts any torch 2.x; CI pins the CPU build that is on disk here.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
"$PY" -m pip install -q -e ".[dev]"
echo "msnas-graph set up: $("$PY" -m pip show msnas-graph 2>/dev/null | grep ^Version)"
