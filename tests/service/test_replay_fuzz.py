"""Random malformed requests against a live server: every answer is a clean
status, nothing bad is stored, and the tables stay intact.

Runs briefly by default; ``HYPOTHESIS_PROFILE=long`` runs it for longer.
"""

import math

import grpc
import lz4.frame
import numpy as np
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from rlrings.clients.replay import ReplayClient
from rlrings.v1 import replay_pb2, replay_pb2_grpc, tensor_pb2
from tests.helpers import frames, table

pytestmark = pytest.mark.service


CLEAN_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
COLUMN_NAMES = st.sampled_from(["obs", "action", "reward", "extra", ""])
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
# Small frames that inflate to 64 MiB: zstd declaring its size, zstd without it, LZ4.
BOMBS = [
    zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20)),
    zstandard.ZstdCompressor(level=1, write_content_size=False).compress(bytes(64 << 20)),
    lz4.frame.compress(bytes(64 << 20)),
]
DIMENSIONS = st.one_of(st.integers(min_value=-2, max_value=9), st.sampled_from([2**31, 2**40, 2**62]))


@st.composite
def tensors(draw):
    dtype = draw(st.integers(min_value=-1, max_value=14))
    shape = draw(st.lists(DIMENSIONS, max_size=draw(st.sampled_from([4, 4, 4, 70]))))
    matching = draw(st.booleans())
    if matching and dtype in range(1, 13) and all(d >= 0 for d in shape):
        itemsize = {1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 4, 8: 8, 9: 8, 10: 2, 11: 4, 12: 8}[dtype]
        size = min(math.prod(shape) * itemsize, 4096)  # (Python ints: huge shapes do not overflow)
        data = draw(st.binary(min_size=size, max_size=size))
    else:
        data = draw(st.one_of(st.binary(max_size=512), st.sampled_from(BOMBS)))
    return tensor_pb2.Tensor(dtype=dtype, shape=shape, data=data, compression=draw(st.integers(0, 3)))


@st.composite
def chunks(draw):
    columns = draw(st.dictionaries(COLUMN_NAMES, tensors(), max_size=4))
    if draw(st.booleans()):  # start from a valid chunk and break one thing
        good = {k: v for k, v in _valid_chunk(draw(st.integers(1, 6))).columns.items()}
        good.update(columns if draw(st.booleans()) else {})
        columns = good
    return tensor_pb2.Chunk(
        table=draw(st.sampled_from(["t", "t", "unknown", ""])),
        columns=columns,
        priorities=draw(st.lists(floats, max_size=7)),
        writer_id=draw(st.sampled_from(["", "fuzz"])),
        sequence=draw(st.integers(0, 2**64 - 1)),
        policy_version=draw(st.integers(-(2**63), 2**63 - 1)),
    )


def _valid_chunk(steps):
    from rlrings.rpc import codec

    return tensor_pb2.Chunk(table="t", columns={k: codec.encode(v) for k, v in frames(steps).items()})


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from rlrings.rpc.config import load_config
    from rlrings.services.replay.config import ReplayConfig
    from rlrings.services.replay.server import ReplayServer

    config = load_config(
        ReplayConfig,
        [],
        port=0,
        metrics_port=0,
        store="memory",
        tables=[table("t", selector="prioritized", max_size=100_000)],
        max_message_bytes=1 << 20,
    )
    server = ReplayServer(config).start()
    channel = grpc.insecure_channel(server.address)
    yield server, replay_pb2_grpc.ReplayServiceStub(channel), {"stored": 0}
    channel.close()
    server.stop(grace=0)


@given(chunk=chunks())
def test_random_inserts_get_clean_statuses_and_store_only_valid_chunks(live, chunk):
    server, stub, expected = live
    table = server.replay.tables["t"]
    before = table.size
    try:
        responses = list(stub.Insert(iter([replay_pb2.InsertRequest(chunk=chunk)]), timeout=10))
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code, responses = error.code(), []
        assert error.details(), "every refusal explains itself"
    assert code in CLEAN_CODES, f"{code}: a malformed request must not look like a server fault"
    stored = sum(len(r.keys) for r in responses)
    assert table.size == before + stored
    expected["stored"] += stored


@given(
    table_name=st.sampled_from(["t", "unknown", ""]),
    batch_size=st.integers(0, 5000),
    beta=floats,
    timeout=floats,
)
def test_random_sample_requests_get_clean_statuses(live, table_name, batch_size, beta, timeout):
    server, stub, _ = live
    request = replay_pb2.SampleRequest(
        table=table_name,
        batch_size=batch_size,
        num_batches=1,
        importance_sampling_exponent=beta,
        timeout_seconds=min(timeout, 0.05) if timeout == timeout else timeout,
    )
    try:
        list(stub.Sample(iter([request]), timeout=10))
    except grpc.RpcError as error:
        assert error.code() in CLEAN_CODES, error.details()


@given(keys=st.lists(st.integers(0, 2**64 - 1), max_size=5), priorities=st.lists(floats, max_size=5))
def test_random_priority_updates_get_clean_statuses(live, keys, priorities):
    server, stub, _ = live
    try:
        stub.UpdatePriorities(
            replay_pb2.UpdatePrioritiesRequest(table="t", keys=keys, priorities=priorities), timeout=10
        )
    except grpc.RpcError as error:
        assert error.code() in CLEAN_CODES, error.details()


def test_tables_are_intact_after_the_fuzzing(live):
    server, stub, expected = live
    table = server.replay.tables["t"]
    assert table.size == expected["stored"] == table.inserted_items
    state = table.state()
    assert np.all(np.isfinite(state.priorities)) and np.all(state.priorities >= 0)
    assert np.all(np.isfinite(state.columns["reward"]))
    with ReplayClient(server.address) as client:
        keys = client.insert("t", frames(3))
        assert len(keys) == 3
        batch = next(iter(client.sample("t", batch_size=4, num_batches=1)))
        assert batch.columns["obs"].shape == (4, 1, 8, 8, 3)
