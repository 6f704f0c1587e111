"""gRPC face of the replay service: translates messages to :class:`Replay` calls."""

from __future__ import annotations

import asyncio
import math

import grpc
import numpy as np

from rlrings.core.errors import InvalidArgumentError, RlringsError
from rlrings.rpc import codec
from rlrings.rpc.security import caller_may, current_caller
from rlrings.rpc.server import blocking
from rlrings.services.replay.replay import Replay
from rlrings.services.replay.table import SampledBatch, Table, WouldBlock
from rlrings.v1 import replay_pb2, replay_pb2_grpc

# Room left in each sample message for framing, and the most each item adds
# beside its tensors (key, probability, weight, times sampled, policy version).
_MESSAGE_HEADROOM = 64 * 1024
_ITEM_METADATA_BYTES = 64
# Chunks of one insert stream whose writes to the ring may be under way at once.
_PIPELINE_DEPTH = 32


async def _finish_when_written(pending, is_active):
    """Waits for a chunk's ring write on the loop (no thread held per chunk in flight), then
    places it in memory there, as the embedded path does; only a chunk the rate limiter holds
    back waits on the pool."""
    if pending.written is not None and not pending.written.done():
        await asyncio.wait([asyncio.wrap_future(pending.written)])  # its outcome is finish's to raise
    try:
        return pending.finish(is_active, wait=False)
    except WouldBlock:
        return await blocking(pending.finish, is_active)


