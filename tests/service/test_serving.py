"""Open streams cost no threads: idle health watchers, idle writers and waiting weight watchers
leave every other call answered, on servers at their default settings."""

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rlrings.clients.parameter import ParameterClient
from rlrings.clients.replay import ReplayClient
from rlrings.rpc.config import load_config
from rlrings.services.parameter.config import ParameterConfig
from rlrings.services.parameter.server import ParameterServer
from rlrings.v1 import parameter_pb2, parameter_pb2_grpc, replay_pb2_grpc, spaces_pb2
from tests.helpers import frames, table

pytestmark = pytest.mark.service


def _idle_requests(stop: threading.Event):
    stop.wait()
    yield from ()


def test_hundreds_of_idle_streams_hold_no_threads_and_block_nothing(start_replay):
    server = start_replay([table("t")])  # the default 16 workers
    threads_before = threading.active_count()
    stop = threading.Event()
    # four clients, each its own connection (one connection may hold max_streams_per_connection, 128)
    channels = [grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(4)]  # fmt: skip
    try:
        watches = [
            health_pb2_grpc.HealthStub(channels[i % 4]).Watch(health_pb2.HealthCheckRequest()) for i in range(200)
        ]
        inserts = [replay_pb2_grpc.ReplayServiceStub(channels[i % 4]).Insert(_idle_requests(stop)) for i in range(40)]
        for watch in watches[:5]:
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        time.sleep(0.5)  # every stream has reached the server
        assert server.server.interceptor.in_flight >= 240
        with ReplayClient(server.address) as client:
            assert client.insert("t", frames(2)) == [1, 2]
            assert client.info(["t"])["t"].size == 2, "calls behind 240 open streams are answered"
        # the client side holds a thread per request-streaming call; the server none per stream
        grown = threading.active_count() - threads_before - len(inserts)
        assert grown < 32, f"{grown} more threads for 240 idle streams"
    finally:
        stop.set()
        for channel in channels:
            channel.close()


def test_a_stream_idle_past_its_deadline_is_closed_and_the_sdk_writer_carries_on(start_replay):
    """A client that opens an Insert or reflection stream and sends nothing is closed UNAVAILABLE
    after idle_stream_seconds; the SDK's writer, idle for three such periods, opens a new stream
    and its next chunk is stored."""
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    server = start_replay([table("t")], idle_stream_seconds=1)
    stop = threading.Event()
    try:
        with grpc.insecure_channel(server.address) as channel:
            started = time.monotonic()
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            calls = [replay_pb2_grpc.ReplayServiceStub(channel).Insert(_idle_requests(stop)),
                     reflection.ServerReflectionInfo(_idle_requests(stop))]  # fmt: skip
            for call in calls:
                with pytest.raises(grpc.RpcError) as closed:
                    next(call)
                assert closed.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "stream idle: nothing received for 1 s" in closed.value.details()
            assert time.monotonic() - started < 10
    finally:
        stop.set()
    with ReplayClient(server.address) as client:
        writer = client.writer("t", chunk_length=2)
        writer.write_chunk(frames(2))
        writer.flush(timeout=10)
        time.sleep(3.5)  # closed idle three times
        writer.write_chunk(frames(2, start=2))
        writer.flush(timeout=10)
        writer.close()
        assert writer.acked_items == 4 and client.info(["t"])["t"].size == 4


def test_one_connection_holds_at_most_its_stream_limit(start_replay):
    """Past max_streams_per_connection a client's further streams wait on its side (or, opened as
    others close, are refused UNAVAILABLE, which clients retry): the server never holds more."""
    server = start_replay([table("t")], max_streams_per_connection=8)
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        # One call first: until the client has the server's HTTP/2 settings it does not know the limit.
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(12)]
        assert next(watches[0]).status == health_pb2.HealthCheckResponse.SERVING
        time.sleep(0.5)
        assert server.server.interceptor.in_flight == 8
        for watch in watches:
            watch.cancel()
        deadline = time.monotonic() + 5
        while server.server.interceptor.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.server.interceptor.in_flight == 0
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def test_many_weight_watchers_wait_without_threads_and_all_hear_a_publish(tmp_path):
    config = load_config(ParameterConfig, [], port=0, metrics_port=0, directory=tmp_path / "w")
    server = ParameterServer(config).start()
    channel = grpc.insecure_channel(server.address)
    try:
        threads_before = threading.active_count()
        stub = parameter_pb2_grpc.ParameterServiceStub(channel)
        watchers = [stub.Watch(parameter_pb2.WatchRequest(), timeout=30) for _ in range(64)]
        time.sleep(0.5)
        grown = threading.active_count() - threads_before
        assert grown < 16, f"{grown} more threads for 64 watchers"
        with ParameterClient(server.address) as publisher:
            version = publisher.publish(b"weights", spaces_pb2.ModelSpec(architecture="mlp", env_id="CartPole-v1"))
        assert [next(w).version for w in watchers] == [version] * 64
    finally:
        channel.close()
        server.stop(grace=0)
