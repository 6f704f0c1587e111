"""Client of the replay service: a chunking writer and a prefetching sampler.

This is the SDK actors use, and the one an external game client uses to
upload experience::

    with ReplayClient("localhost:8000") as client:
        with client.writer("experience", chunk_length=32) as writer:
            for step in steps:
                writer.append({"obs": obs, "action": action, "reward": reward})
        for batch in client.sample("experience", batch_size=256, num_batches=10):
            learn(batch.columns)

The writer streams chunks with at most ``max_in_flight`` unacknowledged, so a
slow server slows the writer instead of filling memory; on UNAVAILABLE it
reconnects and resends what was not acknowledged (the server drops repeats by
writer id and sequence), so a replay restart costs a pause, not data.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from rlrings.core.errors import DeadlineExceededError, InvalidArgumentError, RlringsError, UnavailableError
from rlrings.rpc import codec
from rlrings.rpc.backoff import Backoff
from rlrings.rpc.client import DEFAULT_MAX_MESSAGE_BYTES, ServiceClient, from_rpc_error
from rlrings.rpc.security import PLAINTEXT, ClientSecurity
from rlrings.rpc.signature import Signature
from rlrings.v1 import replay_pb2, replay_pb2_grpc, tensor_pb2

log = logging.getLogger(__name__)

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


class ReplayClient(ServiceClient):
    """Talks to one replay server. Use as a context manager, or call close()."""

    service = "replay"

    def __init__(
        self, address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, security: ClientSecurity = PLAINTEXT
    ):
        """``security``: TLS and token to dial with (a service passes ``config.client_security()``)."""
        super().__init__(address, max_message_bytes, security)
        self._stub = replay_pb2_grpc.ReplayServiceStub(self._channel)

    # -- unary calls ---------------------------------------------------------

    def info(self, tables: Sequence[str] = (), timeout: float = 10.0) -> dict[str, replay_pb2.TableInfo]:
        response = self._call(self._stub.Info, replay_pb2.InfoRequest(tables=tables), timeout)
        return {table.name: table for table in response.tables}

    def signature(self, table: str) -> tuple[Signature, int]:
        """The table's signature and sequence length."""
        info = self.info([table])[table]
        return Signature.from_protos(info.signature), info.sequence_length

    def checkpoint(self, timeout: float = 600.0) -> replay_pb2.CheckpointResponse:
        return self._call(self._stub.Checkpoint, replay_pb2.CheckpointRequest(), timeout)

    def update_priorities(self, table: str, keys: Sequence[int], priorities: Sequence[float]) -> tuple[int, int]:
        """Returns (updated, missing)."""
        request = replay_pb2.UpdatePrioritiesRequest(
            table=table, keys=np.asarray(keys).tolist(), priorities=np.asarray(priorities, dtype=np.float64).tolist()
        )
        response = self._call(self._stub.UpdatePriorities, request, 30.0)
        return response.updated, response.missing

    def insert(
        self, table: str, columns: Mapping[str, np.ndarray], priorities: Sequence[float] = (), timeout: float = 60.0
    ) -> list[int]:
        """Inserts one chunk and waits up to ``timeout`` seconds for its acknowledgement (the
        table's rate limiter holds it while inserts run ahead of samples); returns its keys.

        Raises:
            DeadlineExceededError: no acknowledgement within ``timeout``; the chunk may or may not
                have been stored (a :class:`Writer` retries without duplicates).
        """
        chunk = replay_pb2.InsertRequest(
            chunk=tensor_pb2.Chunk(
                table=table, columns={k: codec.encode(v) for k, v in columns.items()}, priorities=priorities
            )
        )
        try:
            responses = list(self._stub.Insert(iter([chunk]), timeout=timeout))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceededError(
                    f"DEADLINE_EXCEEDED: table {table!r}: no acknowledgement within {timeout:g}s; its rate limiter "
                    "holds inserts back while they run ahead of samples (ReplayClient.info shows its state)"
                ) from None
            raise from_rpc_error(error, self.address) from None
        return list(responses[0].keys)

    # -- streams -------------------------------------------------------------

    def writer(self, table: str, chunk_length: int = 32, max_in_flight: int = 8, **kwargs) -> Writer:
        """A writer that appends steps to ``table`` in chunks of ``chunk_length``."""
        return Writer(self, table, chunk_length, max_in_flight, **kwargs)

    def sample(
        self,
        table: str,
        batch_size: int,
        num_batches: int = 0,
        max_in_flight: int = 2,
        timeout: float = 60.0,
        importance_sampling_exponent: float = 0.0,
        policy_version: int = 0,
    ) -> Sampler:
        """An iterator of :class:`Batch`, drawn at most ``max_in_flight`` ahead of
        the consumer (items count as sampled when drawn, so fewer is fresher).

        ``timeout`` is the longest the server waits on the table's rate limiter for one batch;
        past it the iterator raises :class:`DeadlineExceededError` naming the table and the
        inserts the batch waits for. 0 waits as long as it takes (a learner beside its actors)."""
        request = replay_pb2.SampleRequest(
            table=table,
            batch_size=batch_size,
            num_batches=num_batches,
            timeout_seconds=timeout,
            importance_sampling_exponent=importance_sampling_exponent,
            current_policy_version=policy_version,
        )
        return Sampler(self._stub, request, max_in_flight)


