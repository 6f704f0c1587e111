"""The benchmark's items, shared by the rlrings and Reverb sides (numpy only).

One item: a 64x64x3 uint8 frame (a moving square over light noise, so it
compresses like a game frame rather than like random bytes), a float32
reward and an int32 action.
"""

from __future__ import annotations

import numpy as np

FRAME_SHAPE = (64, 64, 3)
ITEM_BYTES = int(np.prod(FRAME_SHAPE)) + 4 + 4


def chunks(items: int, chunk_length: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``items`` steps as columnar chunks of ``chunk_length`` (generated up front)."""
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, items, chunk_length):
        n = min(chunk_length, items - start)
        obs = rng.integers(0, 12, size=(n, *FRAME_SHAPE), dtype=np.uint8)
        for i in range(n):
            x = (start + i) % 56
            obs[i, 20:36, x : x + 8] = (250, 200, 40)
        out.append(
            {
                "obs": obs,
                "reward": rng.random(n, dtype=np.float32),
                "action": rng.integers(0, 18, size=n, dtype=np.int32),
            }
        )
    return out