class ReplayServicer(replay_pb2_grpc.ReplayServiceServicer):
    def __init__(self, replay: Replay, max_message_bytes: int, max_batch_size: int = 8192):
        self.replay = replay
        self.max_message_bytes = max_message_bytes
        self.max_batch_size = max_batch_size

    async def Insert(self, request_iterator, context):
        """Acks each chunk once stored. The stream holds no thread while it waits for the client;
        each chunk is checked and stored on the wait pool (storing may wait on the rate limiter)."""
        caller = current_caller()  # (a token: charged decoded bytes, its writer ids its own, its priorities capped)
        if self.replay.ring is None:
            is_active = lambda: not context.done()  # noqa: E731
            log = self.replay.ack_log
            on_loop = log is None or not log.sync_each  # (a sync per chunk would stall the loop)
            async for request in request_iterator:
                writer_id = request.chunk.writer_id
                if not on_loop:
                    yield _ack(writer_id, request.chunk, await blocking(self._store, request.chunk, caller, is_active))
                    continue
                # Stored here on the loop when the table has room: a hop to a thread per chunk costs
                # more than the work (GIL handovers); only a chunk the rate limiter holds back waits there.
                pending = self.replay.start_insert(request.chunk, caller)
                try:
                    stored = pending.finish(is_active, wait=False)
                except WouldBlock:
                    stored = await blocking(pending.finish, is_active)
                yield _ack(writer_id, request.chunk, stored)
        else:
            async for ack in self._insert_pipelined(request_iterator, context, caller):
                yield ack

    def _store(self, chunk, caller, is_active):
        return self.replay.start_insert(chunk, caller).finish(is_active)

    async def _insert_pipelined(self, request_iterator, context, caller):
        """With a ring, the writes of the next chunks of a stream overlap with
        the wait for the current one; acks still go out in order, each only
        after its chunk is stored at the consistency level."""
        started: asyncio.Queue = asyncio.Queue(maxsize=_PIPELINE_DEPTH)
        loop = asyncio.get_running_loop()

        async def start(chunk):
            future = loop.run_in_executor(None, self.replay.start_insert, chunk, caller)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:  # the stream ended meanwhile: its keys are given up when it is done
                future.add_done_callback(lambda f: f.exception() is None and f.result().abandon())
                raise

        async def read() -> None:
            try:
                async for request in request_iterator:
                    writer_id = request.chunk.writer_id
                    await started.put((writer_id, request.chunk, await start(request.chunk)))
            except RlringsError as error:  # bad input: ends the stream after the chunks before it
                await started.put(error)
                return
            except (grpc.RpcError, grpc.aio.AioRpcError):  # the caller went away
                pass
            await started.put(None)

        reader = asyncio.create_task(read())
        try:
            while (entry := await started.get()) is not None:
                if isinstance(entry, RlringsError):
                    raise entry
                writer_id, chunk, pending = entry
                # shielded: this chunk's keys must be placed or given up (finish does one or the
                # other, and sees the caller gone) even when the call is cancelled meanwhile
                stored = await asyncio.shield(_finish_when_written(pending, lambda: not context.done()))
                yield _ack(writer_id, chunk, stored)
        finally:  # the stream ended early: chunks started but never finished give their keys up
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            while not started.empty():
                entry = started.get_nowait()
                if isinstance(entry, tuple):
                    entry[2].abandon()

    async def Sample(self, request_iterator, context):
        """Draws a batch only against a credit the client granted (see the proto). Waiting for
        credits holds no thread; a draw (which may wait for items) runs on the wait pool."""
        requests = request_iterator.__aiter__()
        request = await _next_request(requests)
        if request is None:
            return
        table = self.replay.table(request.table)
        if not 1 <= request.batch_size <= self.max_batch_size:
            raise InvalidArgumentError(
                f"batch_size: must be from 1 to {self.max_batch_size} (this server's max_sample_batch_size), "
                f"got {request.batch_size}"
            )
        if not math.isfinite(request.timeout_seconds) or request.timeout_seconds < 0:
            raise InvalidArgumentError(f"timeout_seconds: must be finite and >= 0, got {request.timeout_seconds}")
        if not request.credits and not request.num_batches:
            raise InvalidArgumentError(
                "credits: a stream without num_batches needs credits (batches the client can take ahead)"
            )
        beta = _checked_beta(request.importance_sampling_exponent)
        per_message = max(1, (self.max_message_bytes - _MESSAGE_HEADROOM) // (table.item_bytes + _ITEM_METADATA_BYTES))
        credits = request.credits or request.num_batches
        version = request.current_policy_version
        sent = 0

        def draw(version: int, beta: float, wait: bool = True) -> list[replay_pb2.SampleResponse]:
            batch = self.replay.sample(request.table, request.batch_size, request.timeout_seconds or None, beta,
                                       lambda: not context.done(), version, wait)  # fmt: skip
            return list(_pieces(batch, per_message))

        while request.num_batches == 0 or sent < request.num_batches:
            while credits == 0:  # wait for the client to take what it has
                grant = await _next_request(requests)
                if grant is None:  # the client ended its side with nothing more granted
                    return
                credits += grant.credits
                version = grant.current_policy_version or version
                beta = _checked_beta(grant.importance_sampling_exponent) if grant.importance_sampling_exponent else beta
            try:  # drawn here on the loop when the table can give it now (see Insert); else on a thread
                pieces = draw(version, beta, wait=False)
            except WouldBlock:
                pieces = await blocking(draw, version, beta)
            credits -= 1
            for piece in pieces:
                yield piece
            sent += 1

    def UpdatePriorities(self, request, context):
        updated, missing = self.replay.update_priorities(request.table, list(request.keys), list(request.priorities))
        return replay_pb2.UpdatePrioritiesResponse(updated=updated, missing=missing)

    async def Info(self, request, context):
        """Every table's settings and counters; to a writer that may only insert, what writing needs
        (name, signature, sequence length), so an upload token needs no 'read'. Answered on the event
        loop (microseconds of work under each table's lock): a hop to a thread and back would queue
        twice behind the streams' work, which is what an operator's call waited on under load."""
        names = list(request.tables) or list(self.replay.tables)
        tables = [self.replay.table(name) for name in names]
        if not caller_may("read"):
            return replay_pb2.InfoResponse(tables=[writing_info(table) for table in tables])
        return replay_pb2.InfoResponse(tables=[table_info(table) for table in tables])

    def Checkpoint(self, request, context):
        result = self.replay.checkpoint()
        return replay_pb2.CheckpointResponse(path=str(result.path), items=result.items, seconds=result.seconds)


async def _next_request(requests):
    """The client's next message; None once it has ended its side or gone away."""
    try:
        return await requests.__anext__()
    except (StopAsyncIteration, grpc.RpcError):  # ended, or cancelled
        return None


def _checked_beta(beta: float) -> float:
    if not 0.0 <= beta <= 1.0:
        raise InvalidArgumentError(f"importance_sampling_exponent: must be in [0, 1], got {beta}")
    return beta


def _ack(writer_id: str, chunk, stored: tuple[np.ndarray, bool]) -> replay_pb2.InsertResponse:
    """The ack of a stored chunk, with the writer id the client sent (the table keeps it under the
    caller's name)."""
    keys, duplicate = stored
    return replay_pb2.InsertResponse(
        writer_id=writer_id, sequence=chunk.sequence, keys=keys.tolist(), duplicate=duplicate
    )


def _pieces(batch: SampledBatch, per_message: int):
    n = len(batch.keys)
    for start in range(0, n, per_message):
        part = slice(start, min(n, start + per_message))
        yield replay_pb2.SampleResponse(
            columns={name: codec.encode(array[part]) for name, array in batch.columns.items()},
            keys=batch.keys[part].tolist(),
            probabilities=batch.probabilities[part].tolist(),
            importance_weights=batch.importance_weights[part].tolist(),
            times_sampled=batch.times_sampled[part].tolist(),
            policy_versions=batch.policy_versions[part].tolist(),
            table_size=batch.table_size,
            end_of_batch=part.stop == n,
        )


WRITING_FIELDS = ("name", "sequence_length", "signature")
"""What Info tells a caller that may only insert: what writing needs."""


def writing_info(table: Table) -> replay_pb2.TableInfo:
    """Info for a writer without "read": what writing needs, and the names of what is withheld."""
    withheld = [f.name for f in replay_pb2.TableInfo.DESCRIPTOR.fields if f.name not in (*WRITING_FIELDS, "withheld")]
    return replay_pb2.TableInfo(
        name=table.name,
        sequence_length=table.sequence_length,
        signature=table.signature.to_protos(),
        withheld=withheld,
    )


def table_info(table: Table) -> replay_pb2.TableInfo:
    limiter = table.limiter
    config = table.config
    return replay_pb2.TableInfo(
        name=table.name,
        selector=config.selector,
        remover=config.remover,
        max_size=table.capacity,
        size=table.size,
        max_times_sampled=config.max_times_sampled,
        sequence_length=table.sequence_length,
        signature=table.signature.to_protos(),
        priority_exponent=config.priority_exponent,
        inserted_items=table.inserted_items,
        sampled_items=table.sampled_items,
        evicted_items=table.evicted_items,
        max_policy_lag=config.max_policy_lag,
        stale_items=table.stale_items,
        rate_limiter=replay_pb2.RateLimiterInfo(
            min_size_to_sample=limiter.min_size_to_sample,
            samples_per_insert=limiter.samples_per_insert or 0.0,
            min_diff=_finite_or_zero(limiter.min_diff),
            max_diff=_finite_or_zero(limiter.max_diff),
            inserts=limiter.inserts,
            samples=limiter.samples,
            insert_wait_seconds=limiter.insert_wait_seconds,
            sample_wait_seconds=limiter.sample_wait_seconds,
        ),
    )


def _finite_or_zero(value: float) -> float:
    return value if np.isfinite(value) else 0.0
