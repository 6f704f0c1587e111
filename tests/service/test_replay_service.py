"""The replay service over real gRPC on loopback."""

import subprocess
import sys
import time
import urllib.request

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rlrings.clients.replay import ReplayClient
from rlrings.core.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)
from rlrings.ops.processes import free_port
from tests.helpers import frames, table

pytestmark = pytest.mark.service


def test_writer_chunks_steps_and_sampler_reads_them_back(replay):
    server, client = replay
    with client.writer("fifo", chunk_length=4) as writer:
        for i in range(10):
            writer.append(
                {"obs": np.full((8, 8, 3), i, np.uint8), "action": np.int32(i), "reward": np.float32(i / 2)},
                policy_version=3,
            )
        writer.write_chunk(frames(2, start=10))
    # two full chunks of 4, the explicit one of 2, and at close the 2 steps left buffered
    assert writer.acked_items == 12 and writer.buffered_steps == 0
    batch = next(iter(client.sample("fifo", batch_size=12, num_batches=1)))
    assert batch.columns["action"][:, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 8, 9]
    assert batch.columns["obs"][3, 0, 0, 0].tolist() == [3, 3, 3]
    assert batch.policy_versions[:8].tolist() == [3] * 8 and batch.table_size == 12


def test_closing_a_writer_stores_its_last_steps_or_says_loudly_what_it_cannot(start_replay):
    server = start_replay([table("pairs", sequence_length=2, max_size=100)])
    with ReplayClient(server.address) as client:
        writer = client.writer("pairs", chunk_length=8)
        for i in range(5):
            writer.append({"obs": np.zeros((8, 8, 3), np.uint8), "action": np.int32(i), "reward": np.float32(0)})
        with pytest.raises(InvalidArgumentError, match="1 steps buffered make no whole item of table 'pairs'"):
            writer.close()  # the two whole pairs are stored first; the stream is closed all the same
        assert writer.acked_items == 2 and client.info(["pairs"])["pairs"].size == 2
        with client.writer("pairs", chunk_length=8) as dropping:
            dropping.append({"obs": np.zeros((8, 8, 3), np.uint8), "action": np.int32(9), "reward": np.float32(0)})
            dropping.close(flush=False)  # the caller's choice: dropped
        assert client.info(["pairs"])["pairs"].size == 2


