"""gRPC face of the replay service: translates messages to :class:`Replay` calls."""

from __future__ import annotations

import math
import queue
import threading

import grpc
import numpy as np

from rlrings import codec
from rlrings.errors import InvalidArgumentError, RlringsError
from rlrings.security import caller_may
from rlrings.v1 import replay_pb2, replay_pb2_grpc
from services.replay.replay import Replay
from services.replay.table import SampledBatch, Table

# Room left in each sample message for framing, and the most each item adds
# beside its tensors (key, probability, weight, times sampled, policy version).
_MESSAGE_HEADROOM = 64 * 1024
_ITEM_METADATA_BYTES = 64
# Chunks of one insert stream whose writes to the ring may be under way at once.
_PIPELINE_DEPTH = 32


class ReplayServicer(replay_pb2_grpc.ReplayServiceServicer):
    def __init__(self, replay: Replay, max_message_bytes: int, max_batch_size: int = 8192):
        self.replay = replay
        self.max_message_bytes = max_message_bytes
        self.max_batch_size = max_batch_size

    def Insert(self, request_iterator, context):
        capped = not caller_may(context, "sample")  # upload-only clients may not outrank the learner's priorities
        if self.replay.ring is None:
            for request in request_iterator:
                yield _ack(request.chunk, self.replay.start_insert(request.chunk, capped).finish(context.is_active))
        else:
            yield from self._insert_pipelined(request_iterator, context, capped)

    def _insert_pipelined(self, request_iterator, context, capped: bool):
        """With a ring, the writes of the next chunks of a stream overlap with
        the wait for the current one; acks still go out in order, each only
        after its chunk is stored at the consistency level."""
        started: queue.Queue = queue.Queue(maxsize=_PIPELINE_DEPTH)

        def put(entry) -> bool:
            while context.is_active():
                try:
                    started.put(entry, timeout=0.5)
                    return True
                except queue.Full:
                    pass
            return False

        def read() -> None:
            try:
                for request in request_iterator:
                    pending = self.replay.start_insert(request.chunk, capped)
                    if not put((request.chunk, pending)):
                        pending.abandon()
                        return
            except RlringsError as error:  # bad input: ends the stream after the chunks before it
                put(error)
            except Exception:  # the caller went away
                pass
            put(None)

        reader = threading.Thread(target=read, name="insert-reader", daemon=True)
        reader.start()
        try:
            while (entry := started.get()) is not None:
                if isinstance(entry, RlringsError):
                    raise entry
                chunk, pending = entry
                yield _ack(chunk, pending.finish(context.is_active))
        finally:  # the stream ended early: chunks started but never finished give their keys up
            reader.join(timeout=1.0)
            while True:
                try:
                    entry = started.get_nowait()
                except queue.Empty:
                    break
                if isinstance(entry, tuple):
                    entry[1].abandon()

    def Sample(self, request_iterator, context):
        """Draws a batch only against a credit the client granted (see the proto)."""
        request = _next_request(request_iterator)
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
        while request.num_batches == 0 or sent < request.num_batches:
            while credits == 0:  # wait for the client to take what it has
                grant = _next_request(request_iterator)
                if grant is None:  # the client ended its side with nothing more granted
                    return
                credits += grant.credits
                version = grant.current_policy_version or version
                beta = _checked_beta(grant.importance_sampling_exponent) if grant.importance_sampling_exponent else beta
            batch = self.replay.sample(
                request.table, request.batch_size, request.timeout_seconds or None, beta, context.is_active, version
            )
            credits -= 1
            yield from _pieces(batch, per_message)
            sent += 1

    def UpdatePriorities(self, request, context):
        updated, missing = self.replay.update_priorities(request.table, list(request.keys), list(request.priorities))
        return replay_pb2.UpdatePrioritiesResponse(updated=updated, missing=missing)

    def Info(self, request, context):
        names = list(request.tables) or list(self.replay.tables)
        return replay_pb2.InfoResponse(tables=[table_info(self.replay.table(name)) for name in names])

    def Checkpoint(self, request, context):
        result = self.replay.checkpoint()
        return replay_pb2.CheckpointResponse(path=str(result.path), items=result.items, seconds=result.seconds)


def _next_request(requests):
    """The client's next message; None once it has ended its side or gone away."""
    try:
        return next(requests, None)
    except grpc.RpcError:  # cancelled
        return None


def _checked_beta(beta: float) -> float:
    if not 0.0 <= beta <= 1.0:
        raise InvalidArgumentError(f"importance_sampling_exponent: must be in [0, 1], got {beta}")
    return beta


def _ack(chunk, stored: tuple[np.ndarray, bool]) -> replay_pb2.InsertResponse:
    keys, duplicate = stored
    return replay_pb2.InsertResponse(
        writer_id=chunk.writer_id, sequence=chunk.sequence, keys=keys.tolist(), duplicate=duplicate
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
