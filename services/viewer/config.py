"""Configuration of the viewer service."""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic_settings import SettingsConfigDict

from rlrings.rpc.config import WorkerConfig


class ViewerConfig(WorkerConfig):
    """Settings of the viewer."""

    model_config = SettingsConfigDict(env_prefix="RLRINGS_VIEWER_")

    port: int = pydantic.Field(default=8004, ge=0, le=65535)
    """gRPC port of the ViewerService; 0 picks a free one."""
    metrics_port: int = pydantic.Field(default=9004, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 picks a free one."""
    http_port: int = pydantic.Field(default=8080, ge=0, le=65535)
    """Port of the web page; 0 picks a free one."""
    demonstrations_table: str = "demonstrations"
    """Replay table that played episodes are written to."""
    fps: pydantic.PositiveFloat = 15.0
    """Steps per second when watching or playing."""
    max_viewers: pydantic.PositiveInt = 8
    """Open sessions (browser or gRPC) at most; more are refused with a message."""
    max_sessions_per_client: pydantic.PositiveInt = 2
    """Open sessions of one client (its token's name, or its address without tokens) at most, so that
    a few clients cannot take every slot."""
    play_idle_seconds: pydantic.PositiveFloat = 300.0
    """A played session with no key pressed for this long is ended (its slot freed, the episode
    stored as truncated)."""
    frame_format: Literal["jpeg", "png"] = "jpeg"
    """How frames are encoded for the page."""
    max_frame_width: pydantic.PositiveInt = 480
    """Frames wider than this are scaled down before encoding."""
    allowed_hosts: list[str] = ["127.0.0.1", "localhost", "[::1]"]
    """Host names the page answers to (the Host header, port aside); others get 421, which stops
    DNS rebinding. Add the name users reach it by (an Ingress host); ["*"] answers any."""
    allowed_origins: list[str] = []
    """Origins (scheme://host[:port]) besides the page's own whose scripts may open its WebSocket;
    a browser on any other site is refused (403), whatever cookies it carries."""