def test_large_batches_are_split_into_pieces_and_reassembled(start_replay):
    big = {"obs": {"dtype": "uint8", "shape": [64, 64, 3]}}
    server = start_replay([{"name": "big", "signature": big, "max_size": 2000}], max_message_bytes=1 << 20)
    with ReplayClient(server.address, max_message_bytes=1 << 20) as client:
        with client.writer("big", chunk_length=16) as writer:
            for start in range(0, 512, 16):
                writer.write_chunk({"obs": np.full((16, 64, 64, 3), start // 16, np.uint8)})
        batch = next(iter(client.sample("big", batch_size=300, num_batches=1)))  # 3.7 MB in 1 MiB messages
    assert batch.columns["obs"].shape == (300, 1, 64, 64, 3) and len(batch.keys) == 300


def test_prioritized_sampling_and_priority_updates(replay):
    server, client = replay
    keys = client.insert("prio", frames(2), priorities=[1.0, 0.0])
    batch = next(iter(client.sample("prio", batch_size=50, num_batches=1, importance_sampling_exponent=0.5)))
    assert set(batch.columns["action"][:, 0].tolist()) == {0}
    assert client.update_priorities("prio", [keys[0], keys[1], 999], [0.0, 2.0, 1.0]) == (2, 1)
    batch = next(iter(client.sample("prio", batch_size=50, num_batches=1)))
    assert set(batch.columns["action"][:, 0].tolist()) == {1}
    with pytest.raises(InvalidArgumentError, match=r"priorities\[0\]: -1.0"):
        client.update_priorities("prio", [keys[0]], [-1.0])


def test_queue_rate_limiter_deadline_maps_to_deadline_exceeded(replay):
    server, client = replay
    with pytest.raises(DeadlineExceededError, match="rate limiter held the sample back"):
        next(iter(client.sample("queue", batch_size=1, num_batches=1, timeout=0.2)))


def test_info_reports_tables_and_limiter_state(replay):
    server, client = replay
    client.insert("uniform", frames(3))
    info = client.info()
    assert set(info) == {"uniform", "fifo", "prio", "queue"}
    assert info["uniform"].size == 3 and info["uniform"].inserted_items == 3
    assert [c.name for c in info["uniform"].signature] == ["obs", "action", "reward"]
    assert info["queue"].rate_limiter.max_diff == 64 and info["queue"].max_times_sampled == 1


def test_checkpoint_and_restart_restore_the_tables(start_replay, tmp_path):
    tables = [table("t", selector="fifo")]
    first = start_replay(tables, snapshot_dir=tmp_path / "snap")
    with ReplayClient(first.address) as client:
        client.insert("t", frames(5))
        response = client.checkpoint()
    assert response.items == 5 and response.path.endswith("snapshot")
    first.stop()
    second = start_replay(tables, snapshot_dir=tmp_path / "snap")
    with ReplayClient(second.address) as client:
        batch = next(iter(client.sample("t", batch_size=5, num_batches=1)))
    assert batch.columns["action"][:, 0].tolist() == [0, 1, 2, 3, 4]


def test_memory_store_refuses_checkpoints(start_replay):
    server = start_replay([table()], store="memory")
    with ReplayClient(server.address) as client, pytest.raises(FailedPreconditionError, match="memory store"):
        client.checkpoint()


def test_health_and_reflection(replay):
    server, client = replay
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "rlrings.v1.ReplayService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in next(responses).list_services_response.service}
        # v1 too (grpcurl and other tools ask for it first), with the .proto files' comments
        v1 = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        asks = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="rlrings.v1.ReplayService"),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Thing")]  # fmt: skip
        listed, replay_file, health_file, unknown = list(v1(iter(asks), timeout=10))
    assert {"rlrings.v1.ReplayService", "grpc.health.v1.Health"} <= names
    assert {s.name for s in listed.list_services_response.service} == names | {"grpc.reflection.v1.ServerReflection"}
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in replay_file.file_descriptor_response.file_descriptor_proto
    ]
    assert files[0].name == "rlrings/v1/replay.proto" and "rlrings/v1/tensor.proto" in {f.name for f in files}
    comments = " ".join(loc.leading_comments for f in files for loc in f.source_code_info.location)
    assert "authorization: Bearer <token>" in comments and "Empty turns de-duplication" in comments
    assert health_file.file_descriptor_response.file_descriptor_proto
    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_metrics_endpoint_counts_items_bytes_and_latency(replay):
    server, client = replay
    client.insert("uniform", frames(4))
    list(client.sample("uniform", batch_size=2, num_batches=3))
    with pytest.raises(NotFoundError):
        client.info(["missing"])
    url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    sampled = (
        'rlrings_grpc_server_handling_seconds_count{code="OK",method="Sample",service="rlrings.v1.ReplayService"} 1.0'
    )
    # A stream's latency is recorded as it ends on the server, which can be just after the client has
    # taken its last batch and moved on: wait for it rather than race it.
    deadline = time.monotonic() + 10
    while (
        sampled not in (text := urllib.request.urlopen(url, timeout=5).read().decode()) and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert 'rlrings_replay_inserted_items_total{table="uniform"} 4.0' in text
    assert f'rlrings_replay_inserted_bytes_total{{table="uniform"}} {4 * (8 * 8 * 3 + 8)}.0' in text
    assert 'rlrings_replay_sampled_items_total{table="uniform"} 6.0' in text
    assert 'rlrings_replay_table_size_items{table="uniform"} 4.0' in text
    assert 'rlrings_replay_rate_limiter_wait_seconds_total{side="sample",table="uniform"}' in text
    assert sampled in text
    assert 'code="NOT_FOUND",method="Info"' in text


def test_sampler_stops_after_num_batches(replay):
    server, client = replay
    client.insert("uniform", frames(4))
    assert len(list(client.sample("uniform", batch_size=3, num_batches=5))) == 5


def test_health_command_reports_serving_servers_and_fails_for_dead_ones_at_once(replay, capsys, monkeypatch):
    server, _ = replay
    monkeypatch.setenv("COLUMNS", "200")  # the table on one line
    from rlrings.ops.cli import main

    assert main(["health", server.address]) == 0
    nobody = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert main(["health", server.address, nobody, "--timeout", "20"]) == 1
    assert time.monotonic() - started < 10, "a refused connection is the answer; no waiting out the timeout"
    assert f"connection refused: nothing listens at {nobody}" in " ".join(capsys.readouterr().out.split())


def test_a_client_pointed_at_another_service_is_told_which_one_answered(start_parameter, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    from rlrings.ops.cli import main

    parameter = start_parameter()
    with ReplayClient(parameter.address) as client, pytest.raises(UnimplementedError) as raised:
        client.info()
    assert f"{parameter.address} serves rlrings.v1.ParameterService, not the replay service" in str(raised.value)
    assert main(["info", "--address", parameter.address]) == 1
    assert "is it the replay address?" in " ".join(capsys.readouterr().out.split())


def test_version_and_per_command_usage():
    from rlrings import __version__
    from rlrings.ops.cli import main

    result = subprocess.run(
        [sys.executable, "-m", "rlrings.ops.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout == f"rlrings {__version__}\n"
    for command in ("parameter", "up"):
        result = subprocess.run(
            [sys.executable, "-m", "rlrings.ops.cli", command, "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0 and result.stdout.startswith(f"usage: rlrings {command} "), result.stdout[:80]
    assert main(["-V"]) == 0
