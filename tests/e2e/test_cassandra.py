"""Cassandra end to end, on one real three-node ring (127.0.0.1-3, started once
for this module, about 20 s, and wiped after it): the development ring itself at
QUORUM with a node down; then replay on it: chunks round-trip through the ring,
nothing acknowledged is lost to a kill -9 of the replay server or of a Cassandra
node, a node that comes back catches up, shards do not collide, updated
priorities come back, and uniform tables sample beyond memory."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from dev.cassandra_ring import CQL_PORT, Ring
from rlrings.clients.replay import ReplayClient
from rlrings.core.errors import UnavailableError
from rlrings.ops.processes import free_port
from rlrings.rpc import codec
from rlrings.rpc.config import load_config
from rlrings.services.replay.config import ReplayConfig
from rlrings.services.replay.server import ReplayServer
from tests.helpers import frames, table

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HEAP = "384M"


@pytest.fixture(scope="module")
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


ALL_DTYPES = {
    "b": {"dtype": "bool", "shape": [3]},
    "u8": {"dtype": "uint8", "shape": [4, 4]},
    "i8": {"dtype": "int8"},
    "u16": {"dtype": "uint16", "shape": [2]},
    "i16": {"dtype": "int16"},
    "u32": {"dtype": "uint32"},
    "i32": {"dtype": "int32", "shape": [2]},
    "u64": {"dtype": "uint64"},
    "i64": {"dtype": "int64"},
    "f16": {"dtype": "float16", "shape": [3]},
    "f32": {"dtype": "float32", "shape": [5]},
    "f64": {"dtype": "float64", "shape": [16]},
}


def ring_settings(ring, keyspace: str, shard: str = "s", **cassandra) -> dict:
    return {
        "store": "cassandra",
        "grace_seconds": 1,
        "cassandra": {
            "contact_points": ring.contact_points,
            "keyspace": keyspace,
            "replication_factor": 3,
            "shard": shard,
            "state_interval_seconds": 0.5,
            **cassandra,
        },
    }


@pytest.fixture
def start_ring_replay():
    servers: list[ReplayServer] = []

    def start(ring, tables: list[dict], keyspace: str, shard: str = "s", **cassandra) -> ReplayServer:
        config = load_config(
            ReplayConfig, [], tables=tables, port=0, metrics_port=0, **ring_settings(ring, keyspace, shard, **cassandra)
        )
        server = ReplayServer(config).start()
        servers.append(server)
        ReplayClient(server.address).wait_ready(60).close()
        return server

    yield start
    for server in servers:
        server.stop(grace=0)


def every_item(client: ReplayClient, name: str):
    """All items of a fifo table, oldest first."""
    size = client.info([name])[name].size
    return next(iter(client.sample(name, batch_size=size, num_batches=1)))


def random_chunk(rng, steps: int) -> dict[str, np.ndarray]:
    chunk = {}
    for name, spec in ALL_DTYPES.items():
        dtype, shape = np.dtype(spec["dtype"]), (steps, *spec.get("shape", []))
        if dtype.kind == "b":
            chunk[name] = rng.random(shape) < 0.5
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            chunk[name] = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        else:
            chunk[name] = (rng.standard_normal(shape) * 1e3).astype(dtype)
    return chunk


def test_every_dtype_round_trips_through_the_ring_and_shards_do_not_collide(cassandra_ring, start_ring_replay):
    tables = [table("t", signature=ALL_DTYPES, sequence_length=2, max_size=1000, selector="fifo")]
    written = {"a": [], "b": []}
    for shard, compression in (("a", codec.Compression.COMPRESSION_NONE), ("b", codec.Compression.COMPRESSION_LZ4)):
        # segment_bytes below one chunk: every chunk is split over several rows
        server = start_ring_replay(cassandra_ring, tables, "roundtrip", shard, segment_bytes=4096)
        rng = np.random.default_rng(ord(shard))
        with ReplayClient(server.address) as client, client.writer("t", 24, compression=compression) as writer:
            for _ in range(6):
                chunk = random_chunk(rng, 24)
                written[shard].append(chunk)
                writer.write_chunk(chunk)
        assert server.replay.ring.written_rows > 6, "chunks were split into rows under segment_bytes"
        server.stop()

    for shard in ("a", "b"):  # fresh servers: everything comes back from the ring, each shard its own
        server = start_ring_replay(cassandra_ring, tables, "roundtrip", shard, segment_bytes=4096)
        with ReplayClient(server.address) as client:
            batch = every_item(client, "t")
        assert len(batch.keys) == 6 * 12
        for name in ALL_DTYPES:
            expected = np.concatenate([chunk[name] for chunk in written[shard]])
            got = batch.columns[name].reshape(expected.shape)
            assert got.dtype == expected.dtype, name
            assert np.array_equal(got, expected), f"column {name} of shard {shard}"


def start_process(config_path):
    return subprocess.Popen(
        [sys.executable, "-m", "rlrings.services.replay", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_kill_9_of_replay_during_inserts_loses_no_acknowledged_chunk(cassandra_ring, tmp_path):
    port = free_port()
    config = tmp_path / "replay.yaml"
    config.write_text(
        json.dumps(
            {
                "port": port,
                "metrics_port": 0,
                "tables": [table("t", max_size=100_000, selector="fifo")],
                **ring_settings(cassandra_ring, "killed"),
            }
        )
    )
    address = f"127.0.0.1:{port}"
    process = start_process(config)
    client = ReplayClient(address).wait_ready(60)
    writer = client.writer("t", chunk_length=8, max_in_flight=8, retry_seconds=60)
    stop = threading.Event()

    def write():
        step = 0
        while not stop.is_set():
            try:
                writer.write_chunk(frames(8, start=step))
            except Exception:  # the writer was closed under it
                return
            step += 8

    thread = threading.Thread(target=write)
    thread.start()
    deadline = time.monotonic() + 60
    while writer.acked_items < 800 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()  # kill -9 in the middle of the stream
    process.communicate(timeout=30)
    acked = writer.acked_items
    stop.set()
    writer.close(flush=False)
    thread.join(30)
    assert acked >= 800

    restarted = start_process(config)
    try:
        with ReplayClient(address).wait_ready(60) as again:
            batch = every_item(again, "t")
            steps = batch.columns["action"][:, 0]
            assert len(np.unique(steps)) == len(steps), "no chunk is there twice"
            assert set(range(acked)) <= set(steps.tolist()), "every acknowledged item is there"
            assert np.array_equal(steps, np.arange(len(steps))), "in order, no gaps"
            obs = batch.columns["obs"][:, 0]
            assert np.array_equal(obs[:8], frames(8, start=0)["obs"]), "the data, not just the count"
    finally:
        restarted.send_signal(signal.SIGTERM)
        output = restarted.communicate(timeout=60)[0]
    assert restarted.returncode == 0, output
    client.close()


def write_until(writer, step: int, stop: threading.Event) -> None:
    """Writes chunks of 8 steps numbered from ``step`` until ``stop``, or until the writer is closed under it."""
    while not stop.is_set():
        try:
            writer.write_chunk(frames(8, start=step))
        except Exception:
            return
        step += 8


QUEUE = table(
    "q",
    max_size=100_000,
    selector="fifo",
    max_times_sampled=1,
    rate_limiter={"min_size_to_sample": 1, "samples_per_insert": 1.0, "min_diff": 0, "max_diff": 100_000},
)


def test_a_queue_rebuilt_after_kill_9s_delivers_every_acknowledged_item_exactly_once(cassandra_ring, tmp_path):
    """Replay is killed with SIGKILL three times while chunks are in flight (its state is saved
    every 0.5 s, so chunks are on their way at each save), then restarted with no further inserts:
    the queue's counters agree with the rows it holds, and draining it delivers every acknowledged
    item, each once. (Before, the rebuilt limiter left out the chunks in flight at the last save:
    those items could not be sampled until as many more were inserted.)"""
    port = free_port()
    config = tmp_path / "replay.yaml"
    settings = {"port": port, "metrics_port": 0, "tables": [QUEUE], **ring_settings(cassandra_ring, "requeued")}
    config.write_text(json.dumps(settings))
    address = f"127.0.0.1:{port}"
    acknowledged: list[int] = []
    for kill in range(3):
        process = start_process(config)
        client = ReplayClient(address).wait_ready(60)
        writer = client.writer("q", chunk_length=8, max_in_flight=8, retry_seconds=60)
        base, stop = kill * 1_000_000, threading.Event()

        thread = threading.Thread(target=write_until, args=(writer, base, stop))
        thread.start()
        deadline = time.monotonic() + 60
        while writer.acked_items < 400 + 200 * kill and time.monotonic() < deadline:
            time.sleep(0.01)
        process.kill()  # mid-stream, between two state saves
        process.communicate(timeout=30)
        acked = writer.acked_items  # acks come in order: this session's first `acked` steps
        stop.set()
        writer.close(flush=False)
        thread.join(30)
        client.close()
        assert acked >= 400
        acknowledged.extend(range(base, base + acked))

    restarted = start_process(config)
    try:
        with ReplayClient(address).wait_ready(60) as again:
            info = again.info(["q"])["q"]
            limiter = info.rate_limiter
            assert limiter.inserts - limiter.samples == info.size, "the limiter counts what the queue holds"
            delivered = []
            for batch in again.sample("q", batch_size=info.size, num_batches=1, timeout=30):
                delivered.extend(batch.columns["action"][:, 0].tolist())
            assert len(delivered) == len(set(delivered)), "no item twice"
            missing = set(acknowledged) - set(delivered)
            assert not missing, f"{len(missing)} acknowledged items were not delivered"
            assert again.info(["q"])["q"].size == 0
    finally:
        restarted.send_signal(signal.SIGTERM)
        output = restarted.communicate(timeout=60)[0]
    assert restarted.returncode == 0, output


def node_alone(ring, index: int):
    """A CQL session that talks to node ``index`` only, at consistency ONE."""
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    address = ring.nodes[index - 1].address
    profile = ExecutionProfile(
        consistency_level=ConsistencyLevel.ONE, load_balancing_policy=WhiteListRoundRobinPolicy([address])
    )
    cluster = Cluster([address], execution_profiles={EXEC_PROFILE_DEFAULT: profile}, protocol_version=5)
    return cluster, cluster.connect()


def test_a_node_down_keeps_quorum_inserts_and_samples_going_and_it_catches_up(whole_ring, start_ring_replay):
    ring = whole_ring
    tables = [table("t", max_size=10_000, selector="fifo"), table("u", max_size=10_000)]
    server = start_ring_replay(ring, tables, "nodedown")
    client = ReplayClient(server.address)
    with client.writer("t", chunk_length=16, retry_seconds=60) as writer:
        for i in range(20):
            writer.write_chunk(frames(16, start=16 * i))

    ring.nodes[2].stop(kill=True)  # kill -9 node 3: QUORUM is 2 of 3
    with client.writer("t", chunk_length=16, retry_seconds=60) as writer:
        for i in range(20, 40):
            writer.write_chunk(frames(16, start=16 * i))
        writer.flush(60)
    assert client.info(["t"])["t"].size == 640
    assert len(next(iter(client.sample("t", batch_size=32, num_batches=1))).keys) == 32
    server.stop()

    server = start_ring_replay(ring, tables, "nodedown")  # rebuilt at QUORUM with node 3 still down
    client = ReplayClient(server.address)
    batch = every_item(client, "t")
    assert np.array_equal(batch.columns["action"][:, 0], np.arange(640))

    ring.nodes[1].stop(kill=True)  # two of three down: no quorum, nothing may be acknowledged
    store = server.replay.ring
    retried = store.retry_policy.retries + store.client_retries
    with client.writer("u", chunk_length=16, retry_seconds=3) as writer:
        writer.write_chunk(frames(16))
        with pytest.raises(UnavailableError, match="not acknowledged"):
            writer.flush(60)
        writer.close(flush=False)
    assert client.info(["u"])["u"].size == 0
    # the driver's retry policy (too few replicas: the next node) and the store's backoff (no node
    # left in the plan) each tried again before the write was refused
    assert store.retry_policy.retries + store.client_retries >= retried + store.config.write_attempts - 1

    ring.up(heap=HEAP)  # nodes 2 and 3 return with their data directories; hints fill in what they missed
    written = server.replay.ring.written_rows
    cluster, node3 = node_alone(ring, 3)
    try:
        deadline = time.monotonic() + 90
        while True:
            where = "WHERE table_name='t' AND shard='s'"
            buckets = list(node3.execute(f"SELECT window, part FROM nodedown.buckets {where}"))
            count = sum(
                node3.execute(
                    f"SELECT count(*) FROM nodedown.segments {where} AND window=%s AND part=%s",
                    (b.window, b.part),
                ).one()[0]
                for b in buckets
            )
            if count >= 40 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert count == 40, f"node 3 holds {count} of the 40 rows (this server wrote {written} since the restart)"
    finally:
        cluster.shutdown()
    server.stop()
    client.close()


def test_uniform_tables_sample_beyond_memory_from_the_ring(cassandra_ring, start_ring_replay):
    server = start_ring_replay(
        cassandra_ring, [table("t", max_size=64)], "beyond", reservoir_items=256, segment_bytes=1 << 20
    )
    with ReplayClient(server.address) as client:
        with client.writer("t", chunk_length=16) as writer:
            for i in range(40):
                writer.write_chunk(frames(16, start=16 * i))
        older = server.replay.older["t"]
        deadline = time.monotonic() + 30
        while older.filled < 256 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert older.items == 640 - 64
        keys, actions, sizes = [], [], set()
        for batch in client.sample("t", batch_size=256, num_batches=4):
            keys.append(batch.keys)
            actions.append(batch.columns["action"][:, 0])
            sizes.add(batch.table_size)
    url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    metrics = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'rlrings_replay_older_items{table="t"} 576.0' in metrics
    assert "rlrings_replay_store_pending_writes 0.0" in metrics
    assert "rlrings_replay_store_rows_total 40.0" in metrics
    keys, actions = np.concatenate(keys), np.concatenate(actions)
    assert sizes == {640}, "the table's size counts what sampling reaches"
    assert np.array_equal(actions, keys.astype(np.int64) - 1), "each item's data is its own"
    share = np.mean(keys <= 640 - 64)
    assert 0.8 < share < 0.97, f"{share:.2f} of the items came from beyond memory; 0.9 expected"


def test_updated_priorities_come_back_after_a_restart(cassandra_ring, start_ring_replay):
    tables = [table("p", selector="prioritized", priority_exponent=1.0, max_size=1000)]
    server = start_ring_replay(cassandra_ring, tables, "priorities")
    with ReplayClient(server.address) as client:
        with client.writer("p", chunk_length=10) as writer:
            for i in range(3):
                writer.write_chunk(frames(10, start=10 * i))
        assert client.update_priorities("p", [5, 7], [1000.0, 0.0]) == (2, 0)
    server.stop()

    server = start_ring_replay(cassandra_ring, tables, "priorities")
    with ReplayClient(server.address) as client:
        batch = next(iter(client.sample("p", batch_size=200, num_batches=1)))
    assert 7 not in batch.keys.tolist(), "priority 0: never drawn"
    assert np.allclose(batch.probabilities[batch.keys == 5], 1000.0 / (1000.0 + 28)), "its updated priority"
    assert np.allclose(batch.probabilities[batch.keys != 5], 1.0 / (1000.0 + 28))


def test_rlrings_up_trains_on_the_ring(cassandra_ring, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "rlrings.ops.cli", "up", "--run-dir", str(tmp_path), "--no-viewer",
         "--cassandra", ",".join(cassandra_ring.contact_points), "--max-seconds", "240"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = process.communicate(timeout=400)[0]
    assert process.returncode == 0, output[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["solved"], summary
    replay_config = json.loads((tmp_path / "configs" / "replay.yaml").read_text())
    assert replay_config["store"] == "cassandra"
    cluster, cql = session(cassandra_ring)
    try:
        shard = replay_config["cassandra"]["shard"]
        buckets = list(cql.execute("SELECT window, part FROM rlrings_up.buckets WHERE table_name = %s AND shard = %s",
                                   ("experience", shard)))  # fmt: skip
        assert buckets, "the run's trajectories went to the ring"
    finally:
        cluster.shutdown()


@pytest.mark.timeout(600)
def test_chaos_on_the_ring_each_service_killed_loses_nothing_acknowledged(cassandra_ring, tmp_path):
    """The short chaos suite with replay on the ring: no checkpoints, every acknowledged probe item survives."""
    from rich.console import Console

    from bench import chaos
    from rlrings.mesh import MeshConfig

    config = MeshConfig(actors=2, envs_per_actor=4, checkpoint_every=20, max_seconds=3600, max_env_steps=0,
                        target_return=1e9, run_dir=tmp_path / "mesh",
                        cassandra=cassandra_ring.contact_points)  # fmt: skip
    results = chaos.run(config, None, settle=3, timeout=90, console=Console(width=160), plot=tmp_path / "chaos.png")
    assert results["store"] == "cassandra"
    for report in results["kills"]:
        assert report["probe_items_lost"] == 0, report
        assert report["seconds_until_training_progresses"] is not None, report
        assert report["other_restarts"] == [], report
    assert [r["service"] for r in results["kills"]] == ["actor-0", "replay", "learner", "parameter", "viewer"]
    assert results["passed"]


@pytest.mark.parametrize("scenario", ["shards", "beyond_memory"])
def test_fault_scenarios_lose_nothing_acknowledged(cassandra_ring, tmp_path, scenario):
    """The short versions of bench.ring_faults' shard scenarios (make chaos runs all four, longer):
    writer processes, shards killed with SIGKILL mid-stream and restarted; every acknowledged item
    is delivered, once, and nothing stays held back."""
    from bench import ring_faults

    report = ring_faults.SCENARIOS[scenario](cassandra_ring, tmp_path, quick=True)
    assert report.acknowledged > 0 and report.seconds_until_serving
    assert (report.lost, report.duplicates, report.held_not_deliverable) == (0, 0, 0), report
