"""End-to-end throughput of the mesh on CartPole-v1, side by side in one run.

1. ceiling: the same env and policy network (a vector of 16 envs, batched
   inference and sampling) stepped in one plain process loop, no learning;
2. the mesh's throughput: ``rlrings up`` with 2 actors, each stepping the
   same 16-env vector, while learning, for a fixed time;
3. the mesh's time to solve: ``rlrings up`` as a user runs it (2 actors x 8
   envs) until the mean return of the last 20 episodes is >= 475;
4. Ray RLlib PPO with 2 env runners (in .venv-rllib), until solved.

Throughput and time to solve come from separate mesh runs because they
pull apart: bigger vectors step faster but feed the learner staler, larger
batches. Times to solve vary a lot from run to run on both sides, so the
solve runs alternate (mesh, RLlib, mesh, RLlib, ...) ``--repeats`` times and
the medians are compared. Env steps/s count from the first step, so start-up does not dilute
them (start-up seconds are reported too; time to solve includes them).
Results go to bench/results/mesh.json.

    python -m bench.mesh [--max-seconds 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RLLIB_PYTHON = ROOT / ".venv-rllib" / "bin" / "python"
ENVS = 16


def ceiling(seconds: float) -> dict:
    import numpy as np
    import torch

    from rlrings.algorithms import get
    from rlrings.core.models import build_model
    from rlrings.envs import env_spec, make_vector_env

    torch.set_num_threads(1)
    spec = get("impala").model_spec(env_spec("CartPole-v1"))
    model = build_model(spec).eval()
    envs = make_vector_env("CartPole-v1", ENVS, seed=0)
    obs, _ = envs.reset(seed=0)
    steps, start = 0, time.perf_counter()
    with torch.no_grad():
        while time.perf_counter() - start < seconds:
            params, _ = model(torch.as_tensor(obs))
            actions = spec.make_distribution(params).sample().numpy()  # what the actor samples with
            obs, *_ = envs.step(actions.astype(np.int64))
            steps += ENVS
    elapsed = time.perf_counter() - start
    return {"env_steps": steps, "seconds": elapsed, "env_steps_per_second": steps / elapsed}


def mesh(name: str, *flags: str) -> dict:
    run_dir = RESULTS / name
    shutil.rmtree(run_dir, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "rlrings.ops.cli", "up", "--actors", "2", "--run-dir", str(run_dir), *flags],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return json.loads((run_dir / "summary.json").read_text())


def median_run(runs: list[dict]) -> dict:
    """The run with the median time to solve (runs that did not solve count as slowest)."""
    ordered = sorted(runs, key=lambda run: run.get("seconds_to_solve") or float("inf"))
    return ordered[(len(ordered) - 1) // 2]


def rllib(max_seconds: float) -> dict | None:
    if not RLLIB_PYTHON.exists():
        return None
    result = subprocess.run(
        [str(RLLIB_PYTHON), str(ROOT / "bench" / "rllib_side.py"), "--max-seconds", str(max_seconds)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-seconds", type=float, default=300, help="time limit of each training run")
    parser.add_argument("--ceiling-seconds", type=float, default=20, help="length of the ceiling measurement")
    parser.add_argument("--throughput-seconds", type=float, default=40, help="length of the mesh throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating solve runs per side; medians compared")
    args = parser.parse_args()
    console = Console(width=120)
    console.print("[bold]mesh benchmark[/]: CartPole-v1; ceiling, rlrings up (throughput, then solve), RLlib PPO")
    top = ceiling(args.ceiling_seconds)
    fast = mesh(
        "mesh-throughput", "--envs-per-actor", str(ENVS), "--max-seconds", str(args.throughput_seconds),
        "--target-return", "1e9",
    )  # fmt: skip
    solves, references = [], []
    for attempt in range(args.repeats):
        solves.append(mesh(f"mesh-solve-{attempt}", "--max-seconds", str(args.max_seconds)))
        references.append(rllib(args.max_seconds))
        console.print(
            f"solve run {attempt + 1}/{args.repeats}: mesh {solves[-1]['seconds_to_solve']} s, "
            f"RLlib {references[-1] and references[-1]['seconds_to_solve']} s"
        )
    ours = median_run(solves)
    theirs = median_run([r for r in references if r]) if any(references) else None
    result = {
        "ceiling": top,
        "rlrings_throughput": fast,
        "rlrings_solve": ours,
        "rllib": theirs,
        "solve_runs": {"rlrings": solves, "rllib": references},
    }
    ratios = {"mesh_over_ceiling": fast["env_steps_per_second"] / top["env_steps_per_second"]}
    if theirs:
        ratios["mesh_over_rllib_steps_per_second"] = fast["env_steps_per_second"] / theirs["env_steps_per_second"]
        if ours["seconds_to_solve"] and theirs["seconds_to_solve"]:
            ratios["mesh_time_to_solve_over_rllib"] = ours["seconds_to_solve"] / theirs["seconds_to_solve"]
    result["ratios"] = ratios

    def solve(run):
        if run is None:
            return "n/a"
        return f"{run['seconds_to_solve']:.0f} s" if run.get("seconds_to_solve") else f"not in {args.max_seconds:.0f} s"

    view = Table("measure", "ceiling", "rlrings mesh", "RLlib PPO", "ratio", title="mesh: rlrings vs RLlib")
    view.add_row(
        "env steps/s",
        f"{top['env_steps_per_second']:,.0f}",
        f"{fast['env_steps_per_second']:,.0f} (2 x 16 envs); {ours['env_steps_per_second']:,.0f} (2 x 8)",
        f"{theirs['env_steps_per_second']:,.0f}" if theirs else "n/a",
        f"mesh/RLlib {ratios.get('mesh_over_rllib_steps_per_second', float('nan')):.1f} (target >= 4); "
        f"mesh/ceiling {ratios['mesh_over_ceiling']:.2f} (target >= 0.5)",
    )
    view.add_row(
        f"time to mean return 475 (median of {args.repeats})",
        "",
        solve(ours),
        solve(theirs),
        f"mesh/RLlib {ratios['mesh_time_to_solve_over_rllib']:.2f} (target <= 0.5)"
        if "mesh_time_to_solve_over_rllib" in ratios
        else "",
    )
    console.print(view)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mesh.json").write_text(json.dumps(result, indent=2))
    console.print(
        f"written to {(RESULTS / 'mesh.json').relative_to(ROOT)}; plots in bench/results/mesh-solve-*/returns.png"
    )


if __name__ == "__main__":
    main()
