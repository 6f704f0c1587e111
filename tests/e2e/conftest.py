"""One real Cassandra ring for the end-to-end tests that need it: three nodes on
127.0.0.1-3, started once per session (about 20 s) and wiped at the end."""

from __future__ import annotations

import socket

import pytest

from dev.cassandra_ring import CQL_PORT, Ring

HEAP = "384M"


@pytest.fixture(scope="session")
def cassandra_ring(tmp_path_factory):
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", CQL_PORT)) == 0:
            pytest.fail("something already listens on 127.0.0.1:9042; stop it (make cassandra-down) first")
    ring = Ring(tmp_path_factory.mktemp("cassandra") / "ring", nodes=3)
    try:
        yield ring.up(heap=HEAP)
    finally:
        ring.wipe()


@pytest.fixture
def whole_ring(cassandra_ring):
    """The ring, with every node running again after a test that stopped some."""
    yield cassandra_ring
    cassandra_ring.up(heap=HEAP)
