"""Atari at speed, side by side in one run: the raw ceiling, rlrings while learning, Sample Factory.

Pong (``--game``), on this machine, each for the same wall time (``--seconds``):

- ``ceiling``: the same 8 preprocessed envs (rlrings' registry, ``training=True``: ale-py's C++
  vector env, as actors step them) stepped with random actions in one process, no learning;
  the same through the Python wrappers (``?vector=wrappers``) and EnvPool's C++ batched Pong
  (8 envs, 2 threads, from .venv-sf) beside it for scale;
- ``rlrings``: ``rlrings up --env ALE/Pong-v5`` with each of ``--algorithms`` (APPO, the
  default, with its Atari settings of record, and IMPALA; the mesh defaults: 2 actors x 8 envs,
  one learner on the Nature CNN, the evaluator beside them): env frames per second while
  learning, the evaluator's raw score against frames and how far behind the learner its rounds
  ended;
- ``sample_factory``: Sample Factory 2.1.1 APPO, its EnvPool Atari example
  (``sf_examples.envpool.atari``, in .venv-sf from ``bench/sf_env.sh``), CPU, 8 envs: its
  reported frames per second over the last minute (it counts frames with the frame skip, as
  rlrings does) and average episode reward.

Then learning at one frame budget (``--frames``, 0 to skip), each system from scratch over
``--seeds`` seeds: rlrings with each algorithm to ``--frames`` with the same mesh defaults,
Sample Factory to the same frames with the same settings as above. All score the same thing,
the mean raw score of their last 100 training games (Sample Factory's ``Avg episode reward``,
rlrings' ``mean_return_last_window``), summarised over seeds as the IQM with a bootstrap 95%
interval; where the game has a solved definition (Pong: 18 over 100 evaluation games) rlrings
reports the frames and seconds to the evaluator's confirmation. Breakout (``--game Breakout``)
is the game that needs more than 2 M frames to show learning.

Frames are emulator frames (4 per agent step), as the field counts them. Results go to
bench/results/atari.json and atari.png.

    python -m bench.atari [--seconds 300] [--frames 2000000] [--game Pong] [--algorithms appo,impala] [--seeds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SF_PYTHON = ROOT / ".venv-sf" / "bin" / "python"
ENVS = 8

ENVPOOL_CEILING = """
import time, numpy as np, envpool
envs = envpool.make("{game}-v5", env_type="gymnasium", num_envs={envs}, batch_size={envs}, num_threads=2)
envs.reset()
start, steps = time.perf_counter(), 0
while time.perf_counter() - start < {seconds}:
    envs.step(np.random.randint(0, envs.action_space.n, {envs}))
    steps += {envs}
