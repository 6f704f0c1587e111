"""Atari at speed, side by side in one run: the raw ceiling, rlrings while learning, Sample Factory.

Pong (``--game``), on this machine, each for the same wall time (``--seconds``):

- ``ceiling``: the same 8 preprocessed envs (rlrings' registry, ``training=True``) stepped
  with random actions in one process, no learning; EnvPool's C++ batched Pong (8 envs, 2
  threads, from .venv-sf) beside it for scale;
- ``rlrings``: ``rlrings up --env ALE/Pong-v5`` (IMPALA, the mesh defaults: 2 actors x 8
  envs, one learner on the Nature CNN, the evaluator beside them): env frames per second
  while learning, and the evaluator's raw Pong score against frames;
- ``sample_factory``: Sample Factory 2.1.1 APPO, its EnvPool Atari example
  (``sf_examples.envpool.atari``, in .venv-sf from ``bench/sf_env.sh``), CPU, 8 envs: its
  reported frames per second over the last minute (it counts frames with the frame skip, as
  rlrings does) and average episode reward.

Frames are emulator frames (4 per agent step), as the field counts them. Results go to
bench/results/atari.json and atari.png.

    python -m bench.atari [--seconds 300] [--game Pong]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
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


def ceiling(game: str, seconds: float) -> dict:
    from rlrings.envs import make_vector_env

    envs = make_vector_env(f"ALE/{game}-v5", ENVS, seed=0, training=True)
    rng = np.random.default_rng(0)
    n = envs.single_action_space.n
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        envs.step(rng.integers(0, n, ENVS))
        steps += ENVS
    frames = 4 * steps / (time.perf_counter() - start)
    envs.close()
    envpool = None
    if SF_PYTHON.exists():
        script = ENVPOOL_CEILING.format(game=game, envs=ENVS, seconds=seconds)
        done = subprocess.run([str(SF_PYTHON), "-c", script], capture_output=True, text=True)
        if done.returncode == 0:
            envpool = float(done.stdout.split()[-1])
    return {"rlrings_vector_frames_per_second": frames, "envpool_frames_per_second": envpool}


def rlrings(game: str, seconds: float) -> dict:
    run_dir = RESULTS / "atari" / "rlrings"
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, "-m", "rlrings.cli", "up", "--env", f"ALE/{game}-v5", "--max-env-steps", "0",
               "--max-seconds", str(seconds), "--eval-episodes", "2", "--eval-interval-seconds", "20",
               "--no-viewer", "--run-dir", str(run_dir)]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "frames_per_second": summary["env_frames_per_second"],
        "frames": summary["env_frames"],
        "learner_steps": summary["learner_steps"],
        "games": summary["episodes"],
        "mean_training_score": summary["mean_return_last_window"],
        "curve": [(4 * e["env_steps"], e["greedy_mean"], e["sampled_mean"]) for e in summary["evaluations"]],
        "seconds": summary["seconds"],
    }


def sample_factory(game: str, seconds: float) -> dict | None:
    if not SF_PYTHON.exists():
        return None
    train_dir = RESULTS / "atari" / "sample_factory"
    shutil.rmtree(train_dir, ignore_errors=True)
    command = [str(SF_PYTHON), "-m", "sf_examples.envpool.atari.train_envpool_atari", f"--env=atari_{game.lower()}",
               "--experiment=bench", f"--train_dir={train_dir}", "--num_workers=1", "--num_envs_per_worker=1",
               f"--env_agents={ENVS}", "--batch_size=256", "--rollout=32", "--device=cpu", "--with_wandb=False",
               "--train_for_env_steps=1000000000"]  # fmt: skip
    started = time.monotonic()
    with open(RESULTS / "atari" / "sample_factory.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=60)
    text = (RESULTS / "atari" / "sample_factory.log").read_text()
    totals = [(float(m.group(1)), float(m.group(2))) for m in
              re.finditer(r"Fps is \(10 sec: [\d.na]+, 60 sec: ([\d.na]+).*Total num frames: (\d+)", text)]  # fmt: skip
    rewards = [float(m.group(1)) for m in re.finditer(r"Avg episode reward: \[\(0, '(-?[\d.]+)'\)\]", text)]
    if not totals:
        return {"error": text[-2000:]}
    frames = totals[-1][1]
    return {
        # its own steady rate (the last 60 s), as rlrings' summary counts from the first step
        "frames_per_second": totals[-1][0],
        "frames_per_second_with_startup": frames / (time.monotonic() - started),
        "frames": frames,
        "mean_training_score": rewards[-1] if rewards else None,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars, curve) = plt.subplots(1, 2, figsize=(11, 4))
    names, values = [], []
    for name, value in (
        ("ceiling (rlrings envs)", result["ceiling"]["rlrings_vector_frames_per_second"]),
        ("ceiling (EnvPool)", result["ceiling"]["envpool_frames_per_second"]),
        ("rlrings IMPALA", result["rlrings"]["frames_per_second"]),
        ("Sample Factory APPO", (result["sample_factory"] or {}).get("frames_per_second")),
    ):
        if value:
            names.append(name)
            values.append(value)
    bars.barh(names, values, color=["#999", "#bbb", "#1f77b4", "#ff7f0e"][: len(values)])
    bars.set_xlabel("env frames per second (2 cores)")
    bars.set_title(f"{result['game']}: throughput, {result['seconds']:.0f} s each")
    points = result["rlrings"]["curve"]
    if points:
        curve.plot([p[0] for p in points], [p[1] for p in points], label="rlrings greedy")
        curve.plot([p[0] for p in points], [p[2] for p in points], label="rlrings sampled")
    curve.set_xlabel("env frames")
    curve.set_ylabel("raw score (whole games)")
    curve.set_title("evaluator on fresh games")
    curve.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--game", default="Pong")
    args = parser.parse_args()
    (RESULTS / "atari").mkdir(parents=True, exist_ok=True)
    result = {"game": args.game, "seconds": args.seconds, "envs": ENVS}
    print("ceiling ...", flush=True)
    result["ceiling"] = ceiling(args.game, min(30.0, args.seconds))
    print(result["ceiling"], "\nrlrings ...", flush=True)
    result["rlrings"] = rlrings(args.game, args.seconds)
    print({k: v for k, v in result["rlrings"].items() if k != "curve"}, "\nsample factory ...", flush=True)
    result["sample_factory"] = sample_factory(args.game, args.seconds)
    print(result["sample_factory"], flush=True)
    ours, reference = result["rlrings"]["frames_per_second"], (result["sample_factory"] or {}).get("frames_per_second")
    result["ratios"] = {
        "rlrings_vs_sample_factory": ours / reference if reference else None,
        "rlrings_vs_ceiling": ours / result["ceiling"]["rlrings_vector_frames_per_second"],
    }
    print("ratios", result["ratios"])
    (RESULTS / "atari.json").write_text(json.dumps(result, indent=2))
    plot(result, RESULTS / "atari.png")


if __name__ == "__main__":
    main()
