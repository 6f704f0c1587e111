"""Credit-based sampling over real gRPC: the server draws a batch only against a credit,
so nothing waits unseen in the stream and queue items leave only when a client has room."""

import queue
import time

import grpc
import pytest

from rlrings.core.errors import DeadlineExceededError
from rlrings.services.replay.config import TableConfig
from rlrings.v1 import replay_pb2, replay_pb2_grpc
from tests.helpers import FRAME_SIGNATURE, frames

pytestmark = pytest.mark.service


def _eventually(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def queue_server(start_replay):
    server = start_replay([TableConfig.queue("q", FRAME_SIGNATURE, max_size=100).model_dump()])
    return server, server.replay.table("q")


def test_the_server_draws_only_as_many_batches_as_credits_granted(queue_server):
    server, table = queue_server
    table.insert(frames(40))
    grants: queue.Queue = queue.Queue()
    grants.put(replay_pb2.SampleRequest(table="q", batch_size=4, credits=2))

    def requests():
        while (request := grants.get()) is not None:
            yield request

    with grpc.insecure_channel(server.address) as channel:
        responses = replay_pb2_grpc.ReplayServiceStub(channel).Sample(requests(), timeout=30)
        first = next(responses)
        assert first.keys == [1, 2, 3, 4]
        assert _eventually(lambda: table.sampled_items == 8)
        time.sleep(0.5)
        assert table.sampled_items == 8 and table.size == 32, "two credits: two batches drawn, no more"
        grants.put(replay_pb2.SampleRequest(credits=1))
        assert next(responses).keys == [5, 6, 7, 8]
        assert next(responses).keys == [9, 10, 11, 12]
        time.sleep(0.3)
        assert table.sampled_items == 12
        grants.put(None)  # the client ends its side: the stream ends, nothing more is drawn
        assert list(responses) == []
    assert table.sampled_items == 12


def test_an_unbounded_stream_without_credits_is_refused_naming_the_field(queue_server):
    server, _ = queue_server
    with grpc.insecure_channel(server.address) as channel:
        stub = replay_pb2_grpc.ReplayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Sample(iter([replay_pb2.SampleRequest(table="q", batch_size=1)]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "credits" in caught.value.details()


def test_the_sampler_keeps_at_most_max_in_flight_batches_ahead_of_its_consumer(queue_server):
    from rlrings.clients.replay import ReplayClient

    server, table = queue_server
    table.insert(frames(100))
    with ReplayClient(server.address) as client, client.sample("q", batch_size=5, max_in_flight=2) as sampler:
        for taken in range(1, 6):
            batch = next(sampler)
            assert len(set(batch.keys.tolist())) == 5
            expected = 5 * (taken + 2)
            assert _eventually(lambda: table.sampled_items == expected)  # noqa: B023 (read at once)
            time.sleep(0.2)
            assert table.sampled_items == expected, "one more drawn per batch taken, never more"
    assert table.size == 100 - 5 * 7


def test_the_policy_version_travels_with_credits_and_stale_items_are_dropped(start_replay):
    from rlrings.clients.replay import ReplayClient

    server = start_replay([TableConfig.queue("q", FRAME_SIGNATURE, max_size=100, max_policy_lag=1).model_dump()])
    table = server.replay.table("q")
    table.insert(frames(4), policy_version=1)
    table.insert(frames(4, start=4), policy_version=5)
    table.insert(frames(4, start=8), policy_version=6)
    with ReplayClient(server.address) as client:
        with client.sample("q", batch_size=4, max_in_flight=1, policy_version=2) as sampler:
            assert next(sampler).policy_versions.tolist() == [1] * 4
            sampler.policy_version = 6  # travels with the next credit; version 5 is within the lag of 1
            assert next(sampler).policy_versions.tolist() == [5] * 4
            assert next(sampler).policy_versions.tolist() == [6] * 4
        info = client.info(["q"])["q"]
    assert info.max_policy_lag == 1 and info.stale_items == 0
    table.insert(frames(4, start=12), policy_version=2)
    with ReplayClient(server.address) as client:
        sampler = client.sample("q", batch_size=1, max_in_flight=1, policy_version=9, timeout=0.3)
        with sampler, pytest.raises(DeadlineExceededError, match="rate limiter held the sample"):
            next(sampler)
        assert client.info(["q"])["q"].stale_items == 4
