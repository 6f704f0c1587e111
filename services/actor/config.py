"""Configuration of the actor service."""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic_settings import SettingsConfigDict

from rlrings.config import ServiceConfig


class ActorConfig(ServiceConfig):
    """Settings of one actor process."""

    model_config = SettingsConfigDict(env_prefix="RLRINGS_ACTOR_")

    port: int = pydantic.Field(default=8002, ge=0, le=65535)
    """gRPC port of the ActorService; 0 picks a free one."""
    metrics_port: int = pydantic.Field(default=9002, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 picks a free one."""
    replay_address: str = "127.0.0.1:8000"
    """Replay service to write experience to."""
    parameter_address: str = "127.0.0.1:8001"
    """Parameter service to take weights from."""
    env: str = "CartPole-v1"
    """Environment id: a Gymnasium id, 'crafter' or 'minerl:<id>'."""
    num_envs: pydantic.PositiveInt = 8
    """Environments stepped together as one vector, with one batched forward pass."""
    algorithm: Literal["impala", "dqn"] = "impala"
    """What the learner runs; decides what the actor writes."""
    table: str = "experience"
    """Replay table to write to."""
    unroll_length: pydantic.PositiveInt = 20
    """IMPALA: steps per trajectory item."""
    chunk_length: pydantic.PositiveInt = 64
    """DQN: transitions per chunk sent to replay."""
    gamma: float = pydantic.Field(default=0.99, gt=0, le=1)
    """Discount, used to bootstrap episodes cut by a time limit (and for n-step returns)."""
    n_step: pydantic.PositiveInt = 3
    """DQN: steps per n-step return."""
    epsilon: float = pydantic.Field(default=0.05, ge=0, le=1)
    """DQN: probability of a random action."""
    max_in_flight: pydantic.PositiveInt = 4
    """Chunks sent but not acknowledged before stepping pauses (the local buffer)."""
    seed: int = 0
    """Seed of the environments and of action sampling."""
    torch_threads: pydantic.PositiveInt = 1
    """CPU threads for inference."""
    weights_timeout_seconds: pydantic.PositiveFloat = 300.0
    """How long to wait at start for the first published weights."""
