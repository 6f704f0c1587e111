"""What solved is what you get: ``rlrings up`` several times in a row, then the commands its
summary prints, then the model they give, played in a plain Gymnasium loop.

For each env (CartPole-v1, Acrobot-v1) and seed: ``rlrings up --env ENV --seed S`` at its
defaults (what ``make run`` runs), the ``rlrings models pull`` line of its closing summary run
as printed once the mesh has stopped, and the pulled file played greedily for 100 fresh
episodes (seeds no actor or evaluator used) with ``Policy.act``. A run passes when the pulled
version is the one the summary says solved and its fresh mean reaches the env's threshold
(475 and -100). Each pulled model also plays 1,000 more episodes, an estimate of its true mean
and spread: the chance that a fresh 100-episode check falls short follows from them.
Results go to bench/results/handoff.json and handoff.png.

    python -m bench.handoff [--seeds 5] [--envs CartPole-v1,Acrobot-v1]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
THRESHOLDS = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0}
EPISODES = 100


def fresh_mean(policy, env_id: str) -> tuple[float, float]:
    """(mean, min) greedy return of a ``Policy`` over fresh episodes, in a plain Gymnasium loop."""
    import gymnasium as gym

    env = gym.make(env_id)
    returns = []
    for episode in range(EPISODES):
        obs, _ = env.reset(seed=900_000 + episode)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return float(np.mean(returns)), float(np.min(returns))


def one_run(env_id: str, seed: int, console: Console) -> dict:
    run_dir = RESULTS / "handoff" / f"{env_id}-{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.monotonic()
    up = subprocess.run(
        [sys.executable, "-m", "rlrings.ops.cli", "up", "--env", env_id, "--seed", str(seed), "--no-viewer",
         "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    seconds = time.monotonic() - started
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    record = {"env": env_id, "seed": seed, "exit": up.returncode, "seconds": seconds,
              "solved": summary.get("solved", False), "solved_version": summary.get("solved_version"),
              "confirmation_return": summary.get("solve_confirmation_return"),
              "env_steps_to_solve": summary.get("env_steps_to_solve")}  # fmt: skip
    pulls = [line.strip() for line in up.stdout.splitlines() if line.strip().startswith("rlrings models pull ")]
    if not pulls:
        return record | {"passed": False, "why": "the summary printed no pull command"}
    argv = shlex.split(pulls[0])
    model = run_dir / "pulled.pt"
    argv[argv.index("--out") + 1] = str(model)
    pulled = subprocess.run([sys.executable, "-m", "rlrings.ops.cli", *argv[1:]], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    if pulled.returncode != 0:
        return record | {"passed": False, "why": f"pull failed: {pulled.stderr.strip()}"}
    from rlrings.core.models import Policy

    policy = Policy.load(model)
    version = policy.version
    mean, lowest = fresh_mean(policy, env_id)
    from rlrings.mesh.evaluation import play

    many = np.array(play(policy.model, policy.spec, env_id, 1000, 950_000, greedy=True))
    passed = record["solved"] and version == record["solved_version"] and mean >= THRESHOLDS[env_id]
    console.print(f"{env_id} seed {seed}: solved by version {record['solved_version']} in {seconds:.0f} s; "
                  f"pulled version {version}: {mean:.1f} over {EPISODES} fresh episodes")  # fmt: skip
    return record | {"command": pulls[0], "pulled_version": version, "fresh_mean": mean, "fresh_min": lowest,
                     "mean_1000": float(many.mean()), "std_1000": float(many.std()),
                     "passed": bool(passed)}  # fmt: skip


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(run["env"] for run in runs))
    figure, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.8), dpi=100, squeeze=False)
    for axis, env_id in zip(axes[0], envs, strict=True):
        mine = [run for run in runs if run["env"] == env_id]
        seeds = [run["seed"] for run in mine]
        fresh = [run.get("fresh_mean", np.nan) for run in mine]
        confirmed = [run.get("confirmation_return") or np.nan for run in mine]
        axis.plot(seeds, fresh, "s", markersize=9, color="C0", label="pulled model, fresh episodes")
        axis.plot(seeds, confirmed, "o", color="C3", label="evaluator's confirmation")
        axis.plot(seeds, [run.get("mean_1000", np.nan) for run in mine], "_", markersize=16, mew=2, color="k",
                  label="pulled model, 1,000 more episodes")  # fmt: skip
        axis.axhline(THRESHOLDS[env_id], color="C2", linestyle="--", label="solved")
        top = np.nanmax([*fresh, *confirmed, THRESHOLDS[env_id]])
        axis.set_ylim(THRESHOLDS[env_id] - 40, top + 0.4 * (top - THRESHOLDS[env_id]) + 5)
        axis.set_xticks(seeds)
        axis.set_title(env_id)
        axis.set_xlabel("seed")
        axis.set_ylabel(f"greedy mean over {EPISODES} episodes")
    axes[0][0].legend(loc="lower left", fontsize=8)
    figure.suptitle("the model the summary's commands pull, played in a plain Gymnasium loop")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="runs per env (default 5)")
    parser.add_argument("--envs", default="CartPole-v1,Acrobot-v1", help="comma-separated env ids")
    args = parser.parse_args(argv)
    console = Console()
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = [one_run(env_id, seed, console) for env_id in args.envs.split(",") for seed in range(args.seeds)]
    view = Table("env", "seed", "solved by", "confirmation", "pulled", "fresh mean", "fresh min", "mean of 1,000",
                 "seconds", "passed")  # fmt: skip
    for run in runs:
        view.add_row(run["env"], str(run["seed"]), str(run["solved_version"]),
                     f"{run['confirmation_return'] or float('nan'):.1f}", str(run.get("pulled_version")),
                     f"{run.get('fresh_mean', float('nan')):.1f}", f"{run.get('fresh_min', float('nan')):.1f}",
                     f"{run.get('mean_1000', float('nan')):.1f}", f"{run['seconds']:.0f}",
                     "yes" if run["passed"] else f"no: {run.get('why', '')}")  # fmt: skip
    console.print(view)
    passed = sum(run["passed"] for run in runs)
    (RESULTS / "handoff.json").write_text(json.dumps({"runs": runs, "passed": passed, "of": len(runs)}, indent=2))
    plot(runs, RESULTS / "handoff.png")
    console.print(f"{passed} of {len(runs)} runs handed over the version that solved, and it scored as solved")
    return 0 if passed == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
