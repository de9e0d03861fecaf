#!/usr/bin/env bash
# One command for a CUDA machine (torch + onnxruntime present, no package index): measures model-only
# latency eager vs torch.compile (CUDA graphs) vs ONNX Runtime's CUDA execution provider (and
# TensorRT when installed), then the live pipeline's speech end -> score p95 and Whisper's share,
# and writes one JSON. Each missing piece is skipped with one sentence in that JSON. Under 8 minutes.
#
#   scripts/gpu_check.sh [OUT.json]            # default gpu_check.json
#   scripts/gpu_check.sh --dry-run [OUT.json]  # the same plan on the CPU, a few iterations (tested)
set -u
cd "$(dirname "$0")/.."
REPO="$(pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY="$(command -v python3 || command -v python)"; fi
fi
# Not installed (the CUDA machine has no package index): import moodlens from this tree through a
# shim folder of links, the way setup.py maps the five top folders to moodlens.<folder>.
if ! "$PY" -c "import moodlens.realtime" 2>/dev/null; then
  SHIM="$(mktemp -d)"
  mkdir -p "$SHIM/moodlens"
  for top in core models realtime train configs; do ln -s "$REPO/$top" "$SHIM/moodlens/$top"; done
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec timeout 470 "$PY" "$REPO/scripts/gpu_check.py" "$@"
