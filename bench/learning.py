"""Learning on CartPole-v1, measured as the field measures it, side by side in one run.

For each seed, in turn: ``rlrings up`` with each of its algorithms asked for
(IMPALA, DQN, PPO, APPO; each at its defaults), and Ray RLlib PPO with 2 env
runners (in .venv-rllib).
The mesh is judged by its evaluator: solved when one frozen version's mean
greedy return over 100 fresh episodes reaches 475 (CartPole-v1's own
definition); RLlib by its own 100-episode ``episode_return_mean``. Each run
then goes on for ``--keep-running-seconds`` and records the share of that
window it stayed solved (the mesh: evaluations of each new version; RLlib:
its training iterations).

Reported per system: env steps and wall time to solve (start-up included) as
median and IQM with 95% bootstrap confidence intervals (Agarwal et al. 2021),
how many seeds solved (a run that did not counts at its budget, a lower
bound), the stayed-solved share, policy lag, and the published CleanRL
reference for scale. Results go to bench/results/learning.json and
learning.png (evaluation return against env steps, mean over seeds with a
95% bootstrap band).

    python -m bench.learning [--seeds 5] [--keep-running-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.mesh import RLLIB_PYTHON

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGET = 475.0
# CleanRL's published CartPole-v1 runs (its docs' benchmark tables): PPO and DQN reach
# an episodic return of about 490 after 500k env steps.
CLEANRL = {"ppo_return_at_500k_steps": 490, "dqn_return_at_500k_steps": 490}
BUDGETS = {
    "impala": (1_000_000, 240.0),
    "dqn": (500_000, 360.0),
    "ppo": (500_000, 240.0),
    "appo": (500_000, 240.0),
    "rllib": (500_000, 240.0),
}
MESH = ("impala", "dqn", "ppo", "appo")


def mesh(algorithm: str, seed: int, keep: float) -> dict:
    steps, seconds = BUDGETS[algorithm]
    run_dir = RESULTS / "learning" / f"{algorithm}-{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "rlrings.ops.cli", "up", "--algorithm", algorithm, "--seed", str(seed),
         "--max-env-steps", str(steps), "--max-seconds", str(seconds), "--keep-running-seconds", str(keep),
         "--no-viewer", "--run-dir", str(run_dir)],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "seed": seed,
        "solved": summary["solved"],
        "env_steps_to_solve": summary["env_steps_to_solve"],
        "seconds_to_solve": summary["seconds_to_solve"],
        "stayed_solved_fraction": summary["stayed_solved_fraction"],
        "evaluations_after_solving": summary["evaluations_after_solving"],
        "policy_lag_versions_median": summary["policy_lag_versions_median"],
        "policy_lag_updates_median": summary["policy_lag_updates_median"],
        "policy_lag_seconds_median": summary["policy_lag_seconds_median"],
        "env_steps_per_second": summary["env_steps_per_second"],
        "startup_seconds": summary["startup_seconds"],
        "curve": [(e["env_steps"], e["greedy_mean"], e["started_seconds"]) for e in summary["evaluations"]],
    }


def reference_run(python: Path, script: str, seed: int, *args: str) -> dict | None:
    """One run of a reference system (RLlib, Stable-Baselines3) by its side script in its own virtual
    environment: the script's last stdout line is its JSON result, given ``seed`` and ``solved``
    here. None where that environment is missing or the run failed (its stderr tail printed)."""
    if not python.exists():
        return None
    command = [str(python), "-m", f"bench.{Path(script).stem}", "--seed", str(seed), *args]  # (run from ROOT)
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        return None
    run = json.loads(result.stdout.strip().splitlines()[-1])
    run["seed"] = seed
    run["solved"] = run["seconds_to_solve"] is not None
    return run


def rllib(seed: int, keep: float) -> dict | None:
    steps, seconds = BUDGETS["rllib"]
    return reference_run(RLLIB_PYTHON, "rllib_side.py", seed, "--max-seconds", str(seconds), "--max-env-steps",
                         str(steps), "--keep-running-seconds", str(keep))  # fmt: skip


def iqm(values: np.ndarray) -> float:
    """Mean of the middle half (interquartile mean)."""
    values = np.sort(values)
    n = len(values)
    low, high = int(np.floor(0.25 * n)), int(np.ceil(0.75 * n))
    return float(values[low:high].mean()) if high > low else float(values.mean())


def bootstrap(values: np.ndarray, statistic, resamples: int = 5000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``statistic`` over seeds."""
    rng = np.random.default_rng(seed)
    draws = [statistic(rng.choice(values, len(values))) for _ in range(resamples)]
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def aggregate(runs: list[dict], name: str) -> dict:
    steps_budget, seconds_budget = BUDGETS[name]
    steps = np.array([r["env_steps_to_solve"] or steps_budget for r in runs], dtype=float)
    seconds = np.array([r["seconds_to_solve"] or seconds_budget for r in runs], dtype=float)
    stayed = [r["stayed_solved_fraction"] for r in runs if r.get("stayed_solved_fraction") is not None]
    out = {"runs": len(runs), "solved": sum(r["solved"] for r in runs)}
    for label, values in (("env_steps_to_solve", steps), ("seconds_to_solve", seconds)):
        out[label] = {
            "median": float(np.median(values)),
            "median_ci95": bootstrap(values, np.median),
            "iqm": iqm(values),
            "iqm_ci95": bootstrap(values, iqm),
            "per_seed": values.tolist(),
        }
    out["stayed_solved_fraction"] = {"median": float(np.median(stayed)) if stayed else None, "per_seed": stayed}
    lags = [r["policy_lag_versions_median"] for r in runs if r.get("policy_lag_versions_median") is not None]
    if lags:
        out["policy_lag_versions_median"] = float(np.median(lags))
        out["policy_lag_updates_median"] = float(np.median([r["policy_lag_updates_median"] for r in runs]))
        out["policy_lag_seconds_median"] = float(np.median([r["policy_lag_seconds_median"] for r in runs]))
    out["env_steps_per_second_median"] = float(np.median([r["env_steps_per_second"] for r in runs]))
    return out


