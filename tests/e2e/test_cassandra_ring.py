"""The development Cassandra ring (dev/cassandra_ring.py): three real nodes on
127.0.0.1-3, fetched from Maven Central, answering CQL at QUORUM with one node down."""

from __future__ import annotations

import time

import pytest

from dev.cassandra_ring import Ring
from tests.e2e.conftest import HEAP

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def session(ring: Ring):
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile

    profile = ExecutionProfile(consistency_level=ConsistencyLevel.QUORUM, request_timeout=20)
    cluster = Cluster(ring.contact_points, execution_profiles={EXEC_PROFILE_DEFAULT: profile}, protocol_version=5)
    return cluster, cluster.connect()


def retried(query, seconds: float = 30.0):
    """Until the failure detector convicts a killed node (a few seconds), a coordinator may
    still wait on it and time out; a client retries, as replay's store will."""
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable

    deadline = time.monotonic() + seconds
    while True:
        try:
            return query()
        except (ReadTimeout, Unavailable, OperationTimedOut):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_three_nodes_form_one_ring_that_survives_a_node_down_at_quorum(whole_ring):
    ring = whole_ring
    assert [ready for *_, ready in ring.status()] == [True, True, True]
    cluster, cql = session(ring)
    try:
        hosts = sorted(host.address for host in cluster.metadata.all_hosts())
        assert hosts == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        cql.execute("CREATE KEYSPACE k WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}")
        cql.execute("CREATE TABLE k.items (id int PRIMARY KEY, data blob)")
        insert = cql.prepare("INSERT INTO k.items (id, data) VALUES (?, ?)")
        for i in range(50):
            cql.execute(insert, (i, bytes([i]) * 100))

        ring.nodes[2].stop(kill=True)  # kill -9 one node: QUORUM is 2 of 3
        for i in range(50, 100):
            cql.execute(insert, (i, bytes([i % 256]) * 100))
        rows = {row.id: row.data for row in retried(lambda: cql.execute("SELECT id, data FROM k.items"))}
        assert sorted(rows) == list(range(100))
        assert all(data == bytes([i % 256]) * 100 for i, data in rows.items())

        ring.up(heap=HEAP)  # the node comes back with its data directory and catches up
        assert ring.status()[2][3]
    finally:
        cluster.shutdown()