print(4 * steps / (time.perf_counter() - start))
"""


def random_frames_per_second(env_id: str, envs: int, seconds: float, threads: int = 0) -> float:
    """Frames per second of ``envs`` of rlrings' own preprocessed envs (as actors train on them)
    stepped with random actions in one process: the ceiling an actor's envs set. ``threads``: the
    C++ env's, as an actor's ``env_threads`` (0: one per env, up to the cores)."""
    from rlrings.envs import env_spec, make_vector_env

    vector = make_vector_env(env_id, envs, seed=0, training=True, threads=threads)
    return env_spec(env_id).frame_skip * random_steps_per_second(vector, envs, seconds)


def random_steps_per_second(vector, envs: int, seconds: float) -> float:
    """Agent steps per second of ``vector`` (``envs`` envs, reset already) stepped with random
    actions for ``seconds``; closes it."""
    rng = np.random.default_rng(0)
    n = vector.single_action_space.n
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        vector.step(rng.integers(0, n, envs))
        steps += envs
    vector.close()
    return steps / (time.perf_counter() - start)


def ceiling(game: str, seconds: float) -> dict:
    frames = random_frames_per_second(f"ALE/{game}-v5", ENVS, seconds)  # ale-py's C++ vector env
    wrappers = random_frames_per_second(f"ALE/{game}-v5?vector=wrappers", ENVS, seconds)
    envpool = None
    if SF_PYTHON.exists():
        script = ENVPOOL_CEILING.format(game=game, envs=ENVS, seconds=seconds)
        done = subprocess.run([str(SF_PYTHON), "-c", script], capture_output=True, text=True)
        if done.returncode == 0:
            envpool = float(done.stdout.split()[-1])
    return {"rlrings_vector_frames_per_second": frames, "wrappers_frames_per_second": wrappers,
            "envpool_frames_per_second": envpool}  # fmt: skip


def rlrings(
    game: str, seconds: float, frames: int = 0, name: str = "rlrings", algorithm: str = "appo", seed: int = 0
) -> dict:
    """``rlrings up`` with ``algorithm`` for ``seconds``, or to ``frames`` (then ``seconds`` is only a cap)."""
    run_dir = RESULTS / "atari" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, "-m", "rlrings.ops.cli", "up", "--env", f"ALE/{game}-v5", "--algorithm", algorithm,
               "--seed", str(seed), "--max-env-steps", str(frames // 4), "--max-seconds", str(seconds),
               "--no-viewer", "--run-dir", str(run_dir)]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((run_dir / "summary.json").read_text())
    games = summary["training_episodes"]
    return {
        "frames_per_second": summary["env_frames_per_second"],
        "frames": summary["env_frames"],
        "learner_steps": summary["learner_steps"],
        "learner_device_busy_share": summary.get("learner_device_busy_share"),
        "games": summary["episodes"],
        "mean_training_score": summary["mean_return_last_window"],
        "curve": [(4 * e["env_steps"], e["greedy_mean"], e["sampled_mean"]) for e in summary["evaluations"]],
        # (frames, mean raw score of the last 100 training games), as Sample Factory reports it
        "training_curve": [
            (4 * games[i][0], float(np.mean([r for _, r in games[max(0, i - 99) : i + 1]]))) for i in range(len(games))
        ],  # fmt: skip
        "seconds": summary["seconds"],
        "solved": summary["solved"],
        "frames_to_solve": 4 * summary["env_steps_to_solve"] if summary["solved"] else None,
        "seconds_to_confirm": summary["seconds_to_confirm"],
        "evaluation_versions_behind_median": summary["evaluation_versions_behind_median"],
        "evaluation_seconds_behind_median": summary["evaluation_seconds_behind_median"],
    }


def sample_factory(game: str, seconds: float, frames: int = 0, name: str = "sample_factory") -> dict | None:
    """Sample Factory APPO for ``seconds``, or to ``frames`` (its ``train_for_env_steps`` counts
    frames with the frame skip); ``seconds`` is then only a cap."""
    if not SF_PYTHON.exists():
        return None
    train_dir = RESULTS / "atari" / name
    shutil.rmtree(train_dir, ignore_errors=True)
    command = [str(SF_PYTHON), "-m", "sf_examples.envpool.atari.train_envpool_atari", f"--env=atari_{game.lower()}",
               "--experiment=bench", f"--train_dir={train_dir}", "--num_workers=1", "--num_envs_per_worker=1",
               f"--env_agents={ENVS}", "--batch_size=256", "--rollout=32", "--device=cpu", "--with_wandb=False",
               f"--train_for_env_steps={frames or 1_000_000_000}"]  # fmt: skip
    started = time.monotonic()
    log_path = RESULTS / "atari" / f"{name}.log"
    with open(log_path, "w") as log:
        # its own session: SIGTERM ends its main process but not the workers it spawned, which
        # would go on using the CPU under whatever runs next, so the whole group is stopped
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    text = log_path.read_text()
    report = re.compile(r"Fps is \(10 sec: [\d.na]+, 60 sec: ([\d.na]+).*Total num frames: (\d+)"
                        r"|Avg episode reward: \[\(0, '(-?[\d.]+)'\)\]")  # fmt: skip
    totals, curve = [], []  # (60 s rate, frames); (frames, mean score of its last 100 games)
    for match in report.finditer(text):
        if match.group(2) is not None:
            totals.append((float(match.group(1)), float(match.group(2))))
        elif totals:
            curve.append((totals[-1][1], float(match.group(3))))
    if not totals:
        return {"error": text[-2000:]}
    return {
        # its own steady rate (the last 60 s), as rlrings' summary counts from the first step
        "frames_per_second": totals[-1][0],
        "frames_per_second_with_startup": totals[-1][1] / (time.monotonic() - started),
        "frames": totals[-1][1],
        "mean_training_score": curve[-1][1] if curve else None,
        "training_curve": curve,
        "seconds": time.monotonic() - started,
    }


def learning(game: str, frames: int, cap_seconds: float, algorithms: list[str], seeds: int) -> dict:
    """Every system from scratch to the same frame budget, ``seeds`` times; the score is the mean raw
    score of the last 100 training games at the budget, summarised over seeds."""
    from bench.learning import bootstrap, iqm

    runs: dict[str, list] = {f"rlrings_{algorithm}": [] for algorithm in algorithms} | {"sample_factory": []}
    for seed in range(seeds):
        for algorithm in algorithms:
            run = rlrings(game, cap_seconds, frames, f"rlrings_{algorithm}_learning_{seed}", algorithm, seed)
            runs[f"rlrings_{algorithm}"].append(run)
            print(algorithm, seed, {k: v for k, v in run.items() if "curve" not in k}, flush=True)
        runs["sample_factory"].append(sample_factory(game, cap_seconds, frames, f"sample_factory_learning_{seed}"))
    summary = {}
    for system, results in runs.items():
        scores = np.array([r["mean_training_score"] for r in results if r and r.get("mean_training_score") is not None])
        summary[system] = {
            "seeds": len(scores),
            "iqm": iqm(scores) if len(scores) else None,
            "iqm_ci95": bootstrap(scores, iqm) if len(scores) > 1 else None,
            "solved": sum(bool(r and r.get("solved")) for r in results),
        }
    return {"frames": frames, "runs": runs, "summary": summary}


COLORS = {"sample_factory": "#ff7f0e", "rlrings_appo": "#1f77b4", "rlrings_impala": "#2ca02c"}
LABELS = {"sample_factory": "Sample Factory APPO", "rlrings_appo": "rlrings APPO", "rlrings_impala": "rlrings IMPALA"}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    learnt = result.get("learning")
    figure, axes = plt.subplots(1, 3 if learnt else 2, figsize=(16.5 if learnt else 11, 4))
    bars, curve = axes[0], axes[1]
    rows = [("ceiling (rlrings envs)", result["ceiling"]["rlrings_vector_frames_per_second"], "#999"),
            ("ceiling (Python wrappers)", result["ceiling"].get("wrappers_frames_per_second"), "#aaa"),
            ("ceiling (EnvPool)", result["ceiling"]["envpool_frames_per_second"], "#bbb")]  # fmt: skip
    rows += [(LABELS.get(system, system), run["frames_per_second"], COLORS.get(system, "#333"))
             for system, run in result["systems"].items() if run]  # fmt: skip
    rows = [row for row in rows if row[1]]
    bars.barh([r[0] for r in rows], [r[1] for r in rows], color=[r[2] for r in rows])
    bars.set_xlabel("env frames per second")
    bars.set_title(f"{result['game']}: throughput, {result['seconds']:.0f} s each")
    for system, run in result["systems"].items():
        if run and run.get("curve"):
            points = run["curve"]
            curve.plot([p[0] for p in points], [p[1] for p in points], color=COLORS.get(system),
                       label=f"{LABELS.get(system, system)} greedy")  # fmt: skip
    if learnt:  # the frame-budget runs' evaluators (seed 0) are the longer curves
        for system, runs in learnt["runs"].items():
            points = (runs[0] or {}).get("curve") if runs else None
            if points:
                curve.plot([p[0] for p in points], [p[1] for p in points], "--", color=COLORS.get(system),
                           label=f"{LABELS.get(system, system)} greedy ({learnt['frames']:,})")  # fmt: skip
    curve.set_xlabel("env frames")
    curve.set_ylabel("raw score (whole games)")
    curve.set_title("rlrings' evaluator on fresh games")
    curve.legend(fontsize="small")
    if learnt:
        games = axes[2]
        for system, runs in learnt["runs"].items():
            for seed, run in enumerate(runs):
                points = (run or {}).get("training_curve") or []
                games.plot([p[0] for p in points], [p[1] for p in points], color=COLORS.get(system), alpha=0.8,
                           label=LABELS.get(system, system) if seed == 0 else None)  # fmt: skip
        games.set_xlabel("env frames")
        games.set_ylabel("mean raw score, last 100 training games")
        games.set_title(f"{result['game']}: learning to {learnt['frames']:,} frames, {learnt['seeds']} seed(s)")
        games.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--algorithms", default="appo,impala", help="rlrings' algorithms, comma-separated")
    parser.add_argument("--seeds", type=int, default=1, help="seeds of the learning comparison (3 where time allows)")
    parser.add_argument("--frames", type=int, default=2_000_000, help="the learning comparison's budget; 0 skips it")
    parser.add_argument("--frames-cap-seconds", type=float, default=4 * 3600.0, help="a stop for either system")
    args = parser.parse_args()
    algorithms = [name.strip() for name in args.algorithms.split(",") if name.strip()]
    (RESULTS / "atari").mkdir(parents=True, exist_ok=True)
    result = {"game": args.game, "seconds": args.seconds, "envs": ENVS, "systems": {}}
    print("ceiling ...", flush=True)
    result["ceiling"] = ceiling(args.game, min(30.0, args.seconds))
    print(result["ceiling"], flush=True)
    for algorithm in algorithms:
        print(f"rlrings {algorithm} ...", flush=True)
        run = result["systems"][f"rlrings_{algorithm}"] = rlrings(args.game, args.seconds, algorithm=algorithm,
                                                                  name=f"rlrings_{algorithm}")  # fmt: skip
        print({k: v for k, v in run.items() if "curve" not in k}, flush=True)
    print("sample factory ...", flush=True)
    reference = result["systems"]["sample_factory"] = sample_factory(args.game, args.seconds)
    print(reference, flush=True)
    reference_rate = (reference or {}).get("frames_per_second")
    ceiling_rate = result["ceiling"]["rlrings_vector_frames_per_second"]
    result["ratios"] = {}
    for algorithm in algorithms:
        ours = result["systems"][f"rlrings_{algorithm}"]["frames_per_second"]
        result["ratios"][f"rlrings_{algorithm}_vs_sample_factory"] = ours / reference_rate if reference_rate else None
        result["ratios"][f"rlrings_{algorithm}_vs_ceiling"] = ours / ceiling_rate
    print("ratios", result["ratios"])
    if args.frames:
        print(f"learning to {args.frames:,} frames, {args.seeds} seed(s) ...", flush=True)
        result["learning"] = learning(args.game, args.frames, args.frames_cap_seconds, algorithms, args.seeds)
        result["learning"]["seeds"] = args.seeds
        print(result["learning"]["summary"], flush=True)
    (RESULTS / "atari.json").write_text(json.dumps(result, indent=2))
    plot(result, RESULTS / "atari.png")


if __name__ == "__main__":
    main()
