"""Bad requests get the right status with the field named, store nothing, and
leave the server serving everyone else."""

import gc
import io
import re
import subprocess
import sys
import textwrap
import time

import grpc
import lz4.frame
import numpy as np
import psutil
import pytest
import zstandard

from rlrings.clients.replay import ReplayClient
from rlrings.core.errors import InvalidArgumentError, NotFoundError, ResourceExhaustedError
from rlrings.rpc import codec
from rlrings.v1 import replay_pb2, replay_pb2_grpc, tensor_pb2
from tests.helpers import frames, table

pytestmark = pytest.mark.service


def chunk_request(columns, table="uniform", **fields):
    return replay_pb2.InsertRequest(
        chunk=tensor_pb2.Chunk(table=table, columns={k: codec.encode(v) for k, v in columns.items()}, **fields)
    )


def insert_raw(address, *requests, max_message_bytes=64 << 20):
    options = [("grpc.max_send_message_length", max_message_bytes)]
    with grpc.insecure_channel(address, options=options) as channel:
        return list(replay_pb2_grpc.ReplayServiceStub(channel).Insert(iter(requests), timeout=10))


def bad(**changes):
    columns = {name: np.array(value) for name, value in frames(4).items()}
    columns.update(changes)
    return columns


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (chunk_request(frames(4), table="nope"), grpc.StatusCode.NOT_FOUND, "table 'nope' not found"),
        (
            chunk_request(bad(reward=np.zeros(3, np.float32))),
            grpc.StatusCode.INVALID_ARGUMENT,
            r"\['reward'\]\.shape: 3 steps",
        ),
        (
            chunk_request(bad(action=np.zeros(4, np.float64))),
            grpc.StatusCode.INVALID_ARGUMENT,
            r"\['action'\]\.dtype: got float64",
        ),
        (
            chunk_request(bad(reward=np.array([0, np.nan, 0, 0], np.float32))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "non-finite value nan",
        ),
        (chunk_request({}), grpc.StatusCode.INVALID_ARGUMENT, "empty chunk"),
        (chunk_request(frames(0)), grpc.StatusCode.INVALID_ARGUMENT, "empty chunk, 0 steps"),
        (chunk_request(frames(4), priorities=[-1.0]), grpc.StatusCode.INVALID_ARGUMENT, r"chunk\.priorities\[0\]"),
        (
            chunk_request(frames(4), priorities=[float("nan")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            r"chunk\.priorities\[0\]",
        ),
    ],
    ids=["unknown-table", "ragged", "dtype", "nan", "no-columns", "no-steps", "negative-priority", "nan-priority"],
)
def test_bad_chunks_get_the_right_status_and_store_nothing(replay, request_, code, message):
    server, client = replay
    with pytest.raises(grpc.RpcError) as raised:
        insert_raw(server.address, request_)
    assert raised.value.code() == code
    assert raised.value.details() and __import__("re").search(message, raised.value.details())
    assert all(info.size == 0 for info in client.info().values())


def test_tensor_bytes_that_disagree_with_the_shape(replay):
    server, client = replay
    request = chunk_request(frames(4))
    for column in request.chunk.columns.values():
        column.shape[0] = 5  # each column claims a step more than its bytes hold
    with pytest.raises(
        grpc.RpcError,
        match=r"chunk.columns\['obs'\]\.data: 768 bytes, but dtype uint8 and shape \[5, 8, 8, 3\] need 960",
    ):
        insert_raw(server.address, request)
    assert client.info(["uniform"])["uniform"].size == 0


def test_oversized_messages_are_resource_exhausted_and_the_server_goes_on(start_replay):
    server = start_replay([table("t", max_size=20_000)], max_message_bytes=256 * 1024)
    with pytest.raises(grpc.RpcError) as raised:
        insert_raw(server.address, chunk_request(frames(2000), table="t"))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with ReplayClient(server.address, max_message_bytes=256 * 1024) as client:
        assert client.insert("t", frames(2)) == [1, 2]
        assert client.info(["t"])["t"].size == 2


def test_good_chunks_before_a_bad_one_stay_acknowledged(replay):
    server, client = replay
    requests = [chunk_request(frames(2)), chunk_request(bad(action=np.zeros(4, np.int8)))]
    with grpc.insecure_channel(server.address) as channel:
        call = replay_pb2_grpc.ReplayServiceStub(channel).Insert(iter(requests), timeout=10)
        assert next(call).keys == [1, 2]
        with pytest.raises(grpc.RpcError, match="INVALID_ARGUMENT"):
            next(call)
    assert client.info(["uniform"])["uniform"].size == 2


def test_bad_sample_requests(replay):
    server, client = replay
    with pytest.raises(NotFoundError, match="table 'nope'"):
        next(iter(client.sample("nope", batch_size=1)))
    with pytest.raises(InvalidArgumentError, match="batch_size: must be from 1 to 8192"):
        next(iter(client.sample("uniform", batch_size=0)))
    with pytest.raises(InvalidArgumentError, match=r"batch_size: .*max_sample_batch_size\), got 1000000000"):
        next(iter(client.sample("uniform", batch_size=10**9)))  # drawn under the table's lock: bounded
    with pytest.raises(InvalidArgumentError, match="importance_sampling_exponent"):
        next(iter(client.sample("uniform", batch_size=1, importance_sampling_exponent=2.0)))
    with pytest.raises(InvalidArgumentError, match="timeout_seconds"):
        next(iter(client.sample("uniform", batch_size=1, timeout=-1)))


def test_the_writer_reports_bad_steps_early_with_the_value(replay):
    server, client = replay
    with client.writer("uniform", chunk_length=2) as writer:
        with pytest.raises(InvalidArgumentError, match=r"step\['obs'\]: shape \[8, 8\]"):
            writer.append({"obs": np.zeros((8, 8), np.uint8), "action": 1, "reward": 0.0})
        with pytest.raises(InvalidArgumentError, match="non-finite"):
            writer.write_chunk(bad(reward=np.array([np.inf] * 4, np.float32)))
        writer.write_chunk(frames(2))
    assert client.info(["uniform"])["uniform"].size == 2


def test_writer_chunk_length_must_fit_a_message(replay):
    server, client = replay
    with pytest.raises(InvalidArgumentError, match="chunk_length: 100000 steps"):
        client.writer("uniform", chunk_length=100_000)


def test_oversized_chunk_is_reported_by_the_client_error_family(start_replay):
    server = start_replay([table("t", max_size=20_000)], max_message_bytes=256 * 1024)
    with ReplayClient(server.address) as client, pytest.raises(ResourceExhaustedError):
        client.insert("t", frames(2000))


def _zstd_zeros(size: int, declare_size: bool) -> bytes:
    """A zstd frame of ``size`` zero bytes, built a MiB at a time (the bomb itself stays small)."""
    out = io.BytesIO()
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=declare_size)
    with compressor.stream_writer(out, size=size if declare_size else -1, closefd=False) as writer:
        for _ in range(size >> 20):
            writer.write(bytes(1 << 20))
    return out.getvalue()


