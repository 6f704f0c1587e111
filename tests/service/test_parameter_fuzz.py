"""Random and malformed requests against a live parameter service: clean
statuses only, and the stored versions stay whole and fetchable."""

import hashlib
import math

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlrings.clients.parameter import ParameterClient
from rlrings.rpc.config import load_config
from rlrings.services.parameter.config import ParameterConfig
from rlrings.services.parameter.server import ParameterServer
from rlrings.v1 import parameter_pb2, parameter_pb2_grpc, spaces_pb2

pytestmark = pytest.mark.service


CLEAN = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
GOOD = b"weights that were published properly"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    directory = tmp_path_factory.mktemp("weights")
    config = load_config(ParameterConfig, [], port=0, metrics_port=0, directory=directory, max_model_bytes=4096)
    server = ParameterServer(config).start()
    with ParameterClient(server.address) as client:
        client.publish(GOOD, spaces_pb2.ModelSpec(architecture="mlp"))
    channel = grpc.insecure_channel(server.address)
    yield server, parameter_pb2_grpc.ParameterServiceStub(channel)
    channel.close()
    server.stop(grace=0)


def status_of(call):
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        assert error.details(), "every refusal explains itself"
        return error.code()


headers = st.builds(
    parameter_pb2.WeightsHeader,
    model=st.builds(spaces_pb2.ModelSpec, architecture=st.sampled_from(["", "mlp"])),
    total_bytes=st.integers(0, 10_000),
    sha256=st.one_of(st.just(b""), st.binary(min_size=32, max_size=32)),
    learner_step=st.integers(-(2**63), 2**63 - 1),
)


@given(
    header=st.one_of(st.none(), headers),
    pieces=st.lists(st.binary(max_size=3000), max_size=4),
    header_again=st.booleans(),
)
def test_random_publishes(live, header, pieces, header_again):
    server, stub = live
    before = server.store.latest_version
    messages = [parameter_pb2.PublishRequest(header=header)] if header is not None else []
    messages += [parameter_pb2.PublishRequest(data=piece) for piece in pieces]
    if header_again and header is not None:
        messages.append(parameter_pb2.PublishRequest(header=header))
    code = status_of(lambda: stub.Publish(iter(messages), timeout=10))
    assert code in CLEAN
    data = b"".join(pieces)
    valid = (
        header is not None
        and header.model.architecture
        and not header_again
        and header.total_bytes == len(data) <= 4096
        and (not header.sha256 or header.sha256 == hashlib.sha256(data).digest())
    )
    assert (code == grpc.StatusCode.OK) == bool(valid)
    assert server.store.latest_version == before + (1 if valid else 0)


@given(
    version=st.one_of(st.sampled_from([1, 1, 2]), st.integers(-(2**63), 2**63 - 1)),
    tag=st.one_of(st.none(), st.text(max_size=12)),
    ret=st.floats(allow_nan=True, allow_infinity=True),
)
def test_random_fetches_and_evaluations(live, version, tag, ret):
    server, stub = live
    request = parameter_pb2.FetchRequest(tag=tag) if tag is not None else parameter_pb2.FetchRequest(version=version)
    assert status_of(lambda: list(stub.Fetch(request, timeout=10))) in CLEAN
    report = parameter_pb2.ReportEvaluationRequest(version=version, evaluation_return=ret)
    code = status_of(lambda: stub.ReportEvaluation(report, timeout=10))
    assert code in CLEAN
    if not math.isfinite(ret):
        assert code == grpc.StatusCode.INVALID_ARGUMENT, "a NaN or infinite return must not become 'best'"


def test_versions_are_intact_after_the_fuzzing(live):
    server, stub = live
    with ParameterClient(server.address) as client:
        header, data = client.fetch(version=1)
        assert data == GOOD
        for header in client.list().versions:
            _, data = client.fetch(version=header.version)  # every retained version is whole
            assert len(data) == header.total_bytes
        for header in client.list().versions:  # NaN and infinities were refused, never stored
            if header.HasField("evaluation_return"):
                assert math.isfinite(header.evaluation_return)
