"""The learner's update rate on its device: IMPALA on Atari-shaped batches, Nature CNN and IMPALA
ResNet torsos, batches of 32x20 and 256x20 steps, fed by the learner's own prefetcher.

This is the device check prepared for a machine with a GPU (the ``device`` tool, when one is
lent): one short script, every figure in one JSON. On the CPU it measures the same loop, which
is what the 2-core development machine's mesh runs. Batches are made once on the host, like
replay's, and go through :class:`DeviceBatches` (pinned memory and a side stream on CUDA), so
the figure includes the copy the learner really makes.

    python -m bench.learner_device [--device cuda] [--updates 50] [--mixed-precision]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from rlrings import algorithms
from rlrings.algorithms.impala import ImpalaConfig
from rlrings.core.models import build_model
from rlrings.core.spaces import Box, Discrete
from rlrings.envs import EnvSpec
from rlrings.services.learner.prefetch import DeviceBatches

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
ATARI = EnvSpec("ALE/Pong-v5", Box((84, 84, 4), "uint8", (0.0,), (255.0,)), Discrete(6))


class HostBatch:
    """What replay's sampler yields: numpy columns [B, T+1, ...], weights, keys, versions."""

    def __init__(self, batch: int, unroll: int, rng: np.random.Generator):
        steps = unroll + 1
        self.columns = {
            "obs": rng.integers(0, 256, (batch, steps, 84, 84, 4), dtype=np.uint8),
            "action": rng.integers(0, 6, (batch, steps), dtype=np.int32),
            "reward": rng.standard_normal((batch, steps), dtype=np.float32),
            "terminated": rng.random((batch, steps)) < 0.01,
            "truncated": np.zeros((batch, steps), bool),
            "logp": np.full((batch, steps), -np.log(6), np.float32),
            "final_obs": np.zeros((batch, steps, 84, 84, 4), np.uint8),
        }
        self.importance_weights = np.ones(batch, np.float32)
        self.keys = np.arange(batch)
        self.policy_versions = np.zeros(batch, np.int64)


def measure(architecture: str, batch: int, device: torch.device, updates: int, mixed: bool) -> dict:
    config = ImpalaConfig(unroll_length=20)
    algorithm = algorithms.get("impala")
    spec = algorithm.model_spec(ATARI, architecture, config)
    model = build_model(spec).to(device)
    learning = algorithm.learning(config, spec, model)
    host = [HostBatch(batch, 20, np.random.default_rng(i)) for i in range(2)]
    source = (host[i % 2] for i in range(updates + 3))
    stats = {}
    with torch.autocast(device.type, torch.bfloat16, enabled=mixed):
        batches = iter(DeviceBatches(source, device))
        for _ in range(3):  # warm-up: kernels chosen, allocator filled
            learning.update(next(batches).columns, None)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(updates):
            stats = learning.update(next(batches).columns, None).stats
        if stats:
            float(next(iter(stats.values())))  # the one read of the stats, which waits for the device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return {
        "architecture": architecture,
        "batch": f"{batch}x20",
        "updates_per_second": updates / seconds,
        "samples_per_second": updates * batch * 20 / seconds,
        "frames_per_second": updates * batch * 20 * 4 / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--batches", default="32,256")
    parser.add_argument("--out", type=Path, default=RESULTS / "learner_device.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for architecture in ("nature", "impala"):
        for batch in (int(b) for b in args.batches.split(",")):
            row = measure(architecture, batch, device, args.updates, args.mixed_precision)
            print(json.dumps(row), flush=True)
            rows.append(row)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": name, "mixed_precision": args.mixed_precision, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