def _bomb(data: bytes, compression: int, obs_shape=(4, 8, 8, 3)) -> replay_pb2.InsertRequest:
    request = chunk_request(frames(4))
    obs = request.chunk.columns["obs"]
    obs.data, obs.compression = data, compression
    del obs.shape[:]
    obs.shape.extend(obs_shape)
    if len(obs_shape) == 4:  # every column claims the same number of steps
        for name in ("action", "reward"):
            request.chunk.columns[name].shape[0] = obs_shape[0]
    return request


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_bomb(_zstd_zeros(1 << 30, True), codec.Compression.COMPRESSION_ZSTD), "zstd frame declares 1073741824 bytes"),
        (_bomb(_zstd_zeros(256 << 20, False), codec.Compression.COMPRESSION_ZSTD), r"\.data: 769 bytes.* need 768"),
        (_bomb(lz4.frame.compress(bytes(256 << 20)), codec.Compression.COMPRESSION_LZ4), r"\.data: 769 bytes"),
        (
            _bomb(lz4.frame.compress(bytes(1 << 20)), codec.Compression.COMPRESSION_LZ4, (1 << 36, 8, 8, 3)),
            r"decode to \d+ bytes, more than this server takes in one chunk",
        ),
        (_bomb(b"", codec.Compression.COMPRESSION_ZSTD, (0, 1 << 62, 8, 3)), r"\['obs'\]\.shape: got \[0, 46116"),
        (
            _bomb(b"", codec.Compression.COMPRESSION_NONE, (4,) * 80),
            r"\['obs'\]\.shape: got \[4, 4, 4, 4, 4, 4, 4, 4, \.\.\. \(80",
        ),
    ],
    ids=["zstd-declares-1GiB", "zstd-undeclared-256MiB", "lz4-256MiB", "shape-2^36-steps", "zero-and-huge", "80-dims"],
)
def test_decompression_bombs_and_extreme_shapes_are_refused_before_they_inflate(replay, request_, message):
    """A small message cannot make replay allocate what it claims: shapes are checked against the
    signature first, and decompression stops one byte past the size the signature allows."""
    server, client = replay
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    with pytest.raises(grpc.RpcError) as raised:
        insert_raw(server.address, request_)
    grown = process.memory_info().rss - before
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(message, raised.value.details()), raised.value.details()
    assert len(raised.value.details()) < 600, "a hostile shape is not echoed without bound"
    assert grown < 16 << 20, f"replay grew {grown / 2**20:.0f} MiB decoding a {request_.ByteSize()} byte message"
    assert client.insert("uniform", frames(2)) == [1, 2], "the server goes on"


