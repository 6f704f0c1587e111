#!/usr/bin/env bash
# Builds .venv-sb3: Stable-Baselines3 (SAC), the reference bench.continuous measures side by side,
# with the same Gymnasium MuJoCo and Box2D envs. PyTorch is installed first so uv reuses the wheel
# rlrings' .venv already cached.
set -euo pipefail
cd "$(dirname "$0")/.."
if .venv-sb3/bin/python -c "import stable_baselines3, mujoco" 2>/dev/null; then exit 0; fi
python3 -m venv .venv-sb3
.venv/bin/uv pip install --python .venv-sb3/bin/python "torch>=2.15,<3" \
  && .venv/bin/uv pip install --python .venv-sb3/bin/python "stable-baselines3==2.9.2" "gymnasium[mujoco,box2d]>=1.4,<2" \
  || echo "sb3_env: could not install stable-baselines3; the benchmark will report rlrings alone" >&2
