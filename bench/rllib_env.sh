#!/usr/bin/env bash
# Builds .venv-rllib: Ray RLlib (PPO), the reference the mesh benchmark measures side by
# side. PyTorch is installed first so uv reuses the wheel rlrings' .venv already cached.
set -euo pipefail
cd "$(dirname "$0")/.."
if .venv-rllib/bin/python -c "import ray.rllib" 2>/dev/null; then exit 0; fi
python3 -m venv .venv-rllib
.venv/bin/uv pip install --python .venv-rllib/bin/python "torch>=2.15,<3" \
  && .venv/bin/uv pip install --python .venv-rllib/bin/python "ray[rllib]==2.60.0" \
  || echo "rllib_env: could not install ray[rllib]; the benchmark will report rlrings alone" >&2