def plot(systems: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, 500_000, 101)
    figure, axes = plt.subplots(figsize=(8, 4.8), dpi=100)
    labels = {
        "impala": "rlrings IMPALA (evaluator, greedy)",
        "dqn": "rlrings DQN (evaluator, greedy)",
        "ppo": "rlrings PPO (evaluator, greedy)",
        "appo": "rlrings APPO (evaluator, greedy)",
        "rllib": "RLlib PPO (training mean of 100)",
    }
    colours = {"impala": "C0", "dqn": "C1", "rllib": "C2", "ppo": "C3", "appo": "C4"}
    for name, runs in systems.items():
        colour = colours[name]
        curves = []
        for run in runs:
            if not run.get("curve"):
                continue
            steps, returns = np.array([(s, r) for s, r, _ in run["curve"] if r == r]).T
            # a run that stopped early (solved, then its keep-running window) holds its last value
            curves.append(np.interp(grid, steps, returns, left=np.nan, right=returns[-1]))
        if not curves:
            continue
        curves = np.array(curves)
        mean = np.nanmean(curves, axis=0)
        rng = np.random.default_rng(0)
        draws = np.array([np.nanmean(curves[rng.integers(0, len(curves), len(curves))], axis=0) for _ in range(1000)])
        low, high = np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)
        axes.plot(grid, mean, color=colour, label=f"{labels[name]}, {len(curves)} seeds")
        axes.fill_between(grid, low, high, color=colour, alpha=0.2)
    axes.axhline(TARGET, color="grey", linestyle="--", label="solved (475)")
    axes.scatter([500_000], [CLEANRL["ppo_return_at_500k_steps"]], color="k", marker="x", label="CleanRL PPO/DQN, 500k")
    axes.set_xlabel("env steps")
    axes.set_ylabel("return")
    axes.set_title("CartPole-v1: mean over seeds, 95% bootstrap band")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--keep-running-seconds", type=float, default=60.0)
    parser.add_argument("--systems", default="impala,dqn,ppo,appo,rllib", help="comma-separated subset")
    args = parser.parse_args()
    console = Console(width=140)
    chosen = args.systems.split(",")
    systems: dict[str, list[dict]] = {name: [] for name in chosen}
    for seed in range(args.seeds):
        for name in chosen:
            run = (
                rllib(seed, args.keep_running_seconds)
                if name == "rllib"
                else mesh(name, seed, args.keep_running_seconds)
            )
            if run is None:
                continue
            systems[name].append(run)
            console.print(
                f"seed {seed} {name}: solved {run['solved']}, env steps {run['env_steps_to_solve']}, "
                f"seconds {run['seconds_to_solve'] and round(run['seconds_to_solve'], 1)}, "
                f"stayed {run.get('stayed_solved_fraction')}"
            )
    results = {name: aggregate(runs, name) for name, runs in systems.items() if runs}
    ratios = {}
    if "rllib" in results:
        for name in MESH:
            if name in results:
                for measure in ("seconds_to_solve", "env_steps_to_solve"):
                    ratios[f"{name}_over_rllib_{measure}_median"] = (
                        results[name][measure]["median"] / results["rllib"][measure]["median"]
                    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(systems, RESULTS / "learning.png")
    payload = {"target": TARGET, "budgets": BUDGETS, "cleanrl": CLEANRL, "summary": results, "ratios": ratios,
               "runs": systems}  # fmt: skip
    (RESULTS / "learning.json").write_text(json.dumps(payload, indent=2))

    view = Table("system", "solved", "env steps to solve: median [95% CI]; IQM", "wall s to solve: median; IQM",
                 "stayed solved", "lag (versions, updates)", title="learning: CartPole-v1")  # fmt: skip
    for name, r in results.items():
        steps, seconds = r["env_steps_to_solve"], r["seconds_to_solve"]
        lag = (
            f"{r['policy_lag_versions_median']:.1f}, {r['policy_lag_updates_median']:.1f}"
            if "policy_lag_versions_median" in r
            else "-"
        )
        stayed = r["stayed_solved_fraction"]["median"]
        view.add_row(
            name, f"{r['solved']}/{r['runs']}",
            f"{steps['median']:,.0f} [{steps['median_ci95'][0]:,.0f}, {steps['median_ci95'][1]:,.0f}]; "
            f"{steps['iqm']:,.0f}",
            f"{seconds['median']:.1f}; {seconds['iqm']:.1f}", "-" if stayed is None else f"{stayed:.2f}", lag,
        )  # fmt: skip
    console.print(view)
    for key, value in ratios.items():
        console.print(f"{key}: {value:.2f}")
    console.print("written to bench/results/learning.json and learning.png")


if __name__ == "__main__":
    main()
