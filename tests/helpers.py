"""Test data builders."""

from __future__ import annotations

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
