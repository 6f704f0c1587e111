"""The inference service on loopback: one forward pass for many streams, the newest weights or
pinned ones, answers in order, and bad requests refused naming the field."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
import torch

from rlrings.clients.inference import InferenceClient
from rlrings.clients.parameter import ParameterClient
from rlrings.core.errors import InvalidArgumentError, NotFoundError, UnavailableError
from rlrings.core.models import ModelSpec, build_model, weights_to_bytes
from rlrings.envs import env_spec
from rlrings.rpc import codec, wire
from rlrings.rpc.config import load_config
from rlrings.services.inference.config import InferenceConfig
from rlrings.services.inference.server import InferenceServer
from rlrings.v1 import inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.service

SPEC = ModelSpec.for_env(env_spec("CartPole-v1"), "appo")


@pytest.fixture
def mesh(start_parameter):
    """A parameter service, a publisher on it, and a starter of inference services dialling it."""
    parameter = start_parameter()
    publisher = ParameterClient(parameter.address).wait_ready(10)
    started: list[InferenceServer] = []

    def start(**settings) -> InferenceServer:
        config = load_config(InferenceConfig, [], port=0, metrics_port=0, parameter_address=parameter.address,
                             device="cpu", **settings)  # fmt: skip
        server = InferenceServer(config).start()
        started.append(server)
        return server

    yield publisher, start
    for server in started:
        server.stop(grace=0)
    publisher.close()


def publish(publisher, seed: int, tags=()) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(seed)
    network = build_model(SPEC).eval()
    version = publisher.publish(weights_to_bytes(network), wire.model_spec_to_proto(SPEC), learner_step=seed, tags=tags)
    return network, version


def observations(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 4)).astype(np.float32)


def expected(network, obs):
    with torch.no_grad():
        policy, value = network(torch.from_numpy(obs))
    return policy.numpy(), value.numpy()


def wait_for_version(client, version: int, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with client.stream() as stream:
            stream.send(observations(1))
            if stream.receive().version == version:
                return
        time.sleep(0.05)
    raise AssertionError(f"version {version} never answered")


def test_answers_are_the_newest_networks_outputs_in_the_order_asked(mesh):
    publisher, start = mesh
    first, version = publish(publisher, 1)
    server = start()
    with InferenceClient(server.address).wait_ready(10) as client:
        wait_for_version(client, version)
        with client.stream() as stream:
            batches = [observations(n, seed=n) for n in (3, 1, 5)]
            for batch in batches:  # all sent before any answer is read
                stream.send(batch)
            for batch in batches:
                answer = stream.receive()
                policy, value = expected(first, batch)
                np.testing.assert_allclose(answer.policy, policy, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(answer.value, value, rtol=1e-5, atol=1e-6)
                assert answer.version == version and answer.model == SPEC
        second, newer = publish(publisher, 2)
        wait_for_version(client, newer)  # swapped in between passes, without a restart
        with client.stream() as stream:
            stream.send(observations(4))
            answer = stream.receive()
        np.testing.assert_allclose(answer.policy, expected(second, observations(4))[0], rtol=1e-5, atol=1e-6)
        assert client.act(observations(4)).tolist() == expected(second, observations(4))[0].argmax(1).tolist()


def test_requests_of_many_streams_share_forward_passes(mesh):
    publisher, start = mesh
    publish(publisher, 1)
    server = start(max_wait_ms=50)  # long enough for every stream's request to join the first pass
    streams, per_request = 8, 4
    with InferenceClient(server.address).wait_ready(10) as client:
        wait_for_version(client, 1)
        before = server.batcher.batch_size.collect()[0]
        passes_before = next(s.value for s in before.samples if s.name.endswith("_count"))
        gate, answers = threading.Barrier(streams), []

        def one(seed: int) -> None:
            with client.stream() as stream:
                gate.wait()
                for round_ in range(5):
                    stream.send(observations(per_request, seed * 100 + round_))
                    answers.append(stream.receive())

        threads = [threading.Thread(target=one, args=(seed,)) for seed in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert len(answers) == streams * 5 and all(len(a.policy) == per_request for a in answers)
    after = server.batcher.batch_size.collect()[0]
    passes = next(s.value for s in after.samples if s.name.endswith("_count")) - passes_before
    assert passes < streams * 5 / 2, f"{passes} passes for {streams * 5} requests: streams were not batched"
    answered = server.batcher.latency.collect()[0]
    assert next(s.value for s in answered.samples if s.name.endswith("_count")) >= streams * 5, "every answer timed"


def test_a_pinned_tag_or_version_answers_while_newer_ones_arrive(mesh):
    publisher, start = mesh
    solved, pinned = publish(publisher, 1, tags=["release"])
    _, newest = publish(publisher, 2)
    server = start()
    with InferenceClient(server.address).wait_ready(10) as client:
        for stream in (client.stream(tag="release"), client.stream(version=pinned)):
            with stream:
                stream.send(observations(3))
                answer = stream.receive()
            assert answer.version == pinned < newest
            np.testing.assert_allclose(answer.policy, expected(solved, observations(3))[0], rtol=1e-5, atol=1e-6)
        with pytest.raises(NotFoundError, match="tag: no version tagged 'nope'"), client.stream(tag="nope") as stream:
            stream.send(observations(1))
            stream.receive()
        with pytest.raises(NotFoundError, match="version: no version 99"), client.stream(version=99) as stream:
            stream.send(observations(1))
            stream.receive()


def test_min_version_waits_for_that_version_and_is_bounded(mesh):
    """An on-policy actor's first step after an update asks for that update's version: the answer
    waits for it to arrive instead of coming from the version before; a version that never comes is
    UNAVAILABLE after max_version_wait_seconds, and a min_version beside a pin is refused."""
    publisher, start = mesh
    _, first = publish(publisher, 1)
    server = start(max_version_wait_seconds=1.0)
    with InferenceClient(server.address).wait_ready(10) as client:
        wait_for_version(client, first)
        with client.stream() as stream:
            stream.send(observations(2), min_version=first + 1)  # asked before it is even published
            time.sleep(0.3)
            second, newer = publish(publisher, 2)
            answer = stream.receive()
        assert answer.version == newer == first + 1
        np.testing.assert_allclose(answer.policy, expected(second, observations(2))[0], rtol=1e-5, atol=1e-6)
        with client.stream(reconnect_seconds=0) as stream:
            began = time.monotonic()
            stream.send(observations(1), min_version=newer + 5)
            with pytest.raises(UnavailableError, match=f"min_version: version {newer + 5} has not arrived within 1s"):
                stream.receive()
            assert time.monotonic() - began < 5
        for kwargs, message in [({}, "min_version: must be >= 0"), ({"tag": "latest"}, "a request pinning a tag")]:
            with pytest.raises(InvalidArgumentError, match=message), client.stream(**kwargs) as stream:
                stream.send(observations(1), min_version=-1 if not kwargs else 1)
                stream.receive()


def test_bad_requests_are_refused_naming_the_field_and_nothing_published_is_unavailable(mesh):
    publisher, start = mesh
    server = start()
    with InferenceClient(server.address).wait_ready(10) as client:
        with pytest.raises(UnavailableError, match="no weights published yet"), client.stream(reconnect_seconds=0) as s:
            s.send(observations(1))
            s.receive()
        publish(publisher, 1)
        wait_for_version(client, 1)
        cases = [
            (np.zeros((2, 5), np.float32), r"observations.shape: expected \[N, 4\] for CartPole-v1, got \[2, 5\]"),
            (np.zeros((2, 4), np.float64), "observations.dtype: expected float32, got float64"),
            (np.full((2, 4), np.nan, np.float32), "observations: NaN or infinity"),
            (np.zeros((2000, 4), np.float32), "N must be from 1 to 1024"),
        ]
        for bad, message in cases:
            with pytest.raises(InvalidArgumentError, match=message), client.stream() as stream:
                stream.send(bad)
                stream.receive()
        # a compressed message that claims more than its shape: refused before anything is inflated
        channel = grpc.insecure_channel(server.address)
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        bomb = codec.encode(np.zeros((1, 4), np.float32), codec.Compression.COMPRESSION_LZ4)
        bomb.data = codec.encode(np.zeros(1 << 20, np.uint8), codec.Compression.COMPRESSION_LZ4).data
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Act(iter([inference_pb2.ActRequest(observations=bomb)])))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "observations" in refused.value.details()
        channel.close()


def test_a_stream_that_sends_and_never_reads_holds_no_one_else_up(mesh):
    publisher, start = mesh
    publish(publisher, 1)
    server = start(max_in_flight_per_stream=2)
    channel = grpc.insecure_channel(server.address)
    request = inference_pb2.ActRequest(observations=codec.encode(observations(64)))
    sent = threading.Event()

    def flood():
        for count in range(10_000):
            if count == 500:
                sent.set()
            yield request

    silent = inference_pb2_grpc.InferenceServiceStub(channel).Act(flood())  # never read
    try:
        sent.wait(10)
        with InferenceClient(server.address).wait_ready(10) as client:
            began = time.monotonic()
            for _ in range(20):
                with client.stream() as stream:
                    stream.send(observations(2))
                    assert stream.receive().version == 1
            assert time.monotonic() - began < 10
    finally:
        silent.cancel()
        channel.close()


def test_game_servers_need_the_act_scope_and_keep_to_their_tokens_rate(mesh, tmp_path):
    import yaml

    from rlrings.core.errors import PermissionDeniedError, ResourceExhaustedError
    from rlrings.rpc.security import ClientSecurity

    publisher, start = mesh
    publish(publisher, 1)
    tokens = tmp_path / "tokens.yaml"
    secrets = {"game": "g" * 24, "reader": "r" * 24}
    tokens.write_text(yaml.safe_dump([
        {"name": "game", "token": secrets["game"], "scopes": ["act"],
         "limits": {"act_observations_per_second": 1, "act_burst_observations": 40}},
        {"name": "reader", "token": secrets["reader"], "scopes": ["read"]},
    ]))  # fmt: skip
    server = start(auth={"tokens_file": str(tokens)})
    reader = InferenceClient(server.address, security=ClientSecurity(token=secrets["reader"]))
    with reader, pytest.raises(PermissionDeniedError, match="act"), reader.stream() as stream:
        stream.send(observations(1))
        stream.receive()
    with InferenceClient(server.address, security=ClientSecurity(token=secrets["game"])) as game:
        wait_for_version(game, 1)  # (a few observations of its burst)
        with game.stream() as stream:
            stream.send(observations(30))
            assert len(stream.receive().policy) == 30
        refused = pytest.raises(ResourceExhaustedError, match=r"act rate: 'game' is above its 1 observations/s")
        with refused, game.stream() as stream:
            stream.send(observations(30))  # the burst is spent: 40 at once, then 1 a second
            stream.receive()
