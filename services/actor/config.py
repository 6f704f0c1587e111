"""Configuration of the actor service."""

from __future__ import annotations

import secrets

import pydantic
from pydantic_settings import CliSuppress, SettingsConfigDict

from rlrings import algorithms
from rlrings.algorithms import AlgorithmSettings, TakesAlgorithm
from rlrings.core.shape import MeshShape
from rlrings.ops.processes import usable_cores
from rlrings.rpc.config import WorkerConfig


class ActorConfig(TakesAlgorithm, WorkerConfig):
    """Settings of one actor process."""

    model_config = SettingsConfigDict(env_prefix="RLRINGS_ACTOR_")

    port: int = pydantic.Field(default=8002, ge=0, le=65535)
    """gRPC port of the ActorService; 0 picks a free one."""
    metrics_port: int = pydantic.Field(default=9002, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 picks a free one."""
    num_envs: pydantic.PositiveInt = 8
    """Environments stepped together as one vector, with one batched forward pass."""
    algorithm: CliSuppress[AlgorithmSettings] = pydantic.Field(default_factory=algorithms.default_config)
    """The algorithm and its settings (``name`` picks one of rlrings.algorithms.REGISTRY); the acting
    half reads what it needs (unroll_length, epsilon, ...)."""
    max_in_flight: pydantic.PositiveInt = 4
    """Chunks sent but not acknowledged before stepping pauses (the local buffer)."""
    on_policy: bool | None = None
    """Step each chunk with a policy newer than the last chunk's, once replay has taken the last:
    the learner then trains on data of the policy it is updating, and envs wait while it does;
    None: the algorithm's (true for ppo, false for the asynchronous rest)."""
    inference_address: str | None = None
    """Inference service that runs the policy's forward pass (central, batched with every other
    actor's on the learner's device); None: this process runs it on its CPU threads."""
    env_groups: pydantic.PositiveInt | None = None
    """Groups the envs are split into, stepped in turn: while one group's observations are at the
    policy, the next group steps, so the envs never wait for a forward pass; None: 2 with an
    inference service (its round trip hidden behind a group's steps), 1 without."""
    env_threads: pydantic.PositiveInt | None = None
    """Threads stepping the envs where the env steps in threads of its own (Atari: ale-py's C++
    vector env, each group with its own); None: one per env, up to the cores this process may run
    on (its affinity and its container's CPU limit). ``rlrings up`` gives each of its actors its
    share of the machine's cores and the chart each pod its CPU request (2), so a node's actors do
    not oversubscribe it."""
    weights_timeout_seconds: pydantic.PositiveFloat = 300.0
    """How long to wait at start for the first published weights."""
    seed: int | None = 0
    """Seed of the environments and of action sampling; null draws a fresh one at start. In a mesh
    (``mesh``), seed + 1000 * index from the mesh's seed instead."""
    mesh: CliSuppress[MeshShape | None] = None
    """The mesh this actor is one of (``rlrings up`` and the chart give every service the same):
    with it, the actor plays its own share of the algorithm's settings (DQN's epsilon from the
    spread, SAC's share of the random steps), its seed and, unless given, mesh.envs_per_actor envs."""
    index: pydantic.NonNegativeInt | None = None
    """This actor's place in ``mesh``, 0 to mesh.actors - 1: in the chart, the StatefulSet pod's
    ordinal (RLRINGS_ACTOR_INDEX from the pod-index label)."""

    @pydantic.model_validator(mode="after")
    def _own_share(self) -> ActorConfig:
        """The settings this actor runs with: its env family's settings of record (Atari's) and its
        share of the mesh's, as the mesh planned them."""
        self.algorithm = algorithms.get(self.algorithm.name).for_env(self.algorithm, self.env)
        if self.on_policy is None:
            self.on_policy = algorithms.get(self.algorithm.name).on_policy
        if self.mesh is not None:
            mesh = self.mesh
            if self.index is None:
                raise ValueError("index: an actor of a mesh needs its place (0 to mesh.actors - 1)")
            if self.index >= mesh.actors:
                raise ValueError(
                    f"index: {self.index} is outside the mesh's {mesh.actors} actors (mesh.actors); "
                    "scale actors with the chart's actor.replicas, which sets both"
                )
            self.algorithm = algorithms.get(self.algorithm.name).actor_settings(self.algorithm, self.index, mesh)
            self.seed = mesh.seed + 1000 * self.index
            if "num_envs" not in self.model_fields_set:
                self.num_envs = mesh.envs_per_actor
        elif self.seed is None:
            self.seed = secrets.randbits(31)
        if self.env_groups is None:
            self.env_groups = min(self.num_envs, 2 if self.inference_address else 1)
        if self.env_threads is None:
            self.env_threads = min(self.num_envs, usable_cores())
        if self.env_groups > self.num_envs:
            raise ValueError(
                f"env_groups: {self.env_groups} groups of {self.num_envs} envs (num_envs) leave some empty"
            )
        return self
