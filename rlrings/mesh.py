"""``rlrings up``: the whole mesh on one machine, on the embedded store.

Replay, parameter, a learner (or a ring of learner ranks) and N actors each
run as their own process on a free loopback port, exactly as they would in a
cluster. This module is their supervisor: it writes each service's config
file into the run directory, starts the processes, restarts any that die (a
ring restarts as a whole, from its last checkpoint), shows live progress from the
services' status RPCs, and at the end stops them in order and writes a
summary (``summary.json``) and a plot of return against time
(``returns.png``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import grpc
import numpy as np
import pydantic
from pydantic_settings import SettingsConfigDict
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table as RichTable

from rlrings import experience
from rlrings.config import Settings
from rlrings.envs import env_spec
from rlrings.errors import ConfigError
from rlrings.ring import HOROVOD_HINT, horovod_available, local_ring_environment
from rlrings.security import AuthConfig, ClientSecurity, TlsConfig
from rlrings.server import SUPERVISOR_ENV
from rlrings.v1 import actor_pb2, actor_pb2_grpc, learner_pb2, learner_pb2_grpc

log = logging.getLogger(__name__)
TABLE = "experience"
MAX_RESTARTS = 5


class MeshConfig(Settings):
    """Settings of ``rlrings up``."""

    model_config = SettingsConfigDict(env_prefix="RLRINGS_UP_")

    env: str = "CartPole-v1"
    """Environment id: a Gymnasium id, 'crafter' or 'minerl:<id>'."""
    algorithm: Literal["impala", "dqn"] = "impala"
    """impala (V-trace from a FIFO queue) or dqn (double DQN, prioritized n-step)."""
    actors: pydantic.PositiveInt = 2
    """Actor processes."""
    envs_per_actor: pydantic.PositiveInt = 8
    """Environments each actor steps as one vector."""
    unroll_length: pydantic.PositiveInt = 20
    """IMPALA: steps per trajectory."""
    batch_size: pydantic.PositiveInt | None = None
    """Items per learner update; None: 16 trajectories (impala) or 128 transitions (dqn)."""
    learning_rate: pydantic.PositiveFloat | None = None
    """Learner learning rate; None: the algorithm's default."""
    entropy_cost: pydantic.NonNegativeFloat = 0.01
    """IMPALA: entropy bonus weight."""
    queue_size: pydantic.PositiveInt | None = None
    """IMPALA: trajectories the queue holds; None: max(4 x batch, 2 x all envs). Smaller is fresher
    data but more waiting for actors."""
    publish_every: pydantic.PositiveInt = 5
    """Learner updates between weight versions."""
    checkpoint_every: pydantic.PositiveInt = 500
    """Learner updates between checkpoints (a restarted learner or ring resumes from the last)."""
    learners: pydantic.PositiveInt = 1
    """Learner ranks; more than one form a data-parallel ring (batch_size is per rank)."""
    ring: Literal["horovod", "torch"] = "horovod"
    """Ring backend when learners > 1: horovod (gloo) or torch (torch.distributed, gloo)."""
    cassandra: list[str] | None = None
    """Contact points of a Cassandra ring for replay's store (for example 127.0.0.1,127.0.0.2,127.0.0.3
    from `make cassandra-up`); None: the embedded store. Each run writes under its own shard name."""
    max_env_steps: pydantic.NonNegativeInt = 3_000_000
    """Stop after this many env steps across actors; 0: no limit."""
    max_seconds: pydantic.PositiveFloat = 600.0
    """Stop after this long."""
    target_return: float | None = None
    """Stop once the mean return of the last `return_window` episodes reaches this; None: the env's own
    threshold where it has one (475 for CartPole-v1), else run to the budget."""
    return_window: pydantic.PositiveInt = 20
    """Episodes in the moving mean that `target_return` is compared with."""
    run_dir: Path | None = None
    """Where configs, logs, checkpoints and the plot go; None: runs/<time>."""
    viewer: bool = True
    """Start the viewer: a web page to watch the agent or play, recording demonstrations."""
    viewer_port: int = pydantic.Field(default=0, ge=0, le=65535)
    """Port of the viewer's page; 0 picks a free one (printed at start)."""
    seed: int = 0
    """Seed; actor i uses seed + 1000 * i."""
    tls: bool = False
    """Mutual TLS between every service: a development CA and a certificate are made in the run
    directory (tls/); every server requires it, every client and the supervisor present it."""

    @pydantic.field_validator("cassandra", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [point.strip() for point in value.split(",") if point.strip()]
        return value


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ServiceProcess:
    """A service run as a child process from a config file in the run directory."""

    name: str
    module: str
    config: dict
    run_dir: Path
    process: subprocess.Popen | None = None
    restarts: int = 0
    niceness: int = 0
    """Added CPU niceness: the viewer serves people and yields to training."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables on top of this process's (a learner rank's place in its ring)."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.config['port']}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.log"

    def start(self) -> ServiceProcess:
        config_path = self.run_dir / "configs" / f"{self.name}.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(json.dumps(self.config, indent=2, default=str))  # JSON is YAML
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, "--config", str(config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    "OMP_NUM_THREADS": "1",
                    **self.env,
                    SUPERVISOR_ENV: str(os.getpid()),
                },
            )  # (no preexec_fn: forking a threaded process that holds gRPC channels can crash it)
        if self.niceness:
            with contextlib.suppress(ProcessLookupError):
                nice = os.getpriority(os.PRIO_PROCESS, 0) + self.niceness
                os.setpriority(os.PRIO_PROCESS, self.process.pid, nice)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
                self.process.kill()
        return self.process.wait()


@dataclass
class Progress:
    """What the supervisor has learned from the services' status RPCs."""

    start: float = field(default_factory=time.monotonic)
    start_wall: float = field(default_factory=time.time)
    ended: float | None = None  # seconds since start when the run stopped
    first_steps_at: float | None = None  # seconds since start when actors first reported steps
    episodes: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, return)
    last_episode: dict[str, int] = field(default_factory=dict)
    env_steps: dict[str, int] = field(default_factory=dict)
    steps_base: dict[str, int] = field(default_factory=dict)  # steps of earlier lives of a restarted actor
    env_rate: float = 0.0
    learner: learner_pb2.GetLearnerStatusResponse | None = None
    solved_at: float | None = None
    restarts: list[str] = field(default_factory=list)

    @property
    def total_env_steps(self) -> int:
        return sum(self.env_steps.values()) + sum(self.steps_base.values())

    def mean_return(self, window: int) -> float:
        recent = [ret for _, ret in self.episodes[-window:]]
        return float(np.mean(recent)) if recent else math.nan


