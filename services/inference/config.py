"""Configuration of the inference service."""

from __future__ import annotations

import pydantic
from pydantic_settings import SettingsConfigDict

from rlrings.rpc.config import ServiceConfig


class InferenceConfig(ServiceConfig):
    """Settings of the inference service."""

    model_config = SettingsConfigDict(env_prefix="RLRINGS_INFERENCE_")

    port: int = pydantic.Field(default=8005, ge=0, le=65535)
    """gRPC port; 0 picks a free one (printed at start)."""
    metrics_port: int = pydantic.Field(default=9005, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 picks a free one."""
    parameter_address: str = "127.0.0.1:8001"
    """Parameter service whose newest weights answer (watched, swapped in between forward passes)."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (the GPU where CUDA is available, else the CPU)."""
    torch_threads: pydantic.PositiveInt = 1
    """CPU threads PyTorch may use (on the CPU, the forward pass's)."""
    max_batch: pydantic.PositiveInt = 1024
    """Most observations one forward pass takes, from as many requests as fit."""
    max_wait_ms: pydantic.NonNegativeFloat = 0.0
    """How long the first request of a pass waits for others to join it; 0: none, a pass starts as
    soon as the device is free and takes everything that arrived while the previous one ran (under
    load that is the batching; with few callers a wait is only latency)."""
    max_observations_per_request: pydantic.PositiveInt = 1024
    """Most observations in one request (more is INVALID_ARGUMENT)."""
    max_in_flight_per_stream: pydantic.PositiveInt = 4
    """Requests of one stream answered or in the batch at once; past it the server stops reading
    that stream, so a caller that sends and never reads holds no more than this."""
    pinned_models: pydantic.PositiveInt = 4
    """Models besides the newest kept for requests that pin a tag or a version (least recently used go)."""
    tag_seconds: pydantic.PositiveFloat = 10.0
    """How long a pinned tag's version is trusted before it is looked up again (tags move)."""
    max_version_wait_seconds: pydantic.PositiveFloat = 60.0
    """How long a request's min_version may wait for that version to arrive (UNAVAILABLE after)."""
