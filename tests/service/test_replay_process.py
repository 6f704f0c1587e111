"""The replay service as a process: SIGTERM, restarts, and bad configuration."""

import json
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rlrings.clients.replay import ReplayClient
from rlrings.core.errors import UnavailableError
from rlrings.ops.processes import free_port
from tests.helpers import frames, table

pytestmark = [pytest.mark.service, pytest.mark.slow]


def start(config_path, *flags):
    return subprocess.Popen(
        [sys.executable, "-m", "rlrings.services.replay", "--config", str(config_path), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def write_config(tmp_path, **settings):
    port = free_port()
    config = {
        "port": port,
        "metrics_port": 0,
        "snapshot_dir": str(tmp_path / "snap"),
        "snapshot_interval_seconds": 0,
        "grace_seconds": 2,
        "tables": [table("t", max_size=100_000, selector="fifo")],
        # the checks read the whole table back as one batch, and how much the writer gets in before the
        # restart depends on the machine (a CI run acknowledged 15,352): the table's bound, not the default
        "max_sample_batch_size": 100_000,
        **settings,
    }
    path = tmp_path / "replay.yaml"
    path.write_text(json.dumps(config))
    return path, f"127.0.0.1:{port}"


def stream_numbered_steps(address, acked: dict, stop: threading.Event, errors: list, retry_seconds: float):
    """Writes chunks of 8 steps numbered from 0 until ``stop``, through restarts, then flushes;
    ``acked`` follows the items acknowledged (and, at the end, the reconnects)."""
    try:
        with (
            ReplayClient(address).wait_ready(30) as client,
            client.writer("t", chunk_length=8, max_in_flight=4, retry_seconds=retry_seconds) as writer,
        ):
            step = 0
            while not stop.is_set():
                writer.write_chunk(frames(8, start=step))
                step += 8
                acked["items"] = writer.acked_items
            writer.flush(60)
            acked["items"], acked["reconnects"] = writer.acked_items, writer.reconnects
    except Exception as error:  # surfaced by the test
        errors.append(error)


def everything_acknowledged_is_there_once(address, acked, stop, errors, writer, reconnects: int):
    """Lets the writer finish, then checks the table holds each acknowledged step once, in order;
    returns all of it as one batch."""
    time.sleep(1.0)
    stop.set()
    writer.join(120)
    assert not errors, errors
    assert acked["reconnects"] >= reconnects
    with ReplayClient(address).wait_ready(30) as client:
        size = client.info(["t"])["t"].size
        batch = next(iter(client.sample("t", batch_size=size, num_batches=1)))
    assert size == acked["items"], "every acknowledged item is there, none twice"
    assert np.array_equal(batch.columns["action"][:, 0], np.arange(size)), "in order, no gaps, no repeats"
    return batch


def test_sigterm_stops_gracefully_and_a_restart_loses_no_acknowledged_item(tmp_path):
    config, address = write_config(tmp_path)
    process = start(config)
    acked, stop, errors = {"items": 0}, threading.Event(), []
    writer = threading.Thread(target=stream_numbered_steps, args=(address, acked, stop, errors, 60))
    writer.start()
    deadline = time.monotonic() + 30
    while acked["items"] < 400 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert "stopped" in output

    restarted = start(config)  # same port: the writer reconnects and resends what was not acknowledged
    try:
        everything_acknowledged_is_there_once(address, acked, stop, errors, writer, reconnects=1)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.communicate(timeout=30)
    assert restarted.returncode == 0


def test_kill_9_mid_stream_loses_no_acknowledged_item_without_any_snapshot(tmp_path):
    """The embedded store's acknowledgement log: three kill -9 in a row while a writer streams, no
    snapshot or Checkpoint ever taken; after the last restart every acknowledged item is there once,
    with its bytes, in order."""
    config, address = write_config(tmp_path)  # snapshot_interval_seconds 0: only the log keeps anything
    acked, stop, errors = {"items": 0}, threading.Event(), []
    process = start(config)
    writer = threading.Thread(target=stream_numbered_steps, args=(address, acked, stop, errors, 90))
    writer.start()
    for kill in range(3):
        target = acked["items"] + 300
        deadline = time.monotonic() + 60
        while acked["items"] < target and time.monotonic() < deadline:
            time.sleep(0.02)
        assert acked["items"] >= target, f"kill {kill}: the writer made no progress; {errors}"
        process.kill()  # mid-stream: chunks in flight, none of it ever snapshotted
        process.communicate(timeout=30)
        process = start(config)
    try:
        batch = everything_acknowledged_is_there_once(address, acked, stop, errors, writer, reconnects=3)
        first = frames(8, start=0)["obs"]
        assert np.array_equal(batch.columns["obs"][:8, 0], first), "the bytes that were acknowledged"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_bad_config_file_exits_2_naming_the_setting(tmp_path):
    config, _ = write_config(tmp_path, tables=[table("t", max_size=-5)])
    process = start(config)
    output = process.communicate(timeout=30)[0]
    assert process.returncode == 2
    assert "tables.0.max_size" in output and str(config) in output


def test_a_snapshot_dir_that_cannot_be_written_exits_2_at_start(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    config, _ = write_config(tmp_path, snapshot_dir=str(tmp_path / "a-file" / "snap"))
    process = start(config)
    output = process.communicate(timeout=30)[0]
    assert process.returncode == 2, output
    assert f"snapshot_dir: {tmp_path / 'a-file' / 'snap'} cannot be written (Not a directory)" in output
    assert "Traceback" not in output


def test_unreadable_config_file_exits_2(tmp_path):
    process = start(tmp_path / "nope.yaml")
    output = process.communicate(timeout=30)[0]
    assert process.returncode == 2 and "cannot read it" in output


def test_help_lists_settings_with_their_docs():
    result = subprocess.run(
        [sys.executable, "-m", "rlrings.ops.cli", "replay", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and result.stdout.startswith("usage: rlrings replay ")
    assert "--snapshot-interval-seconds" in result.stdout and "Seconds between automatic snapshots" in result.stdout


def test_port_in_use_exits_2_naming_the_port_and_its_setting(tmp_path):
    config, address = write_config(tmp_path)
    first = start(config)
    try:
        with ReplayClient(address) as client:
            client.wait_ready(30)
        second = start(config, "--snapshot-dir", str(tmp_path / "other"))
        output = second.communicate(timeout=30)[0]
        port = address.rsplit(":", 1)[1]
        assert second.returncode == 2, output
        assert f"cannot bind 127.0.0.1:{port}" in output and "set --port or $RLRINGS_REPLAY_PORT" in output
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)


def test_cassandra_unreachable_at_start_is_not_serving_and_names_the_contact_points(tmp_path):
    nothing = free_port()  # no Cassandra listens here
    config, address = write_config(
        tmp_path, store="cassandra", cassandra={"contact_points": ["127.0.0.1"], "port": nothing, "shard": "s"}
    )
    process = start(config)
    try:
        with ReplayClient(address) as client:
            with pytest.raises(UnavailableError, match=r"was not serving within 3s \(NOT_SERVING\)"):
                client.wait_ready(3)
            with pytest.raises(UnavailableError, match=f"127.0.0.1:{nothing}.*retrying with backoff"):
                client.info(["t"])
        with grpc.insecure_channel(address) as channel:  # alive, so Kubernetes does not restart it
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5).status == 1
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 2  # NOT_SERVING
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output

    config, _ = write_config(
        tmp_path,
        store="cassandra",
        cassandra={"contact_points": ["127.0.0.1"], "port": nothing, "connect_timeout_seconds": 2},
    )
    process = start(config)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 1, output
    assert "gave up after" in output and f"127.0.0.1:{nothing}" in output, output


def test_a_burst_of_signals_still_stops_the_service(tmp_path):
    """Signals arriving while an earlier handler runs (a supervisor's SIGTERM, then a process
    group's SIGINT, ...) must not deadlock the handler: the service exits."""
    config, address = write_config(tmp_path)
    process = start(config)
    try:
        ReplayClient(address).wait_ready(30).close()
        for index in range(200):
            process.send_signal(signal.SIGTERM if index % 2 else signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
