"""The learner ring's cost, side by side in one run: one process against two
ranks, on both backends, for a model of about 1M and of about 10M parameters.

Each rank runs the learner's own update path (behaviour cloning's learning
half, ``GradientLearning.step`` through ``rlrings.core.ring``) on in-memory batches, so the figures are the
ring's and not replay's (replay's sampling rate is measured by
``bench.replay``). Every process gets one PyTorch thread, so one process and
each rank of two have the same compute; on this 2-core machine two ranks
fill both cores.

Per configuration: median seconds per update on rank 0, the time that rank
waited for the gradient average (one flat allreduce after backward on
both backends), samples/s (batch x ranks / step time), scaling efficiency
(samples/s of 2 ranks / 2 x one process's) and the ring's per-step overhead
against one process. Configurations alternate for ``--rounds`` rounds and
the medians are compared. Results: bench/results/ring.json and ring.png.

    python -m bench.ring [--batch 256 --rounds 3 --steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OBS, ACTIONS = 256, 16
MODELS = {"1M": 1_000_000, "10M": 10_000_000}


def width_for(parameters: int) -> int:
    """Hidden width of a two-hidden-layer MLP (OBS -> w -> w -> ACTIONS + 1) with about ``parameters``."""
    # w^2 + (OBS + ACTIONS + 1 + 2) w + ACTIONS + 1 = parameters
    b = OBS + ACTIONS + 3
    return int((-b + (b * b + 4 * (parameters - ACTIONS - 1)) ** 0.5) / 2)


def worker(backend: str, parameters: int, batch: int, steps: int, warmup: int, out: str) -> None:
    import torch
    from torch import nn

    from rlrings import algorithms
    from rlrings.core.models import ModelSpec
    from rlrings.core.ring import connect
    from rlrings.core.spaces import Box, Discrete
    from rlrings.ops.processes import finish_process

    torch.set_num_threads(1)
    ring = connect(backend, timeout_seconds=120)

    class Mlp(nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.torso = nn.Sequential(nn.Linear(OBS, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
            self.policy, self.value = nn.Linear(width, ACTIONS), nn.Linear(width, 1)

        def forward(self, obs):
            hidden = self.torso(obs)
            return self.policy(hidden), self.value(hidden).squeeze(-1)

    torch.manual_seed(0)
    model = Mlp(width_for(parameters))
    plug = algorithms.get("bc")
    spec = ModelSpec("mlp", Box((OBS,)), Discrete(ACTIONS), algorithm="bc")
    learner = plug.learning(plug.config(learning_rate=1e-4), spec, model)
    learner.join(ring)
    ring.broadcast_state(learner, 0)
    generator = torch.Generator().manual_seed(ring.rank)
    obs = torch.randn(batch, OBS, generator=generator)
    actions = torch.randint(0, ACTIONS, (batch,), generator=generator)
    for _ in range(warmup):
        learner.behaviour_cloning_step(obs, actions)
    ring.barrier()
    waited = ring.communication_seconds
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        learner.behaviour_cloning_step(obs, actions)
        times.append(time.perf_counter() - start)
    result = {
        "rank": ring.rank,
        "ranks": ring.size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_seconds": statistics.median(times),
        "allreduce_seconds": (ring.communication_seconds - waited) / steps,
    }
    ring.barrier()
    Path(out).write_text(json.dumps(result))
    ring.close()
    finish_process(0)


def run_config(backend: str, model: str, batch: int, steps: int, work: Path) -> dict:
    from rlrings.core.ring import local_ring_environment
    from rlrings.ops.processes import free_port

    ranks = 1 if backend == "none" else 2
    port = free_port()
    processes = []
    for rank in range(ranks):
        env = {**os.environ, **local_ring_environment(rank, ranks, port), "OMP_NUM_THREADS": "1"}
        out = work / f"{backend}-{model}-{rank}.json"
        code = f"from bench.ring import worker; worker({backend!r}, {MODELS[model]}, {batch}, {steps}, 3, {str(out)!r})"
        processes.append(subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT))
    for process in processes:
        if process.wait(timeout=600):
            raise RuntimeError(f"{backend} {model}: a rank exited with {process.returncode}")
    return json.loads((work / f"{backend}-{model}-0.json").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256, help="samples per rank per update (default 256)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are compared (default 3)")
    parser.add_argument("--steps", type=int, default=20, help="timed updates per run (default 20)")
    parser.add_argument("--models", default="1M,10M", help="model sizes to measure (default 1M,10M)")
    args = parser.parse_args(argv)
    models = {name: MODELS[name] for name in args.models.split(",")}
    from rlrings.core.ring import horovod_available

    console = Console()
    backends = ["none", "torch", *(["horovod"] if horovod_available() else [])]
    if "horovod" not in backends:
        console.print("[yellow]horovod is not installed (make horovod); measuring the torch backend only[/]")
    work = RESULTS / "ring-runs"
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[tuple[str, str], list[dict]] = {}
    configs = [(backend, model) for model in models for backend in backends]
    with Progress(console=console) as progress:
        task = progress.add_task("ring benchmark", total=args.rounds * len(configs))
        for _ in range(args.rounds):
            for backend, model in configs:
                progress.update(task, description=f"{backend} ring, {model} parameters")
                runs.setdefault((backend, model), []).append(run_config(backend, model, args.batch, args.steps, work))
                progress.advance(task)

    results = {"batch_per_rank": args.batch, "rounds": args.rounds, "steps": args.steps, "models": {}}
    table = Table(
        title=f"learner ring on {os.cpu_count()} cores, batch {args.batch} per rank, medians of {args.rounds}"
    )
    for column in ("model", "backend", "ranks", "s/update", "allreduce s/update", "samples/s", "scaling eff.",
                   "overhead vs 1 proc"):  # fmt: skip
        table.add_column(column, justify="right")
    for model in models:
        single = statistics.median(r["step_seconds"] for r in runs[("none", model)])
        entry = {"parameters": runs[("none", model)][0]["parameters"], "backends": {}}
        for backend in backends:
            step = statistics.median(r["step_seconds"] for r in runs[(backend, model)])
            wait = statistics.median(r["allreduce_seconds"] for r in runs[(backend, model)])
            ranks = runs[(backend, model)][0]["ranks"]
            samples = args.batch * ranks / step
            figures = {
                "ranks": ranks,
                "step_seconds": step,
                "allreduce_wait_seconds": wait,
                "samples_per_second": samples,
                "scaling_efficiency": samples / (ranks * args.batch / single),
                "overhead_vs_single_process": step / single - 1,
                "step_seconds_per_round": [r["step_seconds"] for r in runs[(backend, model)]],
            }
            entry["backends"][backend] = figures
            table.add_row(
                f"{entry['parameters'] / 1e6:.2f}M", "one process" if backend == "none" else backend, str(ranks),
                f"{step:.4f}", f"{wait:.4f}", f"{samples:,.0f}", f"{figures['scaling_efficiency']:.2f}",
                "-" if backend == "none" else f"{100 * figures['overhead_vs_single_process']:+.1f}%",
            )  # fmt: skip
        results["models"][model] = entry
    console.print(table)
    (RESULTS / "ring.json").write_text(json.dumps(results, indent=2))
    plot(results, RESULTS / "ring.png")
    console.print(f"results: {RESULTS / 'ring.json'}, plot: {RESULTS / 'ring.png'}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results["models"]), figsize=(10, 4), dpi=100, squeeze=False)
    for axis, entry in zip(axes[0], results["models"].values()):
        names = list(entry["backends"])
        compute = [b["step_seconds"] - b["allreduce_wait_seconds"] for b in entry["backends"].values()]
        wait = [b["allreduce_wait_seconds"] for b in entry["backends"].values()]
        labels = ["1 process" if n == "none" else f"2 ranks\n{n}" for n in names]
        axis.bar(labels, compute, label="compute")
        axis.bar(labels, wait, bottom=compute, label="waiting for the allreduce")
        axis.set_title(f"{entry['parameters'] / 1e6:.1f}M parameters, batch {results['batch_per_rank']}/rank")
        axis.set_ylabel("seconds per update")
    axes[0][0].legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


if __name__ == "__main__":
    main()
