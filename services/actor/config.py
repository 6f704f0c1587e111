"""Configuration of the actor service."""

from __future__ import annotations

import secrets

import pydantic
from pydantic_settings import CliSuppress, SettingsConfigDict

from rlrings.algorithms import AlgorithmSettings, TakesAlgorithm
from rlrings.algorithms.impala import ImpalaConfig
from rlrings.config import WorkerConfig


class ActorConfig(TakesAlgorithm, WorkerConfig):
    """Settings of one actor process."""

    model_config = SettingsConfigDict(env_prefix="RLRINGS_ACTOR_")

    port: int = pydantic.Field(default=8002, ge=0, le=65535)
    """gRPC port of the ActorService; 0 picks a free one."""
    metrics_port: int = pydantic.Field(default=9002, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 picks a free one."""
    num_envs: pydantic.PositiveInt = 8
    """Environments stepped together as one vector, with one batched forward pass."""
    algorithm: CliSuppress[AlgorithmSettings] = ImpalaConfig()
    """The algorithm and its settings (``name`` picks one of rlrings.algorithms.REGISTRY); the acting
    half reads what it needs (unroll_length, epsilon, ...)."""
    max_in_flight: pydantic.PositiveInt = 4
    """Chunks sent but not acknowledged before stepping pauses (the local buffer)."""
    weights_timeout_seconds: pydantic.PositiveFloat = 300.0
    """How long to wait at start for the first published weights."""
    seed: int | None = 0
    """Seed of the environments and of action sampling; null draws a fresh one at start, so
    that the replicas of one Deployment (which share their settings) explore differently."""

    @pydantic.model_validator(mode="after")
    def _draw_seed(self) -> ActorConfig:
        if self.seed is None:
            self.seed = secrets.randbits(31)
        return self
