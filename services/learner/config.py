"""Configuration of the learner service."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic
from pydantic_settings import SettingsConfigDict

from rlrings.config import WorkerConfig


class LearnerConfig(WorkerConfig):
    """Settings of one learner rank."""

    model_config = SettingsConfigDict(env_prefix="RLRINGS_LEARNER_")

    port: int = pydantic.Field(default=8003, ge=0, le=65535)
    """gRPC port of the LearnerService; 0 picks a free one."""
    metrics_port: int = pydantic.Field(default=9003, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 picks a free one."""
    architecture: str | None = None
    """Network: mlp or cnn64; None picks by observation (images get cnn64)."""
    batch_size: pydantic.PositiveInt = 16
    """Items per update: trajectories for impala, transitions for dqn."""
    learning_rate: pydantic.PositiveFloat | None = None
    """Adam learning rate; None: the algorithm's default (impala 5e-4, dqn 5e-4)."""
    learning_rate_decay_updates: pydantic.NonNegativeInt = 0
    """IMPALA: updates over which the learning rate falls linearly to 0 (the run's budget); 0: constant."""
    trace_decay: float = pydantic.Field(default=1.0, ge=0, le=1)
    """IMPALA: V-trace's lambda (1: the paper's default)."""
    normalize_returns: bool = True
    """IMPALA: learn values in units of the returns' running scale and divide advantages by it."""
    normalize_advantages: bool = False
    """IMPALA: scale each batch's advantages to zero mean and unit variance (measured to destabilise
    IMPALA on CartPole once the policy is good: its advantages shrink and normalising blows them up)."""
    entropy_cost: pydantic.NonNegativeFloat = 0.01
    """IMPALA: weight of the entropy bonus."""
    baseline_cost: pydantic.NonNegativeFloat = 0.5
    """IMPALA: weight of the value loss."""
    target_update_every: pydantic.PositiveInt = 250
    """DQN: updates between target-network copies."""
    importance_sampling_exponent: float = pydantic.Field(default=0.4, ge=0, le=1)
    """DQN: beta of the prioritized-replay importance weights at the start; it rises linearly to 1."""
    importance_sampling_anneal_updates: pydantic.NonNegativeInt = 10_000
    """DQN: updates over which beta rises to 1; 0 keeps it where it starts."""
    publish_every: pydantic.PositiveInt = 5
    """Updates between weight versions sent to the parameter service."""
    checkpoint_dir: Path = Path("./data/learner")
    """Where checkpoints go; a restart resumes from the newest."""
    checkpoint_every: pydantic.PositiveInt = 500
    """Updates between checkpoints (one is also written at shutdown)."""
    tensorboard_dir: Path | None = Path("./data/tensorboard")
    """TensorBoard event files; None writes none."""
    max_updates: pydantic.NonNegativeInt = 0
    """Stop after this many updates; 0 runs until stopped."""
    demonstrations_table: str = "demonstrations"
    """Replay table of episodes people played in the viewer."""
    bc_pretrain_steps: pydantic.NonNegativeInt = 0
    """Behaviour-cloning updates on the demonstrations before learning from experience; 0: none."""
    demo_fraction: float = pydantic.Field(default=0.0, ge=0, lt=1)
    """DQN: share of each batch drawn from the demonstrations (as one-step transitions)."""
    prefetch: pydantic.PositiveInt = 2
    """Batches drawn ahead from replay (credits): enough to keep updates fed, few enough that
    the data stays fresh, since items count as sampled when drawn."""
    ring: Literal["none", "horovod", "torch"] = "none"
    """Data-parallel ring of learner ranks: horovod or torch (torch.distributed). Each rank reads its place
    from RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (and LOCAL_RANK, LOCAL_WORLD_SIZE); batch_size is
    per rank."""
    ring_timeout_seconds: pydantic.PositiveFloat = 300.0
    """How long a rank waits for the others: to join the ring, and in a collective."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (this rank's GPU where CUDA is available, else the CPU)."""
