"""Test data builders."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from rlrings.services.replay.config import TableConfig

FRAME_SIGNATURE = {
    "obs": {"dtype": "uint8", "shape": [8, 8, 3]},
    "action": {"dtype": "int32"},
    "reward": {"dtype": "float32"},
}


def table(name: str = "t", **overrides) -> dict:
    """A table config as a plain dict, as it would appear in a config file."""
    return {"name": name, "signature": FRAME_SIGNATURE, "max_size": 1000, **overrides}


def table_config(name: str = "t", **overrides) -> TableConfig:
    return TableConfig(**table(name, **overrides))


def frames(steps: int, start: int = 0) -> dict[str, np.ndarray]:
    """A chunk for FRAME_SIGNATURE whose action column counts steps from ``start``."""
    rng = np.random.default_rng(start)
    return {
        "obs": rng.integers(0, 256, size=(steps, 8, 8, 3), dtype=np.uint8),
        "action": np.arange(start, start + steps, dtype=np.int32),
        "reward": np.full(steps, 0.5, dtype=np.float32),
    }


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(language: str, containing: str) -> str:
    """The one fenced block of ``language`` in the README that contains ``containing``."""
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


def ring_backends():
    """The learner ring's backends to test: torch always; horovod where it is installed. `make test`
    sets RLRINGS_REQUIRE_HOROVOD=1, so there a missing Horovod fails instead of skipping."""
    import os

    import pytest

    from rlrings.core.ring import HOROVOD_HINT, horovod_available

    required = os.environ.get("RLRINGS_REQUIRE_HOROVOD") == "1"
    skip = pytest.mark.skipif(not horovod_available() and not required, reason=HOROVOD_HINT)
    return ["torch", pytest.param("horovod", marks=skip)]
