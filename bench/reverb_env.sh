#!/usr/bin/env bash
# Builds .venv-reverb: DeepMind Reverb 0.14 with TensorFlow 2.15, the reference the
# replay benchmark measures side by side. Kept apart from .venv (TensorFlow and
# PyTorch pin different libraries). uv's cache keeps the downloads for later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if .venv-reverb/bin/python -c "import reverb" 2>/dev/null; then exit 0; fi
python3 -m venv .venv-reverb
.venv/bin/uv pip install --python .venv-reverb/bin/python "dm-reverb==0.14.0" "tensorflow==2.15.1" \
  || echo "reverb_env: could not install dm-reverb; the benchmark will report rlrings alone" >&2
