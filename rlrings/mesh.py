"""``rlrings up``: the whole mesh on one machine, on the embedded store.

Replay, parameter, a learner (or a ring of learner ranks) and N actors each
run as their own process on a free loopback port, exactly as they would in a
cluster. This module is their supervisor: it writes each service's config
file into the run directory, starts the processes, restarts any that die (a
ring restarts as a whole, from its last checkpoint), shows live progress from the
services' status RPCs, runs the evaluator (frozen published versions on
fresh episodes, ``rlrings.evaluation``), and at the end stops them in order and
writes a summary (``summary.json``) and a plot of return against env steps and
time (``returns.png``).

"Solved" is the env's own definition, judged on fresh episodes: the mean
greedy return of one frozen version over ``confirm_episodes`` (100 for
CartPole-v1) consecutive evaluation episodes reaches the threshold.
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

from rlrings import algorithms, experience
from rlrings.algorithms import AlgorithmSettings
from rlrings.algorithms.base import TablePlan
from rlrings.algorithms.impala import ImpalaConfig
from rlrings.config import Settings
from rlrings.envs import env_spec
from rlrings.errors import ConfigError
from rlrings.evaluation import Evaluation, Evaluator, achievement_names, crafter_score
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
    algorithm: AlgorithmSettings = ImpalaConfig()
    """The algorithm and its settings: ``name`` picks one of ``rlrings.algorithms.REGISTRY`` (impala:
    V-trace from a FIFO queue; dqn: double DQN, prioritized n-step; ...); the other keys are that
    algorithm's (its Config in ``rlrings/algorithms/<name>.py``). A bare name is short for
    ``{name: ...}``; on the command line, JSON: ``--algorithm '{"name": "ppo", "epochs": 8}'``."""
    actors: pydantic.PositiveInt = 2
    """Actor processes."""
    envs_per_actor: pydantic.PositiveInt = 8
    """Environments each actor steps as one vector."""
    batch_size: pydantic.PositiveInt | None = None
    """Items per learner update; None: the algorithm's default (16 trajectories for the actor-critic
    algorithms, 128 transitions for dqn, 64 steps for bc)."""
    epsilon_decay_env_steps: pydantic.NonNegativeInt = 100_000
    """Algorithms with epsilon exploration (dqn): env steps (all actors together) over which it falls
    from 1 to each actor's final epsilon (spread from 0.1 to 0.01 across actors)."""
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
    max_env_steps: pydantic.NonNegativeInt = 1_000_000
    """Stop after this many env steps across actors; 0: no limit. IMPALA's learning rate falls
    linearly to 0 over this budget."""
    max_seconds: pydantic.PositiveFloat = 600.0
    """Stop after this long."""
    target_return: float | None = None
    """Solved once the evaluator's mean greedy return over `confirm_episodes` fresh episodes of one
    version reaches this; None: the env's own threshold where it has one (475 for CartPole-v1)."""
    return_window: pydantic.PositiveInt = 100
    """Training episodes in the moving mean shown and summarised (100, as the env's definition)."""
    evaluation: bool = True
    """Run the evaluator: each new version plays fresh episodes (greedy and sampled)."""
    eval_episodes: pydantic.PositiveInt = 10
    """Episodes of each evaluation round, greedy and again sampled."""
    confirm_episodes: pydantic.PositiveInt = 100
    """Greedy episodes that confirm a version whose round reached the target (the env's definition)."""
    eval_interval_seconds: pydantic.NonNegativeFloat = 1.0
    """Pause between evaluation rounds."""
    keep_running_seconds: pydantic.NonNegativeFloat = 0.0
    """Once solved, go on training this long and record how much of it the evaluator found solved;
    0 stops at once."""
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

        from rlrings.envs import tasks

        try:
            if self.config.env.startswith(tasks.PREFIX):
                return tasks.family(self.config.env.removeprefix(tasks.PREFIX).split("/")[0]).reward_threshold
            return gym.spec(self.config.env).reward_threshold
        except Exception:
            return None

    def _plan(self) -> list[ServiceProcess]:
        c, run = self.config, self.run_dir
        algorithm = algorithms.get(c.algorithm.name)
        algorithm.check(self.spec)  # DQN in a Box action space: refused before anything starts
        batch = c.batch_size or algorithm.default_batch_size
        settings = c.algorithm.model_dump()
        unroll = settings.get("unroll_length", 1)
        if c.max_env_steps and not settings["learning_rate_decay_updates"] and algorithm.anneal_over_budget:
            # the learning rate decays over the updates the step budget allows
            settings["learning_rate_decay_updates"] = max(1, c.max_env_steps // (batch * c.learners * unroll))
        plan = TablePlan(TABLE, batch, c.actors * c.envs_per_actor, c.envs_per_actor)
        tables = experience.replay_tables(c.algorithm, self.spec, plan)

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
            "algorithm": settings,
            "table": TABLE,
            "batch_size": batch,
            "publish_every": c.publish_every,
            "checkpoint_every": c.checkpoint_every,
            "checkpoint_dir": str(run / "checkpoints"),
            "tensorboard_dir": str(run / "tensorboard"),
            "seed": c.seed,
        }
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
                    "algorithm": settings | self._exploration(i, settings),
                    "table": TABLE,
                    "seed": c.seed + 1000 * i,
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

    def _exploration(self, i: int, settings: dict) -> dict:
        """Algorithms with epsilon exploration (DQN): actor i's epsilon, annealed from 1 over its
        share of the decay to its own final value; final values spread geometrically from 0.1 to
        0.01 across actors (Ape-X's spread, narrowed so that with 2 actors neither is almost greedy
        nor almost random). Others: nothing."""
        c = self.config
        if "epsilon" not in settings:
            return {}
        final = 0.1 ** (1 + i / (c.actors - 1)) if c.actors > 1 else 0.1**1.5
        return {"epsilon": final, "epsilon_start": 1.0, "epsilon_decay_steps": c.epsilon_decay_env_steps // c.actors}

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
            f"[bold]rlrings[/] mesh: {c.env} with {c.algorithm.name}, {c.actors} actors x {c.envs_per_actor} envs, "
            f"{self._learners_text()}; run dir {self.run_dir}"
        )
        if self.viewer_url:
            console.print(f"watch the agent or play at [bold]{self.viewer_url}[/]")
        for service in self.services:
            service.start()
        evaluator = self._start_evaluator()
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
            if evaluator is not None:
                evaluator.stop()
            self.stop()
        return self._summarise(reason, console)

    def _start_evaluator(self) -> Evaluator | None:
        c = self.config
        if not c.evaluation:
            return None
        from rlrings.parameter_client import ParameterClient

        parameter = self.service("parameter")
        security = ClientSecurity.of(TlsConfig(**parameter.config.get("tls", {})), AuthConfig())
        progress = self.progress

        def context() -> tuple[float, int]:
            return time.monotonic() - progress.start, progress.total_env_steps

        board = None

        def on_result(result: Evaluation, confirmation: Evaluation | None) -> None:
            nonlocal board
            if board is None:  # torch is imported by now, in the evaluator's thread
                from torch.utils.tensorboard import SummaryWriter

                board = SummaryWriter(str(self.run_dir / "tensorboard" / "evaluator"))
            board.add_scalar("eval/greedy_return", result.greedy_mean, result.env_steps)
            if result.sampled_returns:
                board.add_scalar("eval/sampled_return", result.sampled_mean, result.env_steps)
            board.flush()
            progress.evaluations.append(result)
            if confirmation is not None:
                progress.confirmations.append(confirmation)
                if progress.solved_by is None and confirmation.greedy_mean >= c.target_return:
                    progress.solved_by = confirmation
                    progress.solved_confirmed_at = time.monotonic() - progress.start

        return Evaluator(
            c.env, ParameterClient(parameter.address, security=security), context, on_result,
            episodes=c.eval_episodes, confirm_episodes=c.confirm_episodes, target=c.target_return,
            sampled=algorithms.get(c.algorithm.name).stochastic, interval_seconds=c.eval_interval_seconds, seed=c.seed,
        ).start()  # fmt: skip

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
                for name in episode.achievements:
                    progress.achievement_episodes[name] = progress.achievement_episodes.get(name, 0) + 1
                progress.episodes.append(
                    (episode.end_time - progress.start_wall, episode.episode_return, progress.total_env_steps)
                )
                progress.last_episode[actor.name] = episode.index
        progress.episodes.sort(key=lambda e: e[0])
        progress.env_rate = rate
        if progress.first_steps_at is None and progress.total_env_steps:
            progress.first_steps_at = time.monotonic() - progress.start
        try:
            progress.learner = learner = self._stub(self.learners[0], learner_pb2_grpc.LearnerServiceStub).GetStatus(
                learner_pb2.GetLearnerStatusRequest(), timeout=2
            )
            if learner.learner_step:
                progress.lags.append((learner.policy_lag, learner.policy_lag_updates, learner.policy_lag_seconds))
        except grpc.RpcError:
            pass
        target = self.config.target_return
        if (
            target is not None
            and progress.train_solved_at is None
            and len(progress.episodes) >= self.config.return_window
            and progress.mean_return(self.config.return_window) >= target
        ):
            progress.train_solved_at = (time.monotonic() - progress.start, progress.total_env_steps)

    def _finished(self) -> str:
        c, p = self.config, self.progress
        if p.solved_confirmed_at is not None and time.monotonic() - p.start >= p.solved_at + c.keep_running_seconds:
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
                f"{len(last.greedy_returns)} fresh episodes",
            )  # fmt: skip
        if p.solved_by is not None:
            view.add_row(
                "solved",
                f"version {p.solved_by.version:,}, {p.solved_by.greedy_mean:,.1f} over "
                f"{len(p.solved_by.greedy_returns)} episodes",
                f"at {p.solved_by.env_steps:,} env steps, {p.solved_at:,.1f}s",
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
            **self._achievements(),
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
                    )
                }
                for e in p.evaluations
            ],  # fmt: skip
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
                    "learner_steps", "episodes", "mean_return_last_window", "seconds_to_solve", "env_steps_to_solve",
                    "policy_lag_versions_median", "stayed_solved_fraction"):  # fmt: skip
            value = summary[key]
            number = isinstance(value, float | int) and not isinstance(value, bool)
            table.add_row(
                key.replace("_", " "), f"{value:,.{1 if isinstance(value, float) else 0}f}" if number else str(value)
            )
        table.add_row("plot", str(plot) if plot else "-")
        table.add_row("logs", str(self.run_dir / "logs"))
        console.print()
        console.print(table)
        return summary

    def _achievements(self) -> dict:
        """Success rate (percent of training episodes) of each achievement and the Crafter score,
        for games with achievements; nothing for others."""
        names = achievement_names(self.config.env)
        episodes = len(self.progress.episodes)
        if not names or not episodes:
            return {}
        rates = {name: 100.0 * self.progress.achievement_episodes.get(name, 0) / episodes for name in names}
        return {"achievement_success_percent": rates, "crafter_score": crafter_score(rates)}

    def _plot(self) -> Path | None:
        """Returns against env steps (training episodes, their moving mean, evaluations) and against time."""
        p = self.progress
        if not p.episodes and not p.evaluations:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        c = self.config
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
        figure.suptitle(f"{c.env}, {c.algorithm.name}, {c.actors} actors, {self._learners_text()}")
        figure.tight_layout()
        path = self.run_dir / "returns.png"
        figure.savefig(path)
        plt.close(figure)
        return path


def _median(values) -> float | None:
    values = list(values)
    return float(np.median(values)) if values else None


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
