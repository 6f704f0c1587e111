"""Configuration of the learner service."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic
from pydantic_settings import CliSuppress, SettingsConfigDict

from rlrings import algorithms
from rlrings.algorithms import AlgorithmSettings, TakesAlgorithm
from rlrings.algorithms.api import LIVE_IN_LEARNER
from rlrings.core.shape import MeshShape
from rlrings.rpc.config import WorkerConfig


class LearnerConfig(TakesAlgorithm, WorkerConfig):
    """Settings of one learner rank."""

    model_config = SettingsConfigDict(env_prefix="RLRINGS_LEARNER_")

    @pydantic.model_validator(mode="after")
    def _planned(self):
        """Its env family's settings of record (Atari's); where none was given, the mesh's batch
        size or the algorithm's own (the registry's, as ``rlrings up`` plans it); in a mesh, the
        settings the mesh plans for its learners (a learning rate that decays over the step budget)."""
        algorithm = algorithms.get(self.algorithm.name)
        self.algorithm = algorithm.for_env(self.algorithm, self.env)  # Atari's settings of record
        pipeline = algorithm.pipeline()
        if self.publish_every is None:
            self.publish_every = pipeline.publish_every
        if algorithm.on_policy and self.publish_every != 1:  # its actors would wait for a version never made
            raise ValueError(
                f"publish_every: {self.algorithm.name} is on-policy: its actors wait for a new version after "
                f"each unroll, so the learner publishes after every update (1), not every {self.publish_every}"
            )
        if self.prefetch is None:
            self.prefetch = pipeline.prefetch
        mesh = self.mesh or MeshShape()
        if self.batch_size is None:
            self.batch_size = algorithm.batch_size(mesh)
        if self.mesh is not None:
            self.algorithm = algorithm.learner_settings(self.algorithm, mesh, self.batch_size)
            if "seed" not in self.model_fields_set:
                self.seed = mesh.seed
        return self

    port: int = pydantic.Field(default=8003, ge=0, le=65535)
    """gRPC port of the LearnerService; 0 picks a free one."""
    metrics_port: int = pydantic.Field(default=9003, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 picks a free one."""
    architecture: str | None = None
    """Network (rlrings.core.models.ARCHITECTURES): mlp; for frames cnn (small), nature (the Nature DQN
    torso) or impala (IMPALA's 15-layer ResNet); None picks by env (Atari: nature, other frames:
    cnn, vectors: mlp)."""
    algorithm: CliSuppress[AlgorithmSettings] = pydantic.Field(default_factory=algorithms.default_config)
    """The algorithm and its settings (``name`` picks one of rlrings.algorithms.REGISTRY)."""
    mesh: CliSuppress[MeshShape | None] = None
    """The mesh this learner trains in (``rlrings up`` and the chart give every service the same):
    its batch size where batch_size is not given, and the step budget the learning rate decays over."""
    batch_size: pydantic.PositiveInt | None = None
    """Items per update: trajectories for the actor-critic algorithms, transitions for dqn and sac,
    steps for bc; None: the algorithm's default (16 trajectories, 128 transitions for dqn, 256 for
    sac, 64 steps for bc), as rlrings up uses."""
    publish_every: int | None = pydantic.Field(default=None, gt=0, json_schema_extra=LIVE_IN_LEARNER)
    """Updates between weight versions sent to the parameter service; None: the algorithm's (1 for
    on-policy ppo, 5 otherwise)."""
    checkpoint_dir: Path = Path("./data/learner")
    """Where checkpoints go; a restart resumes from the newest."""
    checkpoint_every: pydantic.PositiveInt = 500
    """Updates between checkpoints (one is also written at shutdown)."""
    tensorboard_dir: Path | None = Path("./data/tensorboard")
    """TensorBoard event files; None writes none."""
    max_updates: pydantic.NonNegativeInt = 0
    """Stop after this many updates; 0 runs until stopped."""
    demonstrations_table: str = "demonstrations"
    """Replay table of episodes people played in the viewer (or game clients uploaded), which an
    algorithm draws from where it asks to (its bc_pretrain_updates, dqn's demo_fraction)."""
    prefetch: pydantic.PositiveInt | None = None
    """Batches drawn ahead from replay (credits): enough to keep updates fed, few enough that the
    data stays fresh, since items count as sampled when drawn. Above 1, as many are also moved to
    the device ahead, on a thread; at 1 the update's thread moves each when it needs it. None: the
    algorithm's (1 for on-policy ppo, 2 otherwise)."""
    stats_every: pydantic.PositiveInt = 10
    """Updates between reads of the loss terms (kept as tensors in between: reading one waits for
    the device), which is also how often status, metrics and TensorBoard get them."""
    mixed_precision: bool = False
    """Run updates under bfloat16 autocast (convolutions and matrix products in bf16, which needs no
    loss scaling); for GPUs with bf16 units. Parameters and optimizer state stay float32."""
    ring: Literal["none", "horovod", "torch"] = "none"
    """Data-parallel ring of learner ranks: horovod or torch (torch.distributed). Each rank reads its place
    from RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (and LOCAL_RANK, LOCAL_WORLD_SIZE); batch_size is
    per rank."""
    ring_timeout_seconds: pydantic.PositiveFloat = 300.0
    """How long a rank waits for the others: to join the ring, and in a collective."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (this rank's GPU where CUDA is available, else the CPU)."""