@dataclass
class Batch:
    """A sampled batch: columns of shape [B, sequence_length, *shape]."""

    columns: dict[str, np.ndarray]
    keys: np.ndarray
    probabilities: np.ndarray
    importance_weights: np.ndarray
    times_sampled: np.ndarray
    policy_versions: np.ndarray
    table_size: int

    def __len__(self) -> int:
        return len(self.keys)


class Writer:
    """Turns steps into chunks and streams them with flow control and retries.

    ``append`` buffers one step (a mapping of column to value); every
    ``chunk_length`` steps a chunk is queued. ``write_chunk`` queues a whole
    chunk. At most ``max_in_flight`` chunks wait for acknowledgement; beyond
    that the calls block. ``flush`` waits until everything queued is
    acknowledged. Steps are checked against the table's signature as they
    arrive, so mistakes raise here with the bad value.
    """

    def __init__(
        self,
        client: ReplayClient,
        table: str,
        chunk_length: int,
        max_in_flight: int,
        compression: int | Mapping[str, int] = codec.Compression.COMPRESSION_NONE,
        retry_seconds: float = 300.0,
        writer_id: str | None = None,
    ):
        if chunk_length < 1:
            raise InvalidArgumentError(f"chunk_length: must be >= 1, got {chunk_length}")
        if max_in_flight < 1:
            raise InvalidArgumentError(f"max_in_flight: must be >= 1, got {max_in_flight}")
        self.table = table
        self.chunk_length = chunk_length
        self.max_in_flight = max_in_flight
        self.retry_seconds = retry_seconds
        self.writer_id = writer_id or uuid.uuid4().hex
        self._stub = client._stub
        self.signature, self.sequence_length = client.signature(table)
        chunk_bytes = self.signature.step_bytes * chunk_length
        if not isinstance(compression, Mapping):
            compression = dict.fromkeys(self.signature, compression)
        self.compression = {name: compression.get(name, codec.Compression.COMPRESSION_NONE) for name in self.signature}
        """Column name -> how its tensors are compressed."""
        uncompressed = all(c == codec.Compression.COMPRESSION_NONE for c in self.compression.values())
        if uncompressed and chunk_bytes > client.max_message_bytes - 64 * 1024:
            raise InvalidArgumentError(
                f"chunk_length: {chunk_length} steps are {chunk_bytes} bytes, above the message limit "
                f"{client.max_message_bytes}; use fewer steps per chunk"
            )
        if chunk_length % self.sequence_length:
            raise InvalidArgumentError(
                f"chunk_length: {chunk_length} is not a multiple of table {table!r}'s sequence length "
                f"{self.sequence_length}"
            )
        self._steps: dict[str, list[np.ndarray]] = {name: [] for name in self.signature}
        self._last_append: tuple[tuple[float, ...], int] = ((), 0)  # priority and version of the last step
        self._sequence = 0
        self._unacked: collections.deque[replay_pb2.InsertRequest] = collections.deque()
        # Requests for the current stream; each attempt gets a new outbox so a
        # dead stream's reader can never take a request meant for the next one.
        self._outbox: queue.Queue = queue.Queue()
        self._cond = threading.Condition()
        self._error: RlringsError | None = None
        self._closed = False
        self.acked_chunks = 0
        self.acked_items = 0  # items the server holds from this writer, retries counted once
        self.reconnects = 0
        self._thread = threading.Thread(target=self._stream_forever, name=f"writer-{table}", daemon=True)
        self._thread.start()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(flush=exc_type is None)

    @property
    def pending(self) -> int:
        """Chunks sent or queued but not yet acknowledged."""
        with self._cond:
            return len(self._unacked)

    def append(self, step: Mapping[str, object], priority: float | None = None, policy_version: int = 0) -> None:
        """Buffers one step; sends a chunk when ``chunk_length`` steps are buffered."""
        if set(step) != set(self.signature):
            raise InvalidArgumentError(f"step: columns {sorted(step)} do not match {self.signature!r}")
        for name, column in self.signature.items():
            value = np.asarray(step[name])
            if value.shape != column.shape:
                raise InvalidArgumentError(
                    f"step[{name!r}]: shape {list(value.shape)}, the table wants {list(column.shape)}"
                )
            self._steps[name].append(value)
        self._last_append = ((), policy_version) if priority is None else ((priority,), policy_version)
        if self.buffered_steps == self.chunk_length:
            self._write_buffered(self.chunk_length)

    @property
    def buffered_steps(self) -> int:
        """Steps appended but not yet sent (fewer than ``chunk_length``)."""
        return len(self._steps[next(iter(self.signature))])

    def _write_buffered(self, steps: int) -> None:
        columns = {name: np.stack(values[:steps]) for name, values in self._steps.items()}
        for values in self._steps.values():
            del values[:steps]
        priorities, policy_version = self._last_append
        self.write_chunk(columns, priorities=priorities, policy_version=policy_version)

    def write_chunk(
        self,
        columns: Mapping[str, np.ndarray],
        priorities: Sequence[float] = (),
        policy_version: int = 0,
        episode_id: int = 0,
        first_step: int = 0,
    ) -> None:
        """Queues one chunk (columns with a leading time axis)."""
        columns = {name: np.asarray(value) for name, value in columns.items()}
        for name, column in self.signature.items():  # cast Python scalars' default dtypes
            if (
                name in columns
                and columns[name].dtype != column.dtype
                and np.can_cast(columns[name].dtype, column.dtype, "same_kind")
            ):
                columns[name] = columns[name].astype(column.dtype)
        self.signature.check(columns, self.sequence_length)
        self._sequence += 1
        request = replay_pb2.InsertRequest(
            chunk=tensor_pb2.Chunk(
                table=self.table,
                columns={name: codec.encode(value, self.compression.get(name, 0)) for name, value in columns.items()},
                priorities=priorities,
                policy_version=policy_version,
                writer_id=self.writer_id,
                sequence=self._sequence,
                episode_id=episode_id,
                first_step=first_step,
            )
        )
        with self._cond:
            self._raise_pending_error()
            self._cond.wait_for(lambda: len(self._unacked) < self.max_in_flight or self._error or self._closed)
            self._raise_pending_error()
            self._unacked.append(request)
            self._outbox.put(request)

    def wait_acknowledged(self, timeout: float | None = None) -> bool:
        """Waits until every chunk is acknowledged or the writer is closed (what an on-policy actor
        does before stepping on); False if ``timeout`` passed first.

        Raises:
            RlringsError: replay refused or lost a chunk meanwhile (as ``write_chunk`` would).
        """
        with self._cond:
            done = self._cond.wait_for(lambda: not self._unacked or self._error is not None or self._closed, timeout)
            self._raise_pending_error()
            return done

    def flush(self, timeout: float | None = None) -> None:
        """Sends the steps buffered short of a full chunk (as many whole items as they make) and
        waits until every chunk is acknowledged.

        Raises:
            TimeoutError: not all acknowledged within ``timeout`` seconds.
            InvalidArgumentError: steps are left that make no whole item of the table's sequence
                length (after the rest is acknowledged); ``close(flush=False)`` drops them.
        """
        whole = self.buffered_steps - self.buffered_steps % self.sequence_length
        if whole:
            self._write_buffered(whole)
        with self._cond:
            done = self._cond.wait_for(lambda: not self._unacked or self._error is not None, timeout)
            self._raise_pending_error()
            if not done:
                raise TimeoutError(f"writer: {len(self._unacked)} chunks unacknowledged after {timeout}s")
        if self.buffered_steps:
            raise InvalidArgumentError(
                f"writer: {self.buffered_steps} steps buffered make no whole item of table {self.table!r}'s "
                f"sequence length {self.sequence_length}; append more, or close(flush=False) to drop them"
            )

    def close(self, flush: bool = True, timeout: float | None = 60.0) -> None:
        """Flushes (unless told not to: buffered steps are then dropped) and stops the stream."""
        try:
            if flush and not self._closed:
                self.flush(timeout)
        finally:
            with self._cond:
                self._closed = True
                self._outbox.put(None)
                self._cond.notify_all()
            self._thread.join(timeout=10)

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # -- the background stream -------------------------------------------

    @staticmethod
    def _requests(outbox: queue.Queue) -> Iterator[replay_pb2.InsertRequest]:
        while (request := outbox.get()) is not None:
            yield request

    def _stream_forever(self) -> None:
        failing_since: float | None = None
        backoff = Backoff(initial=0.05, maximum=2.0)
        while True:
            with self._cond:
                if self._closed:
                    return
                outbox = self._outbox = queue.Queue()
                for request in self._unacked:  # resend what was not acknowledged
                    outbox.put(request)
            try:
                for response in self._stub.Insert(self._requests(outbox)):
                    failing_since = None
                    backoff.reset()
                    with self._cond:
                        request = self._unacked.popleft()
                        assert request.chunk.sequence == response.sequence, "acks arrive in order"
                        self.acked_chunks += 1
                        # A duplicate was stored by an earlier attempt whose ack was lost.
                        steps = next(iter(request.chunk.columns.values())).shape[0]
                        self.acked_items += steps // self.sequence_length
                        self._cond.notify_all()
            except grpc.RpcError as error:
                with self._cond:
                    if self._closed:
                        return
                retryable = error.code() in _RETRYABLE
                now = time.monotonic()
                with self._cond:  # with nothing waiting for an ack (a stream closed idle), nothing is at stake
                    failing_since = (failing_since or now) if self._unacked else now
                if retryable and now - failing_since < self.retry_seconds:
                    log.info("replay unavailable (%s); retrying", error.details())
                    self.reconnects += 1
                    backoff.wait()
                    continue
                with self._cond:
                    if retryable:  # gave up: report every chunk still waiting
                        self._error = UnavailableError(
                            f"replay unreachable for {self.retry_seconds}s; {len(self._unacked)} chunks not stored: "
                            f"{error.details()}"
                        )
                        self._unacked.clear()
                    else:
                        # The stream ended at the oldest unacknowledged chunk:
                        # drop it, report why, and go on with the rest.
                        if self._unacked:
                            self._unacked.popleft()
                        self._error = from_rpc_error(error)
                    self._cond.notify_all()
            finally:
                outbox.put(None)  # release the dead stream's request reader


