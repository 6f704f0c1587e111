"""What ``rlrings up`` shows and leaves behind: the live view, ``summary.json`` and ``returns.png``.

:class:`Progress` is what the supervisor learns from the services' status RPCs
and the evaluator; the functions here only read it.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console, Group
from rich.table import Table as RichTable

from rlrings.envs import EnvSpec
from rlrings.mesh.config import MeshConfig
from rlrings.mesh.evaluation import Evaluation, achievement_names, crafter_score
from rlrings.v1 import learner_pb2


@dataclass(frozen=True)
class Run:
    """What the report reads of a run: its settings, what it has learned so far, where it writes."""

    config: MeshConfig
    spec: EnvSpec
    run_dir: Path
    progress: Progress
    learners: str
    """The learners as the header says them ("1 learner", "a ring of 2 learners (horovod)")."""


@dataclass
class Progress:
    """What the supervisor has learned from the services' status RPCs."""

    start: float = field(default_factory=time.monotonic)
    start_wall: float = field(default_factory=time.time)
    ended: float | None = None  # seconds since start when the run stopped
    first_steps_at: float | None = None  # seconds since start when actors first reported steps
    episodes: list[tuple[float, float, int]] = field(default_factory=list)  # (seconds, return, env steps then)
    last_episode: dict[str, int] = field(default_factory=dict)
    env_steps: dict[str, int] = field(default_factory=dict)
    steps_base: dict[str, int] = field(default_factory=dict)  # steps of earlier lives of a restarted actor
    env_rate: float = 0.0
    learner: learner_pb2.GetLearnerStatusResponse | None = None
    lags: list[tuple[float, float, float]] = field(default_factory=list)  # (versions, updates, seconds) polled
    evaluations: list[Evaluation] = field(default_factory=list)
    confirmations: list[Evaluation] = field(default_factory=list)
    solved_by: Evaluation | None = None  # the confirmation that solved the task
    solved_confirmed_at: float | None = None  # seconds since start when it was confirmed
    train_solved_at: tuple[float, int] | None = None  # (seconds, env steps) the training mean first reached the target
    achievement_episodes: dict[str, int] = field(default_factory=dict)  # episodes that unlocked each (Crafter)
    restarts: list[str] = field(default_factory=list)

    @property
    def solved_at(self) -> float | None:
        """Seconds since start when the version that solved was fetched for evaluation."""
        return None if self.solved_by is None else self.solved_by.started_seconds

    @property
    def total_env_steps(self) -> int:
        return sum(self.env_steps.values()) + sum(self.steps_base.values())

    def mean_return(self, window: int) -> float:
        recent = [ret for _, ret, _ in self.episodes[-window:]]
        return float(np.mean(recent)) if recent else math.nan

    def stayed_solved(self, target: float, seconds: float) -> tuple[float | None, int]:
        """(share of the evaluations of the ``seconds`` after solving whose greedy mean reached
        ``target``, how many there were); (None, 0) before solving or without any."""
        if self.solved_by is None:
            return None, 0
        start = self.solved_by.started_seconds
        after = [e for e in self.evaluations if start < e.started_seconds <= start + seconds]
        if not after:
            return None, 0
        return sum(e.greedy_mean >= target for e in after) / len(after), len(after)