def test_a_client_killed_mid_stream_is_no_internal_error(replay, caplog):
    """A writer whose process dies mid-stream (an actor killed, a game client closed) ends its call
    quietly: no traceback, no INTERNAL in the latency metric, what it had acknowledged kept."""
    server, client = replay
    script = textwrap.dedent(
        f"""
        import time, grpc
        from tests.service.test_replay_bad_input import chunk_request
        from tests.helpers import frames
        from rlrings.v1 import replay_pb2_grpc
        def requests():
            yield chunk_request(frames(2))
            time.sleep(60)
        channel = grpc.insecure_channel("{server.address}")
        call = replay_pb2_grpc.ReplayServiceStub(channel).Insert(requests())
        print(list(next(call).keys), flush=True)
        time.sleep(60)
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "[1, 2]"
    finally:
        writer.kill()
        writer.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and 'method="Insert"' not in _handled(server):
        time.sleep(0.05)
    assert 'method="Insert"' in _handled(server), "the server saw the stream end"
    assert "internal error" not in caplog.text and "Traceback" not in caplog.text
    assert 'code="INTERNAL"' not in _handled(server)
    assert client.info(["uniform"])["uniform"].size == 2


def _handled(server) -> str:
    from prometheus_client import generate_latest

    return generate_latest(server.server.registry).decode()


def test_a_bounded_action_column_refuses_or_clips_over_grpc_as_its_signature_says(start_replay):
    """Continuous actions outside the table's bounds: INVALID_ARGUMENT naming the column, the index and
    the bound, nothing stored; a clipping column stores them at the bound (and says so in Info)."""
    column = {"dtype": "float32", "shape": [2], "low": [-1.0, 0.0], "high": 1.0}
    server = start_replay([
        {"name": "refuse", "signature": {"action": column}, "max_size": 100},
        {"name": "clip", "signature": {"action": {**column, "out_of_bounds": "clip"}}, "max_size": 100},
    ])  # fmt: skip
    outside = {"action": np.array([[0.5, 0.5], [0.0, -0.25]], np.float32)}
    with pytest.raises(grpc.RpcError) as raised:
        insert_raw(server.address, chunk_request(outside, table="refuse"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "['action']: value -0.25 at index [1, 1] is below its low bound 0" in raised.value.details()
    insert_raw(server.address, chunk_request(outside, table="clip"))
    with ReplayClient(server.address) as client:
        info = client.info(["refuse", "clip"])
        assert info["refuse"].size == 0 and info["clip"].size == 2
        batch = next(iter(client.sample("clip", batch_size=50)))
        assert {tuple(a) for a in batch.columns["action"][:, 0].tolist()} == {(0.5, 0.5), (0.0, 0.0)}
        signature, _ = client.signature("clip")
        assert signature["action"].clip and signature["action"].low == (-1.0, 0.0)
        writer = client.writer("refuse", chunk_length=1)
        with pytest.raises(InvalidArgumentError, match="above its high bound 1"):  # the writer checks first
            writer.write_chunk({"action": np.array([[2.0, 0.5]], np.float32)})
        writer.close()
