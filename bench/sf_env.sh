#!/usr/bin/env bash
# Builds .venv-sf: Sample Factory 2.1.1 (APPO), the reference bench.atari measures side by side.
# It pins gymnasium 0.29; its EnvPool Atari example (sf_examples.envpool) brings its own ROMs.
# PyTorch is installed first so uv reuses the wheel rlrings' .venv already cached.
set -euo pipefail
cd "$(dirname "$0")/.."
if .venv-sf/bin/python -c "import sample_factory, envpool, shimmy" 2>/dev/null; then exit 0; fi
python3 -m venv .venv-sf
.venv/bin/uv pip install --python .venv-sf/bin/python "torch>=2.15,<3" \
  && .venv/bin/uv pip install --python .venv-sf/bin/python "sample-factory==2.1.1" "gymnasium==0.29.1" \
  || echo "sf_env: could not install sample-factory; bench.atari will report rlrings alone" >&2
# sample-factory 2.1.1 needs the EnvPool of its day (1.x's vector env breaks gymnasium 0.29's close)
# and shimmy for the gym 0.26 spaces that EnvPool 0.8 hands it
.venv/bin/uv pip install --python .venv-sf/bin/python "envpool==0.8.4" "shimmy[gym-v26]==1.3.0" \
  || echo "sf_env: could not install envpool 0.8.4; bench.atari will report rlrings alone" >&2