def view(mesh: Run) -> Group:
    """The live view: progress, learning, evaluation, the last restarts."""
    p, c = mesh.progress, mesh.config
    learner = p.learner
    view = RichTable(show_header=False, box=None, padding=(0, 2))
    elapsed = time.monotonic() - p.start
    view.add_row("elapsed", f"{elapsed:,.0f}s of {c.max_seconds:,.0f}s")
    budget = f" of {c.max_env_steps:,}" if c.max_env_steps else ""
    view.add_row("env steps", f"{p.total_env_steps:,}{budget}", f"{p.env_rate:,.0f}/s")
    if learner is not None:
        view.add_row(
            "learner steps",
            f"{learner.learner_step:,}",
            f"{learner.steps_per_second:,.1f}/s, device busy {learner.device_busy_share:.0%}",
        )
        view.add_row(
            "policy version",
            f"{learner.published_version:,}",
            f"lag {learner.policy_lag:.1f} versions, {learner.policy_lag_updates:.1f} updates, "
            f"{learner.policy_lag_seconds:.2f}s",
        )
    target = f" (target {c.target_return:g})" if c.target_return is not None else ""
    mean = p.mean_return(c.return_window)
    view.add_row(
        f"mean return, last {c.return_window}",
        "-" if math.isnan(mean) else f"{mean:,.1f}{target}",
        f"{len(p.episodes):,} episodes",
    )
    if p.evaluations:
        last = p.evaluations[-1]
        sampled = "" if math.isnan(last.sampled_mean) else f", sampled {last.sampled_mean:,.1f}"
        view.add_row(
            "evaluation", f"version {last.version:,}: greedy {last.greedy_mean:,.1f}{sampled}",
            f"{len(last.greedy_returns)} fresh episodes, {last.versions_behind:,} versions "
            f"({last.seconds_behind:,.0f}s) behind",
        )  # fmt: skip
    if p.solved_by is not None:
        view.add_row(
            "solved",
            f"version {p.solved_by.version:,}, {p.solved_by.greedy_mean:,.1f} over "
            f"{len(p.solved_by.greedy_returns)} episodes",
            f"at {p.solved_by.env_steps:,} env steps, {p.solved_at:,.1f}s",
        )
    return Group(view, *[f"[yellow]{line}[/]" for line in p.restarts[-3:]])


def progress_line(mesh: Run) -> str:
    """The live view's figures on one line, for output that is not a terminal."""
    p, c = mesh.progress, mesh.config
    parts = [f"{time.monotonic() - p.start:,.0f}s of {c.max_seconds:,.0f}s",
             f"env steps {p.total_env_steps:,} ({p.env_rate:,.0f}/s)"]  # fmt: skip
    if p.learner is not None:
        parts += [f"learner steps {p.learner.learner_step:,} (device busy {p.learner.device_busy_share:.0%})",
                  f"version {p.learner.published_version:,}"]  # fmt: skip
    mean = p.mean_return(c.return_window)
    if not math.isnan(mean):
        parts.append(f"mean return {mean:,.1f} over the last {min(c.return_window, len(p.episodes))} episodes")
    if p.evaluations:
        last = p.evaluations[-1]
        parts.append(f"evaluation {last.greedy_mean:,.1f} (version {last.version:,}, {last.versions_behind:,} behind)")
    if p.solved_by is not None:
        parts.append(f"solved at {p.solved_by.env_steps:,} env steps")
    return "progress: " + " | ".join(parts)  # restarts are logged as they happen


