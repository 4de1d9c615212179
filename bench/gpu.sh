#!/usr/bin/env bash
# GPU benchmark (no Kafka, no Redis): the model alone in bf16/fp16 from pinned memory, pure inference in the
# worker's classifier, and the worker's real loop with an in-process source. Expected 1-3 minutes on an H100;
# capped at 7m50s. Writes gpu_results.json and gpu_results.md to $OUT (else bench/out) and prints a table.
#
#   SENTIMENT_MODEL_DIR=models/minilm-mixed SENTIMENT_DATASETS=../shared/datasets bench/gpu.sh [options]
#
# Options go to `python -m bench.gpu` (see --help), e.g. --pipeline-batches 256,1024 --n 100000.
# Needs on the Python path: torch (CUDA), transformers, tokenizers, numpy, pydantic, redis, prometheus-client
# (the worker's imports; kafka-python, pydantic-settings and a GPU-side Redis are not needed).
# PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PY" - <<'PYEOF'
import importlib.util, sys
need = ("torch", "transformers", "tokenizers", "numpy", "pydantic", "redis", "prometheus_client")
missing = [m for m in need if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"bench/gpu.sh: error: missing Python packages: {', '.join(missing)}")
PYEOF
exec timeout --signal=INT --kill-after=10 470 "$PY" -m bench.gpu "$@"
