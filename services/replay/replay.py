"""The replay domain object: named tables plus their store, without gRPC.

Two kinds of store: the embedded one snapshots memory to a local directory
now and then; the Cassandra ring takes every chunk before it is acknowledged
(:mod:`rlrings.services.replay.cassandra_store`), and the tables are rebuilt from it
when the shard starts.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlrings.core.errors import (
    ConfigError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from rlrings.rpc import codec
from rlrings.rpc.backoff import Backoff
from rlrings.rpc.security import Caller
from rlrings.services.replay.ack_log import AckLog, Sampled
from rlrings.services.replay.cassandra_store import CassandraStore, Segment
from rlrings.services.replay.config import AckLogConfig, TableConfig
from rlrings.services.replay.older_items import OlderItems
from rlrings.services.replay.store import SnapshotStore
from rlrings.services.replay.table import SampledBatch, Table, WouldBlock
from rlrings.v1 import tensor_pb2

log = logging.getLogger(__name__)
MAX_WRITER_ID_LENGTH = 128


@dataclass(frozen=True)
class CheckpointResult:
    path: Path | str
    items: int
    seconds: float


@dataclass
class PendingInsert:
    """A chunk on its way into a table: written to the ring (``written``), then
    placed in memory by :meth:`finish` under the keys it was written with."""

    table: Table
    columns: dict[str, np.ndarray]
    priorities: np.ndarray  # one per item, as Table.check returned them
    policy_version: int
    writer_id: str
    sequence: int
    keys: np.ndarray | None = None
    written: Future | None = None
    older: OlderItems | None = None
    segments: list[Segment] = field(default_factory=list)
    chunk: tensor_pb2.Chunk | None = None  # as received, with the priorities given: what the ack log keeps
    ack_log: AckLog | None = None

    def finish(self, is_active, wait: bool = True) -> tuple[np.ndarray, bool]:
        """Waits for the ring, then for the rate limiter; returns (keys, duplicate). With
        ``wait`` False it raises :class:`WouldBlock` instead of waiting on the limiter (and
        stays pending: finish it again)."""
        if self.written is None:  # dismissed as a duplicate when it arrived
            return np.empty(0, dtype=np.uint64), True
        try:
            self.written.result()  # raises UnavailableError: not acknowledged
            if self.older is not None:
                for segment in self.segments:
                    self.older.add(segment)
            keys, duplicate = self.table.insert_checked(
                self.columns,
                self.priorities,
                policy_version=self.policy_version,
                writer_id=self.writer_id,
                sequence=self.sequence,
                is_active=is_active,
                keys=self.keys,
                wait=wait,
            )
            if not duplicate:
                self.log(keys)
            return keys, duplicate
        except WouldBlock:
            raise
        except BaseException:
            self.abandon()
            raise

    def log(self, keys: np.ndarray) -> None:
        """Appends the placed chunk to the ack log, if there is one; returns before the chunk is
        acknowledged (or takes the chunk back out of the table and raises)."""
        if self.ack_log is None or not len(keys):
            return
        try:
            self.ack_log.append(int(keys[0]), self.chunk)
        except BaseException:  # not acknowledged, so not kept: a retry must not pass for a duplicate
            self.table.withdraw(keys, self.writer_id)
            raise

    def abandon(self) -> None:
        """Gives up the keys of a chunk that will not be placed in memory."""
        if self.keys is not None:
            self.table.release_keys(self.keys)


class Replay:
    """Tables by name; restores from and snapshots to an optional store."""

    def __init__(
        self,
        tables: list[TableConfig],
        store: SnapshotStore | None = None,
        snapshot_interval_seconds: float = 0.0,
        max_item_bytes: int | None = None,
        ring: CassandraStore | None = None,
        max_chunk_bytes: int = 64 * 1024 * 1024,
        ack_log: AckLog | None = None,
        ack_log_config: AckLogConfig | None = None,
    ):
        self.tables = {config.name: Table(config) for config in tables}
        if max_item_bytes is not None:
            for table in self.tables.values():
                if table.item_bytes > max_item_bytes:
                    raise ConfigError(
                        f"tables.{table.name}: one item is {table.item_bytes} bytes, more than fits in a message "
                        f"({max_item_bytes}); shorten sequence_length or raise max_message_bytes"
                    )
        self.store = store
        self.ring = ring
        self.max_chunk_bytes = max_chunk_bytes
        self.ack_log = ack_log
        self._ack_log_config = ack_log_config or AckLogConfig()
        self.older: dict[str, OlderItems] = {}
        self.ready = threading.Event()
        self._status = "starting"
        self._checkpoint_lock = threading.Lock()
        self._stop = threading.Event()
        self._snapshotter: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._rng = np.random.default_rng()
        if ring is None:
            self.ready.set()
        if store is not None:
            self._restore(store)
            if snapshot_interval_seconds > 0:
                self._snapshotter = threading.Thread(
                    target=self._snapshot_every, args=(snapshot_interval_seconds,), name="replay-snapshots", daemon=True
                )
                self._snapshotter.start()
            if ack_log is not None:
                thread = threading.Thread(target=self._tend_ack_log, name="replay-ack-log", daemon=True)
                thread.start()
                self._threads.append(thread)

    def table(self, name: str) -> Table:
        if not self.ready.is_set():
            raise UnavailableError(f"replay is not serving yet: {self._status}")
        try:
            return self.tables[name]
        except KeyError:
            raise NotFoundError(f"table {name!r} not found; this server has {sorted(self.tables)}") from None

    # -- inserting and sampling --------------------------------------------------

    def start_insert(self, chunk: tensor_pb2.Chunk, caller: Caller | None = None) -> PendingInsert:
        """Checks a chunk and, with a ring, starts writing it there under fresh keys. A ``caller``
        (a token, :func:`rlrings.rpc.security.current_caller`) is charged the chunk's decoded bytes,
        has its writer id kept under its own name, and without the sample scope gives priorities
        only up to the table's largest (see :meth:`Table.check`).

        Raises:
            InvalidArgumentError: the chunk does not fit its table; nothing is written.
            ResourceExhaustedError: the caller is above its insert rate; nothing is written.
        """
        table = self.table(chunk.table)
        if len(chunk.writer_id) > MAX_WRITER_ID_LENGTH:
            raise InvalidArgumentError(
                f"chunk.writer_id: {len(chunk.writer_id)} characters, at most {MAX_WRITER_ID_LENGTH} "
                "(one id per writer session, such as a UUID)"
            )
        columns = table.signature.decode(chunk.columns, self.max_chunk_bytes)
        decoded = dict(columns)
        n, priorities = table.check(columns, chunk.priorities, capped=caller is not None and not caller.may("sample"))
        for name, array in columns.items():
            if array is not decoded[name]:  # clipped to its bounds: the ring and the ack log keep what is stored
                chunk.columns[name].CopyFrom(codec.encode(array, chunk.columns[name].compression))
        if caller is not None:
            caller.charge_insert(sum(array.nbytes for array in columns.values()))
            if chunk.writer_id:  # (what the table, the ring and the ack log keep; acks echo the caller's own)
                chunk.writer_id = f"{caller.name}/{chunk.writer_id}"
        pending = PendingInsert(table, columns, priorities, chunk.policy_version, chunk.writer_id, chunk.sequence)
        if self.ring is None:
            pending.written = _done()
            if self.ack_log is not None:
                del chunk.priorities[:]  # logged with the priorities the items got
                chunk.priorities.extend(priorities.tolist())
                pending.chunk, pending.ack_log = chunk, self.ack_log
            return pending
        if table.is_duplicate(chunk.writer_id, chunk.sequence):
            return pending  # stored before; its ack was lost
        pending.keys = table.reserve_keys(n)
        items = {
            name: array.reshape(n, table.sequence_length, *table.signature[name].shape)
            for name, array in columns.items()
        }
        pending.written, pending.segments = self.ring.write(
            table.name, pending.keys, items, chunk.columns, priorities,
            chunk.policy_version, chunk.writer_id, chunk.sequence,
        )  # fmt: skip
        pending.older = self.older.get(table.name)
        return pending

    def sample(
        self, name: str, batch_size: int, timeout: float | None, beta: float, is_active, policy_version: int = 0,
        wait: bool = True,
    ) -> SampledBatch:  # fmt: skip
        """A batch from memory, with a share from the ring's older rows where the table reaches them
        (``wait`` False: :class:`WouldBlock` rather than waiting for items or the rate limiter)."""
        table = self.table(name)
        batch = table.sample(batch_size, timeout, beta, is_active, policy_version, wait)
        older = self.older.get(name)
        return batch if older is None else older.mix(batch, self._rng)

    def update_priorities(self, name: str, keys: list[int], priorities: list[float]) -> tuple[int, int]:
        """Sets priorities by key (and, with a ring, stores them there); returns (updated, missing)."""
        updated, missing = self.table(name).update_priorities(keys, priorities)
        if self.ring is not None and updated:
            self.ring.save_priorities(name, keys, priorities)
        return updated, missing

    # -- the ring ------------------------------------------------------------------

    def serve_ring(self, on_ready=lambda: None) -> None:
        """Connects to the ring (retrying), rebuilds every table from it, calls
        ``on_ready``, then saves the tables' state periodically until closed.

        Raises:
            UnavailableError: the ring stayed unreachable for ``connect_timeout_seconds``.
        """
        ring = self.ring
        config = ring.config
        policy = "retrying with backoff from 1s to 30s " + (
            f"for up to {config.connect_timeout_seconds:g}s" if config.connect_timeout_seconds else "until it answers"
        )
        start, backoff = time.monotonic(), Backoff(initial=1.0, maximum=30.0)
        while not self._stop.is_set():
            try:
                ring.connect()
                break
            except UnavailableError as error:
                attempt = backoff.failures + 1
                self._status = f"{error} (attempt {attempt}; {policy})"
                log.error("%s", self._status)
                late = time.monotonic() - start + backoff.step(attempt) > config.connect_timeout_seconds
                if config.connect_timeout_seconds and late:
                    raise UnavailableError(f"gave up after {attempt} attempts: {error} ({policy})") from None
                backoff.wait(self._stop)
        if self._stop.is_set():
            return
        self._status = f"rebuilding the tables from {ring.where}"
        for table in self.tables.values():
            backoff = Backoff(initial=1.0, maximum=30.0)
            while not self._stop.is_set():
                try:
                    self._rebuild(table)
                    break
                except ConfigError:
                    raise
                except Exception as error:  # a read timed out or a replica failed: read again
                    self._status = f"rebuilding table {table.name!r} from {ring.where} failed ({error}); retrying"
                    log.warning("%s", self._status)
                    backoff.wait(self._stop)
        if self._stop.is_set():
            return
        self.ready.set()
        self._status = "serving"
        on_ready()
        while not self._stop.wait(config.state_interval_seconds):
            try:
                self._save_ring_state()
            except Exception as error:  # the next round tries again
                log.warning("saving table state to the ring failed: %s", error)

    def _rebuild(self, table: Table) -> None:
        start = time.monotonic()
        config = self.ring.config
        rebuilt = self.ring.rebuild(table.name, table.signature, table.sequence_length, table.capacity)
        if rebuilt.state is not None:
            table.restore(rebuilt.state)
        if (
            config.sample_beyond_memory
            and table.config.selector == "uniform"
            and table.config.remover == "fifo"
            and (table.config.max_times_sampled == 0)
        ):
            older = OlderItems(self.ring, table, rebuilt.older, config.reservoir_items)
            self.older[table.name] = older
            thread = threading.Thread(target=older.refresh, args=(self._stop,), name=f"older-{table.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "table %r rebuilt from %s in %.2fs: %d items in memory, %d beyond it",
            table.name, self.ring.where, time.monotonic() - start, table.size, sum(s.items for s in rebuilt.older),
        )  # fmt: skip

    def _save_ring_state(self) -> None:
        for table in self.tables.values():
            self.ring.save_state(table.name, table.signature, table.sequence_length, table.bookkeeping())

    def checkpoint(self) -> CheckpointResult:
        """Writes a snapshot of every table now (with a ring: saves their state there)."""
        if self.ring is not None:
            start = time.monotonic()
            self.table(next(iter(self.tables)))  # refuses while not serving
            self._save_ring_state()
            items = sum(table.size for table in self.tables.values())
            return CheckpointResult(self.ring.where, items, time.monotonic() - start)
        if self.store is None:
            raise FailedPreconditionError("the memory store keeps no snapshots; run with store=embedded")
        with self._checkpoint_lock:
            start = time.monotonic()
            # A new log generation first: every record of the older ones is then in the copies below.
            log_from = self.ack_log.rotate() if self.ack_log is not None else None
            states = {name: (table.state(), table.signature) for name, table in self.tables.items()}
            path = self.store.save(states, log_from)
            if self.ack_log is not None:
                self.ack_log.truncate_before(log_from)
            items = sum(len(state.keys) for state, _ in states.values())
            seconds = time.monotonic() - start
        log.info("snapshot of %d items written to %s in %.2fs", items, path, seconds)
        return CheckpointResult(path, items, seconds)

    def release_waiters(self) -> None:
        """Ends every blocked or new insert and sample with UNAVAILABLE."""
        for table in self.tables.values():
            table.close()

    def close(self) -> None:
        """Releases waiters, stops periodic snapshots and writes a last one
        (with a ring: saves the tables' state there and disconnects)."""
        self._stop.set()
        self.release_waiters()
        for older in self.older.values():
            older.wake()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._snapshotter is not None:
            self._snapshotter.join()
        if self.store is not None:
            self.checkpoint()
        if self.ack_log is not None:
            self.ack_log.close()
        if self.ring is not None:
            if self.ready.is_set() and self.ring.session is not None:
                try:
                    self._save_ring_state()
                except UnavailableError as error:
                    log.warning("could not save the tables' state at shutdown: %s", error)
            self.ring.close()

    def _restore(self, store: SnapshotStore) -> None:
        states = store.load({name: table.signature for name, table in self.tables.items()})
        for name, state in states.items():
            dropped = self.tables[name].restore(state)
            log.info("table %r restored with %d items from %s", name, self.tables[name].size, store.current)
            if dropped:
                log.warning("table %r: max_size is below the snapshot; dropped the %d oldest items", name, dropped)
        if self.ack_log is not None:
            self._read_ack_log(store.log_from())

    def _read_ack_log(self, log_from: int) -> None:
        """Places the chunks acknowledged after the snapshot was taken, as they were acknowledged."""
        start, restored, unknown = time.monotonic(), dict.fromkeys(self.tables, 0), set()
        for record in self.ack_log.records(log_from):
            if isinstance(record, Sampled):
                if record.table in self.tables:
                    self.tables[record.table].restore_sampled(record.keys, record.samples, record.stale)
                continue
            first_key, chunk = record
            table = self.tables.get(chunk.table)
            if table is None:
                unknown.add(chunk.table)
                continue
            columns = table.signature.decode(chunk.columns, self.max_chunk_bytes, "ack log chunk.columns")
            priorities = np.asarray(chunk.priorities, dtype=np.float64)
            if table.restore_logged(columns, priorities, first_key, chunk.policy_version, chunk.writer_id,
                                    chunk.sequence):  # fmt: skip
                restored[table.name] += len(priorities)
        for table in self.tables.values():
            table.settle_restored_queue()
            if table.config.max_times_sampled:  # from now on what sampling removes is logged too
                table.on_sampled_away = self.ack_log.append_sampled
        if unknown:
            log.warning("the acknowledgement log has chunks of tables no longer configured: %s", sorted(unknown))
        if any(restored.values()):
            log.info(
                "acknowledgement log read in %.2fs: items restored by table %s", time.monotonic() - start, restored
            )

    def _tend_ack_log(self) -> None:
        """Syncs the log on its timer and snapshots early when it has grown past its limit."""
        config = self._ack_log_config
        while not self._stop.wait(config.sync_interval_seconds):
            try:
                self.ack_log.sync()
                if self.ack_log.bytes_since_rotation > config.max_bytes:
                    self.checkpoint()
            except Exception:  # the next round tries again
                log.exception("syncing the acknowledgement log or the snapshot it asked for failed")

    def _snapshot_every(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.checkpoint()
            except Exception:  # a failed periodic snapshot must not end the service
                log.exception("periodic snapshot failed; the next one will try again")


def _done() -> Future:
    future: Future = Future()
    future.set_result(None)
    return future
