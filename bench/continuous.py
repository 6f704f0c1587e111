"""Continuous control, side by side in one run: rlrings SAC against Stable-Baselines3 SAC.

Tasks (``--tasks``, each with its env-step budget and seeds):

- ``pendulum``: Pendulum-v1, 20,000 env steps; solved when one frozen version's mean
  greedy return over 100 fresh episodes reaches -200 (both systems confirm the same way);
  reported: env steps and wall time to solve, start-up included.
- ``halfcheetah``, ``hopper``: HalfCheetah-v5 and Hopper-v5 at a budget that fits a 2-core
  machine (``--env-steps 100000`` for the field's comparison); reported: the final evaluation
  return (10 fresh greedy episodes) at the budget, and the wall time.
- ``reacher``: Reacher-v5 (the robot arm), rlrings SAC alone, until its own threshold
  (-3.75) or the budget: env steps and wall time, or the best evaluation reached.
- ``reacher-ppo``: Reacher-v5 with rlrings PPO at its MuJoCo settings of record (``--algorithm``
  adds settings) against Stable-Baselines3 PPO with VecNormalize, to the env's threshold or 200 k
  env steps.
- ``carracing``: CarRacing-v3 (96x96 pixels), rlrings PPO alone for a short budget: the
  evaluation curve, to show it learns something measurable.

rlrings runs as ``rlrings up`` (2 actors x 8 envs, one learner, the evaluator beside
them; ``--algorithm JSON`` changes its settings, ``--systems rlrings`` leaves SB3 out);
Stable-Baselines3 as its defaults in one process (``bench/sb3_side.py``, in
.venv-sb3 from ``bench/sb3_env.sh``), its evaluation time left out of its clock.
``--systems rlrings,sb3,synchronous`` adds rlrings' SAC without the mesh
(``bench/synchronous_side.py``: its acting and learning halves in one loop on one env, as SB3
runs), which tells what the algorithm learns apart from what the mesh's asynchrony costs.
CleanRL's published SAC returns at 1 M steps are quoted for scale. Results go to
bench/results/continuous.json and continuous.png (evaluation return against env steps, mean
over seeds, with each seed's curve).

    python -m bench.continuous [--tasks pendulum,halfcheetah,hopper,reacher,reacher-ppo,carracing] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.learning import bootstrap, iqm, reference_run

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SB3_PYTHON = ROOT / ".venv-sb3" / "bin" / "python"
# CleanRL's SAC benchmark (continuous actions, MuJoCo v4 tasks), episodic return at 1 M steps
CLEANRL_SAC_1M = {"HalfCheetah": 9600, "Hopper": 2300}


TASKS = {
    # name: env, algorithm (its name and the settings given), env-step budget, seconds budget, target (None: the
    # env's), reference, evaluator pause
    "pendulum": ("Pendulum-v1", {"name": "sac"}, 20_000, 400.0, -200.0, True, 1.0),
    "halfcheetah": ("HalfCheetah-v5", {"name": "sac"}, 20_000, 2400.0, 1e9, True, 15.0),  # (100 k steps fit 2,400 s)
    "hopper": ("Hopper-v5", {"name": "sac"}, 20_000, 2400.0, 1e9, True, 15.0),
    "reacher": ("Reacher-v5", {"name": "sac"}, 30_000, 900.0, None, False, 10.0),
    "reacher-ppo": ("Reacher-v5", {"name": "ppo"}, 200_000, 900.0, None, True, 10.0),
    "carracing": ("CarRacing-v3", {"name": "ppo"}, 200_000, 420.0, None, False, 30.0),
}


def rlrings(task: str, seed: int, settings: dict | None = None, steps: int | None = None) -> dict:
    """One ``rlrings up`` run. Where SB3 runs beside it, a solve is judged by SB3's side's rule (one
    window of 100 fresh episodes at the target, no margin), not the stricter default of two."""
    env, algorithm, budget, seconds, target, reference, pause = TASKS[task]
    steps = steps or budget
    algorithm = json.dumps({**algorithm, **(settings or {})})
    run_dir = RESULTS / "continuous" / f"{task}-{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, "-m", "rlrings.ops.cli", "up", "--env", env, "--algorithm", algorithm,
               "--seed", str(seed), "--max-env-steps", str(steps), "--max-seconds", str(seconds),
               "--eval-interval-seconds", str(pause), "--no-viewer", "--run-dir", str(run_dir)]  # fmt: skip
    if target is not None:
        command += ["--target-return", str(target)]
    if reference:
        command += ["--confirm-windows", "1", "--confirm-sigmas", "0"]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((run_dir / "summary.json").read_text())
    curve = [(e["env_steps"], e["greedy_mean"], e["started_seconds"]) for e in summary["evaluations"]]
    return {
        "seed": seed,
        "solved": summary["solved"],
        "env_steps_to_solve": summary["env_steps_to_solve"],
        "seconds_to_solve": summary["seconds_to_solve"],
        "final_evaluation": curve[-1][1] if curve else None,
        "best_evaluation": max((r for _, r, _ in curve), default=None),
        "env_steps": summary["env_steps"],
        "seconds": summary["seconds"],
        "startup_seconds": summary["startup_seconds"],
        "learner_steps": summary["learner_steps"],
        "curve": curve,
    }


def side(python: Path, script: str, task: str, seed: int, steps: int | None, algorithm: str) -> dict | None:
    """One run of a side script (``sb3_side.py``, ``synchronous_side.py``) on ``task``'s env and budget,
    judged by the task's target, or the env's own definition as rlrings' evaluator takes it."""
    env, _, budget, _, target, _, _ = TASKS[task]
    steps = steps or budget
    args = ["--env", env, "--max-env-steps", str(steps), "--eval-every", str(max(1000, steps // 20)),
            "--algorithm", algorithm]  # fmt: skip
    if target is None:
        from rlrings.envs import solved_threshold

        target = solved_threshold(env)
    if target is not None and target < 1e8:
        args += ["--target", str(target)]
    run = reference_run(python, script, seed, *args)
    if run is not None:
        run["best_evaluation"] = max((r for _, r, _ in run["curve"]), default=None)
    return run


def sb3(task: str, seed: int, steps: int | None = None) -> dict | None:
    return side(SB3_PYTHON, "sb3_side.py", task, seed, steps, TASKS[task][1]["name"])


def synchronous(task: str, seed: int, settings: dict | None = None, steps: int | None = None) -> dict | None:
    """rlrings' own algorithm without the mesh (``bench/synchronous_side.py``): one env, one loop,
    judged as SB3's side is. SAC's tasks only (an off-policy algorithm's halves)."""
    algorithm = json.dumps({**TASKS[task][1], **(settings or {})})
    return side(Path(sys.executable), "synchronous_side.py", task, seed, steps, algorithm)


def summarise(runs: list[dict], task: str, steps_budget: int | None = None) -> dict:
    """Each measure over ``runs``; an unsolved run counts the budget it ran under (``steps_budget``,
    the task's own by default) as its env steps to solve."""
    steps_budget = steps_budget or TASKS[task][2]
    out: dict = {"runs": len(runs), "solved": sum(bool(r["solved"]) for r in runs)}
    measures = {
        "env_steps_to_solve": [r["env_steps_to_solve"] or steps_budget for r in runs],
        "seconds_to_solve": [r["seconds_to_solve"] or r["seconds"] for r in runs],
        "final_evaluation": [r["final_evaluation"] for r in runs if r["final_evaluation"] is not None],
        "best_evaluation": [r["best_evaluation"] for r in runs if r["best_evaluation"] is not None],
        "seconds": [r["seconds"] for r in runs],
    }
    for name, values in measures.items():
        if not values:
            continue
        values = np.asarray(values, dtype=float)
        out[name] = {
            "median": float(np.median(values)),
            "mean": float(values.mean()),
            "iqm": iqm(values),
            "mean_ci95": bootstrap(values, np.mean) if len(values) > 1 else (float(values[0]), float(values[0])),
            "per_seed": values.tolist(),
        }
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [task for task in results if results[task]["runs"]]
    figure, grid = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), dpi=100, squeeze=False)
    for axes, task in zip(grid[0], tasks):
        env, algorithm, _, *_ = TASKS[task]
        steps = results[task]["budget_env_steps"]  # (--env-steps where given)
        for system, colour in (("rlrings", "C0"), ("sb3", "C1"), ("synchronous", "C2")):
            runs = results[task]["runs"].get(system, [])
            name = algorithm["name"].upper()
            label = {"rlrings": f"rlrings {name}", "sb3": f"Stable-Baselines3 {name}",
                     "synchronous": f"rlrings {name}, one loop, no mesh"}[system]  # fmt: skip
            curves = []
            for run in runs:
                points = np.array([(s, r) for s, r, _ in run["curve"] if r == r])
                if len(points) == 0:
                    continue
                axes.plot(points[:, 0], points[:, 1], color=colour, alpha=0.25, linewidth=0.8)
                curves.append(points)
            if curves:
                xs = np.linspace(0, steps, 41)
                with warnings.catch_warnings():  # before any run's first evaluation there is no mean to take
                    warnings.simplefilter("ignore", RuntimeWarning)
                    ys = np.nanmean(
                        [np.interp(xs, c[:, 0], c[:, 1], left=np.nan, right=c[-1, 1]) for c in curves], axis=0
                    )
                axes.plot(xs, ys, color=colour, label=f"{label}, mean of {len(curves)}")
        target = TASKS[task][4]
        if target is not None and target < 1e8:
            axes.axhline(target, color="grey", linestyle="--", label=f"target {target:g}")
        axes.set_title(f"{env}: evaluation (greedy, fresh episodes)")
        axes.set_xlabel("env steps")
        axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        axes.set_ylabel("return")
        axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="pendulum,halfcheetah,reacher,reacher-ppo,carracing")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--halfcheetah-seeds", type=int, default=1, help="HalfCheetah's and Hopper's seeds (long runs)")
    parser.add_argument("--systems", default="rlrings,sb3",
                        help="which systems run: rlrings, sb3 (where a task has it), synchronous (rlrings' SAC in "
                        "one loop without the mesh, on SAC's tasks)")  # fmt: skip
    parser.add_argument("--env-steps", type=int, default=None, help="every task's env-step budget instead of its own")
    parser.add_argument("--algorithm", default="{}", help="JSON: rlrings settings over the algorithm's defaults")
    parser.add_argument("--out", default="continuous", help="name of the results files under bench/results")
    args = parser.parse_args()
    systems, settings = args.systems.split(","), json.loads(args.algorithm)
    console = Console(width=150)
    subprocess.run([str(ROOT / "bench" / "sb3_env.sh")], check=False)
    results: dict = {}
    for task in args.tasks.split(","):
        reference = TASKS[task][5]
        seeds = args.halfcheetah_seeds if task in ("halfcheetah", "hopper") else (args.seeds if reference else 1)
        runs: dict[str, list] = {"rlrings": [], "sb3": [], "synchronous": []}
        for seed in range(seeds):
            if "rlrings" in systems:
                runs["rlrings"].append(rlrings(task, seed, settings, args.env_steps))
                console.print(f"{task} seed {seed} rlrings: {_line(runs['rlrings'][-1])}")
            if reference and "sb3" in systems:
                run = sb3(task, seed, args.env_steps)
                if run is not None:
                    runs["sb3"].append(run)
                    console.print(f"{task} seed {seed} sb3: {_line(run)}")
            if "synchronous" in systems and TASKS[task][1]["name"] == "sac":
                run = synchronous(task, seed, settings, args.env_steps)
                if run is not None:
                    runs["synchronous"].append(run)
                    console.print(f"{task} seed {seed} synchronous: {_line(run)}")
        summary = {system: summarise(values, task, args.env_steps) for system, values in runs.items() if values}
        ratios = {}
        for side, theirs in ((side, summary[side]) for side in ("sb3", "synchronous") if side in summary):
            ours = summary.get("rlrings", {})
            for measure in ("seconds_to_solve", "env_steps_to_solve", "seconds", "final_evaluation"):
                if measure in ours and measure in theirs and theirs[measure]["median"]:
                    ratios[f"{measure}_median_over_{side}"] = ours[measure]["median"] / theirs[measure]["median"]
        results[task] = {"env": TASKS[task][0], "budget_env_steps": args.env_steps or TASKS[task][2],
                         "rlrings_settings": settings, "summary": summary, "ratios": ratios, "runs": runs}  # fmt: skip
        _write(results, args.out)
    view = Table("task", "system", "solved", "env steps to solve (median)", "s to solve (median)",
                 "final eval: mean [95% CI]", "best eval", "wall s", title="continuous control")  # fmt: skip
    for task, result in results.items():
        for system, s in result["summary"].items():
            final = s.get("final_evaluation")
            view.add_row(
                task, system, f"{s['solved']}/{s['runs']}", f"{s['env_steps_to_solve']['median']:,.0f}",
                f"{s['seconds_to_solve']['median']:.1f}",
                f"{final['mean']:.1f} [{final['mean_ci95'][0]:.1f}, {final['mean_ci95'][1]:.1f}]" if final else "-",
                f"{s['best_evaluation']['median']:.1f}" if "best_evaluation" in s else "-",
                f"{s['seconds']['median']:.0f}",
            )  # fmt: skip
        for key, value in result["ratios"].items():
            console.print(f"{task} {key}: {value:.2f}")
    console.print(view)
    console.print(f"written to bench/results/{args.out}.json and {args.out}.png")


def _line(run: dict) -> str:
    return (
        f"solved {run['solved']}, env steps {run['env_steps_to_solve']}, seconds "
        f"{run['seconds_to_solve'] and round(run['seconds_to_solve'], 1)}, final {run['final_evaluation']}, "
        f"wall {run['seconds']:.0f}s"
    )


def _write(results: dict, name: str = "continuous") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"cleanrl_sac_1m": CLEANRL_SAC_1M, "tasks": results}, indent=2))
    plot(results, RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