def summarise(mesh: Run, reason: str, console: Console) -> dict:
    """Writes ``summary.json`` and the plot, prints the summary table, returns the summary."""
    p, c = mesh.progress, mesh.config
    elapsed = p.ended or time.monotonic() - p.start
    learner = p.learner
    stayed, after = p.stayed_solved(c.target_return, c.keep_running_seconds) if c.target_return else (None, 0)
    summary = {
        "env": c.env,
        "algorithm": c.algorithm.name,
        "learners": c.learners,
        "ring": c.ring if c.learners > 1 else "none",
        "reason": reason,
        "solved": p.solved_by is not None,
        "seconds_to_solve": p.solved_at,
        "env_steps_to_solve": p.solved_by.env_steps if p.solved_by else None,
        "solved_version": p.solved_by.version if p.solved_by else None,
        "solve_confirmation_return": p.solved_by.greedy_mean if p.solved_by else None,
        "seconds_to_confirm": p.solved_confirmed_at,
        "keep_running_seconds": c.keep_running_seconds,
        "stayed_solved_fraction": stayed,
        "evaluations_after_solving": after,
        "train_mean_solved_seconds": p.train_solved_at[0] if p.train_solved_at else None,
        "train_mean_solved_env_steps": p.train_solved_at[1] if p.train_solved_at else None,
        "policy_lag_versions_median": _median(lag[0] for lag in p.lags),
        "policy_lag_updates_median": _median(lag[1] for lag in p.lags),
        "policy_lag_seconds_median": _median(lag[2] for lag in p.lags),
        # the last the learner reported: the share of its training loop's time its device spent in updates
        "learner_device_busy_share": p.learner.device_busy_share if p.learner is not None else None,
        # how far behind the learner each evaluation round ended: a round far behind judges a policy
        # nobody trains any more, and could not have declared a solve in time
        "evaluation_versions_behind_median": _median(e.versions_behind for e in p.evaluations),
        "evaluation_versions_behind_max": max((e.versions_behind for e in p.evaluations), default=None),
        "evaluation_seconds_behind_median": _median(e.seconds_behind for e in p.evaluations),
        **achievements(mesh),
        "last_evaluation": p.evaluations[-1].record() if p.evaluations else None,
        "evaluations": [
            {
                key: e.record()[key]
                for key in (
                    "version",
                    "learner_step",
                    "started_seconds",
                    "env_steps",
                    "greedy_mean",
                    "sampled_mean",
                    "seconds",
                    "versions_behind",
                    "seconds_behind",
                )
            }
            for e in p.evaluations
        ],  # fmt: skip
        "seconds": elapsed,
        "env_steps": p.total_env_steps,
        # While acting: from the first reported step, so start-up does not dilute it.
        "env_steps_per_second": p.total_env_steps / max(1e-9, elapsed - (p.first_steps_at or 0.0)),
        "startup_seconds": p.first_steps_at,
        **frames(mesh, p.total_env_steps / max(1e-9, elapsed - (p.first_steps_at or 0.0))),
        "learner_steps": learner.learner_step if learner else 0,
        "published_version": learner.published_version if learner else 0,
        "episodes": len(p.episodes),
        "mean_return_last_window": p.mean_return(c.return_window),
        "return_window": c.return_window,
        # every training episode, for learning curves: (env steps when it was reported, return)
        "training_episodes": sorted((steps, ret) for _, ret, steps in p.episodes),
        "target_return": c.target_return,
        "restarts": p.restarts,
        "model": kept_model(mesh.run_dir),
    }
    (mesh.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_path = plot(mesh)
    table = RichTable(title=f"rlrings mesh: {reason}", show_header=False)
    for key in ("env", "algorithm", "seconds", "startup_seconds", "env_steps", "env_steps_per_second",
                "learner_steps", "episodes", "mean_return_last_window", "seconds_to_solve", "env_steps_to_solve",
                "policy_lag_versions_median", "stayed_solved_fraction"):  # fmt: skip
        value = summary[key]
        number = isinstance(value, float | int) and not isinstance(value, bool)
        table.add_row(
            key.replace("_", " "), f"{value:,.{1 if isinstance(value, float) else 0}f}" if number else str(value)
        )
    table.add_row("plot", str(plot_path) if plot_path else "-")
    table.add_row("logs", str(mesh.run_dir / "logs"))
    console.print()
    console.print(table)
    model = summary["model"]
    if model is not None:
        console.print(f"[bold]The model[/]: {model['description']}. Get it (the run has ended; no server needed):")
        for command in model["commands"]:
            console.print(f"  {command}", highlight=False, soft_wrap=True)
    return summary


def kept_model(run_dir: Path) -> dict | None:
    """The version a user should take from a finished run, and the commands that give it: the one
    that solved, else the best confirmed (or, failing that, evaluated) one, else the latest."""
    from rlrings.services.parameter.store import WeightDirectory

    weights = WeightDirectory(run_dir / "weights")
    tags = weights.tags()
    tag = next((name for name in ("solved", "best", "latest") if name in tags), None)
    if tag is None:
        return None
    header = weights.header(tag=tag)
    evaluated = header.HasField("evaluation_return")
    why = {"solved": "the version that solved the env", "best": "the best evaluated version",
           "latest": "the latest version (none was evaluated)"}[tag]  # fmt: skip
    description = f"version {header.version}, {why}" + (
        f", greedy mean {header.evaluation_return:,.1f} over {header.evaluation_episodes} fresh episodes"
        if evaluated
        else ""
    )
    run = shlex.quote(str(run_dir))
    return {
        "version": header.version,
        "tag": tag,
        "evaluation_return": header.evaluation_return if evaluated else None,
        "evaluation_episodes": header.evaluation_episodes if evaluated else None,
        "description": description,
        "commands": [
            f"rlrings models pull --run {run} --tag {tag} --out model.pt",
            f"rlrings models list --run {run}",
            f"rlrings render --run {run} --model {tag} --out agent.mp4",
        ],
    }


def frames(mesh: Run, steps_per_second: float) -> dict:
    """Emulator frames (Atari's 4 per step), as the field counts throughput and budgets; nothing
    for envs that step one frame at a time. Returns of such games are raw scores of whole games."""
    skip = mesh.spec.frame_skip
    if skip == 1:
        return {}
    return {
        "frame_skip": skip,
        "env_frames": mesh.progress.total_env_steps * skip,
        "env_frames_per_second": steps_per_second * skip,
        "returns": "raw game scores of whole games (unclipped, all lives)",
    }


def achievements(mesh: Run) -> dict:
    """Success rate (percent of training episodes) of each achievement and the Crafter score,
    for games with achievements; nothing for others."""
    names = achievement_names(mesh.config.env)
    episodes = len(mesh.progress.episodes)
    if not names or not episodes:
        return {}
    rates = {name: 100.0 * mesh.progress.achievement_episodes.get(name, 0) / episodes for name in names}
    return {"achievement_success_percent": rates, "crafter_score": crafter_score(rates)}


def plot(mesh: Run) -> Path | None:
    """Returns against env steps (training episodes, their moving mean, evaluations) and against time."""
    p = mesh.progress
    if not p.episodes and not p.evaluations:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = mesh.config
    figure, (by_steps, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100, sharey=True)
    if p.episodes:
        times, returns, steps = map(np.asarray, zip(*p.episodes))
        window = c.return_window
        for axes, x in ((by_steps, steps), (by_time, times)):
            axes.scatter(x, returns, s=4, alpha=0.25, label="training episode")
            if len(returns) >= window:
                moving = np.convolve(returns, np.ones(window) / window, mode="valid")
                axes.plot(x[window - 1 :], moving, color="C1", label=f"training mean of last {window}")
    if p.evaluations:
        steps = np.array([e.env_steps for e in p.evaluations])
        times = np.array([e.started_seconds for e in p.evaluations])
        greedy = np.array([e.greedy_mean for e in p.evaluations])
        sampled = np.array([e.sampled_mean for e in p.evaluations])
        for axes, x in ((by_steps, steps), (by_time, times)):
            axes.plot(x, greedy, color="C3", marker=".", label=f"evaluation, greedy ({c.eval_episodes} episodes)")
            if not np.isnan(sampled).all():
                axes.plot(x, sampled, color="C4", marker=".", alpha=0.6, label="evaluation, sampled")
    for axes in (by_steps, by_time):
        if c.target_return is not None:
            axes.axhline(c.target_return, color="C2", linestyle="--", label="target")
        if p.solved_by is not None:
            axes.axvline(p.solved_by.env_steps if axes is by_steps else p.solved_at, color="C2", alpha=0.5)
    by_steps.set_xlabel("env steps")
    by_time.set_xlabel("wall time (s)")
    by_steps.set_ylabel("return")
    by_steps.legend(loc="lower right", fontsize=8)
    figure.suptitle(f"{c.env}, {c.algorithm.name}, {c.actors} actors, {mesh.learners}")
    figure.tight_layout()
    path = mesh.run_dir / "returns.png"
    figure.savefig(path)
    plt.close(figure)
    return path


def _median(values) -> float | None:
    values = list(values)
    return float(np.median(values)) if values else None
