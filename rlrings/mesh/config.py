"""Settings of ``rlrings up`` (the whole mesh on one machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic
from pydantic_settings import CliSuppress, SettingsConfigDict

from rlrings import algorithms
from rlrings.algorithms import AlgorithmSettings, TakesAlgorithm
from rlrings.core.shape import MeshShape
from rlrings.rpc.config import Settings


class MeshConfig(TakesAlgorithm, Settings):
    """Settings of ``rlrings up``."""

    model_config = SettingsConfigDict(env_prefix="RLRINGS_UP_")

    env: str = "CartPole-v1"
    """Environment id (every kind is listed below the flags)."""
    algorithm: CliSuppress[AlgorithmSettings] = pydantic.Field(default_factory=algorithms.default_config)
    """The algorithm and its settings (every algorithm is listed below the flags): ``--algorithm NAME``,
    then ``--algorithm.SETTING VALUE`` for each setting to change, or JSON: ``--algorithm '{"name":
    "ppo", "epochs": 8}'``; in a config file, ``algorithm: {name: ppo, epochs: 8}``."""
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
    inference: Literal["auto", "local", "central"] = "auto"
    """Where actors' policies run: central (an inference service beside the learner, batching
    every actor's forward pass on its device; actors only step envs, in two groups each), local
    (each actor on its own CPU thread), or auto (central where the machine has a GPU)."""
    publish_every: pydantic.PositiveInt | None = None
    """Learner updates between weight versions; None: the algorithm's (1 for on-policy ppo, 5
    otherwise)."""
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
    progress_seconds: pydantic.PositiveFloat = 5.0
    """Seconds between progress lines where the output is not a terminal (a log, CI, a pipe); a
    terminal gets the live table instead."""
    target_return: float | None = None
    """Solved once the evaluator's mean greedy return over confirm_episodes fresh episodes of one
    version reaches this, in each of confirm_windows windows, with confirm_sigmas standard errors
    to spare; None: the env's own threshold where it has one (475 for CartPole-v1)."""
    return_window: pydantic.PositiveInt = 100
    """Training episodes in the moving mean shown and summarised (100, as the env's definition)."""
    evaluation: bool = True
    """Run the evaluator: each new version plays fresh episodes (greedy and sampled)."""
    eval_episodes: pydantic.PositiveInt = 10
    """Episodes of each evaluation round, greedy and again sampled."""
    confirm_episodes: pydantic.PositiveInt = 100
    """Greedy episodes that confirm a version whose round reached the target (the env's definition)."""
    confirm_windows: pydantic.PositiveInt = 2
    """Independent windows of confirm_episodes that must each reach the target before a version
    counts as solved. The env's definition asks for one; the first window to pass also picks
    out versions that sit at the threshold and passed by luck (half of such fresh windows then
    fall short), and a second keeps those from being handed over as the model that solved."""
    confirm_sigmas: pydantic.NonNegativeFloat = 2.5
    """Standard errors of one window's mean (the episodes' deviation over the square root of
    confirm_episodes) by which the mean of all the confirmation windows must clear the target:
    the model handed over then passes a fresh check of confirm_episodes episodes (about 99 times
    in 100), not only the ones it was picked by. 0: the windows' means alone (the env's definition)."""
    eval_envs: pydantic.PositiveInt = 32
    """Envs the evaluator plays at once (greedy and sampled episodes together), one batched forward
    pass per step."""
    eval_device: str = "auto"
    """Where the evaluator's forward passes run: cpu, cuda, cuda:N, or auto (the GPU where CUDA is
    available, else one CPU thread)."""
    eval_interval_seconds: pydantic.NonNegativeFloat = 1.0
    """Pause between evaluation rounds."""
    eval_niceness: int = pydantic.Field(default=0, ge=0, le=19)
    """How far below training's CPU priority the evaluator's rounds play (Linux niceness of their
    thread and of the env threads it starts): where actors and the learner keep every core busy,
    rounds take what they leave instead of a core of their own (on 2 cores, Pong trained at 1.22x
    the frames/s with 10 than with 0), but a short run may then end before its first round does;
    on a machine with cores to spare they run as fast. A confirmation, which ends a solved run,
    plays at training's priority. 0: rounds too."""
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

    def shape(self) -> MeshShape:
        """The mesh's shape, as every service is told it (and as the chart tells its pods)."""
        return MeshShape(
            actors=self.actors,
            envs_per_actor=self.envs_per_actor,
            learners=self.learners,
            batch_size=self.batch_size,
            max_env_steps=self.max_env_steps,
            epsilon_decay_env_steps=self.epsilon_decay_env_steps,
            seed=self.seed,
        )

    @pydantic.field_validator("cassandra", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [point.strip() for point in value.split(",") if point.strip()]
        return value
