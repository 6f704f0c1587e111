"""Configuration of the parameter service."""

from __future__ import annotations

from pathlib import Path

import pydantic
from pydantic_settings import SettingsConfigDict

from rlrings.rpc.config import ServiceConfig


class ParameterConfig(ServiceConfig):
    """Settings of the parameter service."""

    model_config = SettingsConfigDict(env_prefix="RLRINGS_PARAMETER_")

    port: int = pydantic.Field(default=8001, ge=0, le=65535)
    """gRPC port; 0 picks a free one (printed at start)."""
    metrics_port: int = pydantic.Field(default=9001, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 picks a free one."""
    directory: Path = Path("./data/parameter")
    """Where versions are kept; a restart serves what is there."""
    keep_versions: pydantic.PositiveInt = 5
    """Newest versions retained; the ones tagged 'best', 'solved' or by a publisher, and those held
    by an evaluator, are kept besides, whatever their age."""
    max_holds: pydantic.PositiveInt = 16
    """Versions readers may hold at once (Fetch's hold_seconds: an evaluator keeps what it plays
    from pruning until it reports); past it, a hold is RESOURCE_EXHAUSTED."""
    max_named_tags: pydantic.PositiveInt = 256
    """Named tags (besides 'latest' and 'best') the store holds at once; each keeps its version
    whatever its age, so they are bounded: a publish that would add one more is RESOURCE_EXHAUSTED
    until DeleteTag removes one."""
    max_model_bytes: pydantic.PositiveInt = 2 * 1024**3
    """Largest model accepted by Publish; larger ones get RESOURCE_EXHAUSTED."""
    piece_bytes: int = pydantic.Field(default=1024 * 1024, ge=1024)
    """Size of the pieces Fetch streams weights in."""