class Mesh:
    def __init__(self, config: MeshConfig):
        self.config = config
        self.spec = env_spec(config.env)  # ConfigError for unknown envs, before anything starts
        if config.learners > 1 and config.ring == "horovod" and not horovod_available():
            raise ConfigError(f"ring: {HOROVOD_HINT}")
        if config.target_return is None and self.spec_threshold() is not None:
            config.target_return = self.spec_threshold()
        self.run_dir = config.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.services = self._plan()
        self.progress = Progress()
        self._channels: dict[str, grpc.Channel] = {}

    def spec_threshold(self) -> float | None:
        import gymnasium as gym

        from rlrings import tasks

        try:
            if self.config.env.startswith(tasks.PREFIX):
                return tasks.family(self.config.env.removeprefix(tasks.PREFIX).split("/")[0]).reward_threshold
            return gym.spec(self.config.env).reward_threshold
        except Exception:
            return None

    def _plan(self) -> list[ServiceProcess]:
        c, run = self.config, self.run_dir
        impala = c.algorithm == "impala"
        batch = c.batch_size or (16 if impala else 128)
        queue = c.queue_size or max(4 * batch, 2 * c.actors * c.envs_per_actor)
        tables = experience.replay_tables(c.algorithm, self.spec, TABLE, c.unroll_length, queue, 100_000)

        def ports() -> dict:
            return {"port": free_port(), "metrics_port": free_port()}

        store: dict = {"snapshot_dir": str(run / "replay"), "snapshot_interval_seconds": 30}
        if c.cassandra:
            shard = re.sub(r"[^A-Za-z0-9_.-]", "-", run.resolve().name)[-64:]
            store = {
                "store": "cassandra",
                "cassandra": {
                    "contact_points": c.cassandra,
                    "keyspace": "rlrings_up",
                    "replication_factor": min(3, len(c.cassandra)),
                    "shard": shard,
                },
            }
        replay = ServiceProcess("replay", "services.replay", {**ports(), "tables": tables, **store}, run)
        parameter = ServiceProcess(
            "parameter", "services.parameter", {**ports(), "directory": str(run / "weights")}, run
        )
        learner_config = {
            **ports(),
            "replay_address": replay.address,
            "parameter_address": parameter.address,
            "env": c.env,
            "algorithm": c.algorithm,
            "table": TABLE,
            "batch_size": batch,
            "entropy_cost": c.entropy_cost,
            "publish_every": c.publish_every,
            "checkpoint_every": c.checkpoint_every,
            "checkpoint_dir": str(run / "checkpoints"),
            "tensorboard_dir": str(run / "tensorboard"),
            "seed": c.seed,
        }
        if c.learning_rate:
            learner_config["learning_rate"] = c.learning_rate
        if c.learners == 1:
            learners = [ServiceProcess("learner", "services.learner", learner_config, run)]
        else:
            learners = [
                ServiceProcess(
                    f"learner-{rank}", "services.learner", {**learner_config, **ports(), "ring": c.ring}, run
                )
                for rank in range(c.learners)
            ]
            self._place_ring(learners)
        actors = [
            ServiceProcess(
                f"actor-{i}",
                "services.actor",
                {
                    **ports(),
                    "replay_address": replay.address,
                    "parameter_address": parameter.address,
                    "env": c.env,
                    "num_envs": c.envs_per_actor,
                    "algorithm": c.algorithm,
                    "table": TABLE,
                    "unroll_length": c.unroll_length,
                    "seed": c.seed + 1000 * i,
                    # Ape-X style: each actor explores at its own rate.
                    "epsilon": 0.4 ** (1 + 7 * i / max(1, c.actors - 1)) if not impala else 0.0,
                },
                run,
            )
            for i in range(c.actors)
        ]
        viewer = ServiceProcess(
            "viewer",
            "services.viewer",
            {
                **ports(),
                "http_port": c.viewer_port or free_port(),
                "replay_address": replay.address,
                "parameter_address": parameter.address,
                "env": c.env,
            },
            run,
            niceness=10,
        )
        services = [replay, parameter, *learners, *actors, *([viewer] if c.viewer else [])]
        if c.tls:
            tls = self._make_certificates()
            for service in services:
                service.config["tls"] = tls
        return services

    def _make_certificates(self) -> dict:
        from rlrings import certs

        ca = certs.make_ca(self.run_dir / "tls")
        pair = certs.issue(ca, self.run_dir / "tls", "mesh", ["127.0.0.1", "localhost"])
        return {"cert_file": str(pair.cert_file), "key_file": str(pair.key_file), "ca_file": str(ca.cert_file),
                "mutual": True}  # fmt: skip

    def _learners_text(self) -> str:
        c = self.config
        return "1 learner" if c.learners == 1 else f"{c.learners} learner ranks ({c.ring} ring)"

    @staticmethod
    def _place_ring(ranks: list[ServiceProcess]) -> None:
        """Gives each rank its place, as the Helm chart does; a fresh port for
        the rendezvous each time the ring (re)starts."""
        master_port = free_port()
        for rank, service in enumerate(ranks):
            service.env = local_ring_environment(rank, len(ranks), master_port)

    @property
    def actors(self) -> list[ServiceProcess]:
        return [s for s in self.services if s.name.startswith("actor-")]

    @property
    def learners(self) -> list[ServiceProcess]:
        """The learner, or the ranks of the learner ring (rank 0 first)."""
        return [s for s in self.services if s.name == "learner" or s.name.startswith("learner-")]

    @property
    def viewer_url(self) -> str | None:
        viewer = next((s for s in self.services if s.name == "viewer"), None)
        return f"http://127.0.0.1:{viewer.config['http_port']}/" if viewer else None

    def service(self, name: str) -> ServiceProcess:
        return next(s for s in self.services if s.name == name)

    # -- running -------------------------------------------------------------

    def run(self, console: Console) -> dict:
        c = self.config
        console.print(
            f"[bold]rlrings[/] mesh: {c.env} with {c.algorithm}, {c.actors} actors x {c.envs_per_actor} envs, "
            f"{self._learners_text()}; run dir {self.run_dir}"
        )
        if self.viewer_url:
            console.print(f"watch the agent or play at [bold]{self.viewer_url}[/]")
        for service in self.services:
            service.start()
        reason = "interrupted"
        try:
            with Live(console=console, refresh_per_second=2) as live:
                while True:
                    self._supervise(console)
                    self._poll()
                    live.update(self._view())
                    reason = self._finished()
                    if reason:
                        break
                    time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: stopping the mesh[/]")
            reason = "interrupted"
        finally:
            self.progress.ended = time.monotonic() - self.progress.start
            self.stop()
        return self._summarise(reason, console)

    def _supervise(self, console: Console) -> None:
        ring = self.learners if len(self.learners) > 1 else []
        for service in self.services:
            if service.alive():
                continue
            code = service.process.returncode if service.process else None
            if code == 2:
                raise ConfigError(f"{service.name} refused its configuration; see {service.log_path}")
            if service.restarts >= MAX_RESTARTS:
                raise RuntimeError(f"{service.name} died {MAX_RESTARTS} times; see {service.log_path}")
            if service in ring:
                self._restart_ring(service, console)
                return
            if service.name in self.progress.env_steps:  # keep the steps of its earlier life
                self.progress.steps_base[service.name] = self.progress.steps_base.get(
                    service.name, 0
                ) + self.progress.env_steps.pop(service.name)
                self.progress.last_episode.pop(service.name, None)
            service.restarts += 1
            message = f"{service.name} exited with {code}; restarting it (restart {service.restarts})"
            self.progress.restarts.append(message)
            console.log(message)
            service.start()

    def _restart_ring(self, dead: ServiceProcess, console: Console) -> None:
        """A rank died: the others stop (they fail in their next allreduce
        anyway), and all ranks start again together, from rank 0's last
        checkpoint. Actors go on acting with the weights they have."""
        ranks = self.learners
        exits = [f"{r.name} exited with {r.process.returncode}" for r in ranks if r.process and not r.alive()]
        for rank in ranks:
            if rank.alive():
                rank.process.send_signal(signal.SIGTERM)
        for rank in ranks:
            rank.stop(timeout=60)
        self._place_ring(ranks)
        dead.restarts += 1
        message = f"{', '.join(exits)}; restarting the learner ring (restart {dead.restarts})"
        self.progress.restarts.append(message)
        console.log(message)
        for rank in ranks:
            rank.start()

    def _stub(self, service: ServiceProcess, stub_cls):
        channel = self._channels.get(service.address)
        if channel is None:
            security = ClientSecurity.of(TlsConfig(**service.config.get("tls", {})), AuthConfig())
            channel = self._channels[service.address] = security.channel(service.address, [])
        return stub_cls(channel)

    def _poll(self) -> None:
        progress = self.progress
        rate = 0.0
        for actor in self.actors:
            try:
                status = self._stub(actor, actor_pb2_grpc.ActorServiceStub).GetStatus(
                    actor_pb2.GetActorStatusRequest(episodes_after=progress.last_episode.get(actor.name, 0)),
                    timeout=2,
                )
            except grpc.RpcError:
                continue  # starting or restarting
            progress.env_steps[actor.name] = status.env_steps
            rate += status.steps_per_second
            for episode in status.recent_episodes:
                progress.episodes.append((episode.end_time - progress.start_wall, episode.episode_return))
                progress.last_episode[actor.name] = episode.index
        progress.episodes.sort(key=lambda e: e[0])
        progress.env_rate = rate
        if progress.first_steps_at is None and progress.total_env_steps:
            progress.first_steps_at = time.monotonic() - progress.start
        try:
            progress.learner = self._stub(self.learners[0], learner_pb2_grpc.LearnerServiceStub).GetStatus(
                learner_pb2.GetLearnerStatusRequest(), timeout=2
            )
        except grpc.RpcError:
            pass
        target = self.config.target_return
        if (
            target is not None
            and progress.solved_at is None
            and len(progress.episodes) >= self.config.return_window
            and progress.mean_return(self.config.return_window) >= target
        ):
            progress.solved_at = time.monotonic() - progress.start

    def _finished(self) -> str:
        c, p = self.config, self.progress
        if p.solved_at is not None:
            return "solved"
        if c.max_env_steps and p.total_env_steps >= c.max_env_steps:
            return "step budget reached"
        if time.monotonic() - p.start >= c.max_seconds:
            return "time limit reached"
        return ""

    def _view(self) -> RichTable:
        p, c = self.progress, self.config
        learner = p.learner
        view = RichTable(show_header=False, box=None, padding=(0, 2))
        elapsed = time.monotonic() - p.start
        view.add_row("elapsed", f"{elapsed:,.0f}s of {c.max_seconds:,.0f}s")
        budget = f" of {c.max_env_steps:,}" if c.max_env_steps else ""
        view.add_row("env steps", f"{p.total_env_steps:,}{budget}", f"{p.env_rate:,.0f}/s")
        if learner is not None:
            view.add_row("learner steps", f"{learner.learner_step:,}", f"{learner.steps_per_second:,.1f}/s")
            view.add_row("policy version", f"{learner.published_version:,}", f"lag {learner.policy_lag:.1f} versions")
        target = f" (target {c.target_return:g})" if c.target_return is not None else ""
        mean = p.mean_return(c.return_window)
        view.add_row(
            f"mean return, last {c.return_window}",
            "-" if math.isnan(mean) else f"{mean:,.1f}{target}",
            f"{len(p.episodes):,} episodes",
        )
        return Group(view, *[f"[yellow]{line}[/]" for line in p.restarts[-3:]])

    def stop(self) -> None:
        """Stops in order: actors (their last chunks still reach replay and the
        learner), then the learner ranks together (rank 0 writes a checkpoint), then the stores."""
        front = [s for s in self.services if s.name == "viewer"]
        stages = [self.actors + front, self.learners, [self.service("parameter"), self.service("replay")]]
        for stage in stages:
            for service in stage:
                if service.alive():
                    service.process.send_signal(signal.SIGTERM)
            for service in stage:
                code = service.stop(timeout=60)
                if code not in (0, None, -signal.SIGTERM):
                    log.warning("%s exited with %s; see %s", service.name, code, service.log_path)
        for channel in self._channels.values():
            channel.close()

    def _summarise(self, reason: str, console: Console) -> dict:
        p, c = self.progress, self.config
        elapsed = p.ended or time.monotonic() - p.start
        learner = p.learner
        summary = {
            "env": c.env,
            "algorithm": c.algorithm,
            "learners": c.learners,
            "ring": c.ring if c.learners > 1 else "none",
            "reason": reason,
            "solved": p.solved_at is not None,
            "seconds_to_solve": p.solved_at,
            "seconds": elapsed,
            "env_steps": p.total_env_steps,
            # While acting: from the first reported step, so start-up does not dilute it.
            "env_steps_per_second": p.total_env_steps / max(1e-9, elapsed - (p.first_steps_at or 0.0)),
            "startup_seconds": p.first_steps_at,
            "learner_steps": learner.learner_step if learner else 0,
            "published_version": learner.published_version if learner else 0,
            "episodes": len(p.episodes),
            "mean_return_last_window": p.mean_return(c.return_window),
            "return_window": c.return_window,
            "target_return": c.target_return,
            "restarts": p.restarts,
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        plot = self._plot()
        table = RichTable(title=f"rlrings mesh: {reason}", show_header=False)
        for key in ("env", "algorithm", "seconds", "startup_seconds", "env_steps", "env_steps_per_second",
                    "learner_steps", "episodes", "mean_return_last_window", "seconds_to_solve"):  # fmt: skip
            value = summary[key]
            table.add_row(key.replace("_", " "), f"{value:,.1f}" if isinstance(value, float) else str(value))
        table.add_row("plot", str(plot) if plot else "-")
        table.add_row("logs", str(self.run_dir / "logs"))
        console.print()
        console.print(table)
        return summary

    def _plot(self) -> Path | None:
        if not self.progress.episodes:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        times, returns = map(np.asarray, zip(*self.progress.episodes))
        window = self.config.return_window
        moving = np.convolve(returns, np.ones(window) / window, mode="valid") if len(returns) >= window else None
        figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
        axes.scatter(times, returns, s=4, alpha=0.3, label="episode return")
        if moving is not None:
            axes.plot(times[window - 1 :], moving, color="C1", label=f"mean of last {window}")
        if self.config.target_return is not None:
            axes.axhline(self.config.target_return, color="C2", linestyle="--", label="target")
        axes.set_xlabel("wall time (s)")
        axes.set_ylabel("return")
        axes.set_title(
            f"{self.config.env}, {self.config.algorithm}, {self.config.actors} actors, {self._learners_text()}"
        )
        axes.legend(loc="lower right")
        figure.tight_layout()
        path = self.run_dir / "returns.png"
        figure.savefig(path)
        plt.close(figure)
        return path


def run_mesh(config: MeshConfig, console: Console | None = None) -> int:
    """Runs the mesh; returns the exit status (0, 1 on failure, 2 on bad config, 130 on Ctrl-C or SIGTERM)."""
    console = console or Console()

    def terminated(signum, frame):  # a process manager's stop: as Ctrl-C, the mesh stops in order
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminated)
    try:
        mesh = Mesh(config)
        summary = mesh.run(console)
    except ConfigError as error:
        console.print(f"[red]rlrings up: {error}[/]")
        return 2
    except RuntimeError as error:
        console.print(f"[red]rlrings up: {error}[/]")
        return 1
    return 130 if summary["reason"] == "interrupted" else 0