class Sampler:
    """Iterator of batches, drawn against credits: the server draws a batch only
    when this sampler has room for it, so at most ``max_in_flight`` batches are
    ever drawn ahead of the consumer (in the network or here). Each batch the
    consumer takes grants one more. Reconnects on UNAVAILABLE; other errors
    surface in the consumer's ``next()``.

    ``policy_version`` (set it as the learner's policy moves on) travels with
    each credit, for tables that drop items older than ``max_policy_lag``;
    ``importance_sampling_exponent`` likewise, for an annealed beta.
    """

    _END = object()

    def __init__(self, stub, request: replay_pb2.SampleRequest, max_in_flight: int):
        if max_in_flight < 1:
            raise InvalidArgumentError(f"max_in_flight: must be >= 1, got {max_in_flight}")
        self._stub = stub
        self._request = request
        self.max_in_flight = max_in_flight
        self.policy_version = request.current_policy_version
        self.importance_sampling_exponent = request.importance_sampling_exponent
        self._batches: queue.Queue = queue.Queue()  # bounded by the credits
        self._lock = threading.Lock()
        self._outbox: queue.Queue = queue.Queue()  # credits for the current call
        self._received = 0  # batches put into _batches
        self._taken = 0  # batches the consumer took (and granted again)
        self._call = None
        self._stopped = threading.Event()
        self._taken_event = threading.Event()
        self.wait_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name=f"sampler-{request.table}", daemon=True)
        self._thread.start()

    def __iter__(self) -> Sampler:
        return self

    def __next__(self) -> Batch:
        start = time.perf_counter()
        item = self._batches.get()
        self.wait_seconds += time.perf_counter() - start
        if item is self._END:
            self._batches.put(self._END)
            raise StopIteration
        if isinstance(item, BaseException):
            self._batches.put(self._END)
            raise item
        with self._lock:
            self._taken += 1
            self._outbox.put(
                replay_pb2.SampleRequest(
                    credits=1,
                    current_policy_version=self.policy_version,
                    importance_sampling_exponent=self.importance_sampling_exponent,
                )
            )
        self._taken_event.set()
        return item

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stopped.set()
        self._taken_event.set()
        with self._lock:
            self._outbox.put(None)
        if self._call is not None:
            self._call.cancel()
        self._thread.join(timeout=10)
        self._batches.put(self._END)  # a consumer blocked in next() ends its iteration

    @staticmethod
    def _requests(outbox: queue.Queue) -> Iterator[replay_pb2.SampleRequest]:
        while (request := outbox.get()) is not None:
            yield request

    def _open(self, remaining: int):
        """A new call, granting what the consumer has room for; None until it has some."""
        with self._lock:
            credits = self.max_in_flight - (self._received - self._taken)
            if credits <= 0:
                self._taken_event.clear()
                return None
            self._outbox.put(None)  # ends the previous call's requests
            self._outbox = outbox = queue.Queue()
            request = replay_pb2.SampleRequest()
            request.CopyFrom(self._request)
            request.num_batches = remaining
            request.credits = credits
            request.current_policy_version = self.policy_version
            request.importance_sampling_exponent = self.importance_sampling_exponent
            outbox.put(request)
        return self._stub.Sample(self._requests(outbox))

    def _run(self) -> None:
        remaining = self._request.num_batches
        backoff = Backoff(initial=0.05, maximum=2.0)
        while not self._stopped.is_set():
            pieces: list[replay_pb2.SampleResponse] = []
            try:
                self._call = self._open(remaining)
                if self._call is None:  # the consumer holds every batch it may: wait for it to take one
                    self._taken_event.wait(1.0)
                    continue
                for response in self._call:
                    pieces.append(response)
                    if response.end_of_batch:
                        backoff.reset()
                        with self._lock:
                            self._received += 1
                        self._batches.put(_assemble(pieces))
                        pieces = []
                        if remaining:
                            remaining -= 1
                            if remaining == 0:
                                break
                if not self._stopped.is_set():
                    self._batches.put(self._END)
                return
            except grpc.RpcError as error:
                if self._stopped.is_set():
                    return
                if error.code() in _RETRYABLE:
                    backoff.wait(self._stopped)
                    continue
                self._batches.put(from_rpc_error(error))
                return
            finally:
                with self._lock:
                    self._outbox.put(None)


def _assemble(pieces: list[replay_pb2.SampleResponse]) -> Batch:
    decoded = [{name: codec.decode(t, name) for name, t in piece.columns.items()} for piece in pieces]
    if len(pieces) == 1:
        columns = decoded[0]
    else:
        columns = {name: np.concatenate([d[name] for d in decoded]) for name in decoded[0]}

    def joined(field, dtype):
        return np.concatenate([np.asarray(getattr(piece, field), dtype=dtype) for piece in pieces])

    return Batch(
        columns=columns,
        keys=joined("keys", np.uint64),
        probabilities=joined("probabilities", np.float64),
        importance_weights=joined("importance_weights", np.float64),
        times_sampled=joined("times_sampled", np.uint32),
        policy_versions=joined("policy_versions", np.int64),
        table_size=pieces[-1].table_size,
    )
