"""Shared fixtures: table configs, and real replay and parameter servers on loopback ports."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from rlrings.clients.replay import ReplayClient
from rlrings.rpc.config import load_config
from rlrings.services.parameter.config import ParameterConfig
from rlrings.services.parameter.server import ParameterServer
from rlrings.services.replay.config import ReplayConfig, TableConfig
from rlrings.services.replay.server import ReplayServer
from tests.helpers import FRAME_SIGNATURE, table

# Fuzzing runs briefly by default; HYPOTHESIS_PROFILE=long runs it for longer.
settings.register_profile("ci", max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
settings.register_profile("long", max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def start_replay(tmp_path):
    """Starts in-process replay servers on free loopback ports; stops them after the test."""
    servers: list[ReplayServer] = []

    def start(tables: list[dict], **settings) -> ReplayServer:
        settings = {"port": 0, "metrics_port": 0, "snapshot_dir": tmp_path / "replay", **settings}
        server = ReplayServer(load_config(ReplayConfig, [], tables=tables, **settings)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace=0)


@pytest.fixture
def replay(start_replay):
    """A replay server with tables 'uniform', 'fifo', 'prio' and 'queue', and a client."""
    server = start_replay(
        [
            table("uniform"),
            table("fifo", selector="fifo"),
            table("prio", selector="prioritized", priority_exponent=1.0),
            TableConfig.queue("queue", FRAME_SIGNATURE, max_size=64).model_dump(),
        ]
    )
    with ReplayClient(server.address) as client:
        yield server, client.wait_ready(10)


@pytest.fixture
def start_parameter(tmp_path):
    """Starts in-process parameter services on free loopback ports; stops them after the test."""
    servers = []

    def start(**settings):
        settings = {"port": 0, "metrics_port": 0, "directory": tmp_path / "weights", **settings}
        server = ParameterServer(load_config(ParameterConfig, [], **settings)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace=0)
