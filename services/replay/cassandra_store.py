"""Replay's durable store: every chunk is written to a Cassandra ring before it
is acknowledged, and a restarted shard rebuilds its tables from the ring.

Three CQL tables in the configured keyspace:

- ``segments``: one row per run of consecutive items of one chunk, at most
  ``segment_bytes`` (a larger chunk becomes several rows). The partition key is
  ``(table_name, shard, window, part)``: a *window* is a span of wall time, and
  a window rolls over to a new *part* after ``partition_bytes``, so partitions
  stay well under Cassandra's comfortable 100 MB. Rows expire by TTL and the
  table compacts with TimeWindowCompactionStrategy, so old experience leaves by
  whole SSTables, never through row-by-row deletes and their tombstones.
- ``buckets``: the (window, part) partitions each (table, shard) has written,
  registered before the first row of a partition is acknowledged, so a rebuild
  can find every row.
- ``table_state``: per (table, shard), the signature, counters, the oldest key
  still in memory and the writers' last sequences, saved every few seconds.

Shards write only partitions carrying their own name, so several share a ring
without colliding. Writes are prepared statements at an explicit consistency
level, run concurrently with ``execute_async``. Every statement is idempotent (an
upsert by key, or a read), so the driver's own retry policy (:class:`RingRetryPolicy`) retries
what a node reports (a replica's timeout, too few live replicas, an overloaded or
broken connection) on the spot; what the driver cannot retry (its client-side
timeout, no host answering) is tried again after a :class:`~rlrings.rpc.backoff.Backoff`
delay. A write that still fails is reported to the writer, never acknowledged.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from cassandra.policies import RetryPolicy

from rlrings.core.errors import ConfigError, UnavailableError
from rlrings.rpc import codec
from rlrings.rpc.backoff import Backoff
from rlrings.rpc.signature import Signature
from rlrings.services.replay.config import CassandraConfig
from rlrings.services.replay.table import Bookkeeping, TableState
from rlrings.v1 import tensor_pb2

log = logging.getLogger(__name__)

# Keys per partition of the priorities table.
_PRIORITY_BLOCK = 1 << 16

_COUNTERS = ("next_key", "inserts", "samples", "inserted_items", "sampled_items", "evicted_items", "stale_items")


@dataclass(frozen=True)
class Segment:
    """Where a run of items lives in the ring: its partition and its keys."""

    window: int
    part: int
    first_key: int
    items: int

    @property
    def end_key(self) -> int:
        return self.first_key + self.items


@dataclass
class Rebuilt:
    """What a shard finds of one table in the ring at start."""

    state: TableState | None
    """Items for memory (the newest that fit), counters and writer sequences."""
    older: list[Segment]
    """Rows beyond memory (older than what was loaded), oldest first."""


@dataclass
class Fetched:
    """Items read back from the ring, keys ascending."""

    keys: np.ndarray
    columns: dict[str, np.ndarray]
    priorities: np.ndarray
    policy_versions: np.ndarray


class _Partitions:
    """The partition a table's next rows go to: the current time window, and
    within it a new part whenever the current one is full."""

    def __init__(self, window_seconds: int, partition_bytes: int):
        self.window_seconds = window_seconds
        self.partition_bytes = partition_bytes
        self.window = -1
        self.part = 0
        self.bytes = 0

    def place(self, size: int, now: float) -> tuple[int, int, bool]:
        """(window, part, whether this partition is new) for a row of ``size`` bytes."""
        window = int(now // self.window_seconds)
        new = False
        if window != self.window:
            self.window, self.part, self.bytes, new = window, 0, 0, True
        elif self.bytes + size > self.partition_bytes and self.bytes:
            self.part, self.bytes, new = self.part + 1, 0, True
        self.bytes += size
        return self.window, self.part, new


def _signature_json(signature: Signature, sequence_length: int) -> str:
    columns = {c.name: {"dtype": c.dtype.name, "shape": list(c.shape)} for c in signature.values()}
    return json.dumps({"columns": columns, "sequence_length": sequence_length}, sort_keys=True)


class CassandraStore:
    """A replay shard's view of the ring. Thread-safe."""

    def __init__(self, config: CassandraConfig):
        self.config = config
        self.shard = config.shard
        self._compression = codec.Compression.Value(f"COMPRESSION_{config.compression.upper()}")
        self._cluster = None
        self.session = None
        self._partitions: dict[str, _Partitions] = {}
        self._partition_lock = threading.Lock()
        self._pending = 0
        self._pending_bytes = 0
        self._pending_lock = threading.Condition()
        self.write_seconds = 0.0  # summed over confirmed chunk writes, for the metrics
        self.writes = 0
        self.retry_policy = RingRetryPolicy(config.write_attempts)
        self.client_retries = 0  # tries again after the driver's own timeout or no host answering
        self.priority_failures = 0
        self._pending_priorities = 0
        self.write_failures = 0
        self.written_rows = 0
        self.written_bytes = 0

    @property
    def where(self) -> str:
        points = ", ".join(f"{host}:{self.config.port}" for host in self.config.contact_points)
        return f"Cassandra at {points} (keyspace {self.config.keyspace!r}, shard {self.shard!r})"

    @property
    def pending_writes(self) -> int:
        """Chunks written but not yet confirmed at the consistency level: the store's backlog."""
        return self._pending

    # -- connecting ----------------------------------------------------------

    def connect(self) -> None:
        """One attempt to reach the ring, create the schema and prepare statements.

        Raises:
            UnavailableError: no contact point answered; the message names them.
        """
        from cassandra import ConsistencyLevel
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        config = self.config
        auth = None
        if config.username is not None:
            password = config.password.get_secret_value() if config.password is not None else ""
            auth = PlainTextAuthProvider(username=config.username, password=password)
        profile = ExecutionProfile(
            consistency_level=ConsistencyLevel.name_to_value[config.consistency],
            request_timeout=config.request_timeout_seconds,
            retry_policy=self.retry_policy,
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.datacenter)),
        )
        cluster = Cluster(
            config.contact_points,
            port=config.port,
            auth_provider=auth,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            protocol_version=5,
            # rows are compressed blobs already (see ``compression``): a second LZ4 pass over every
            # frame of the native protocol spends CPU here and on each node for nothing
            compression=False,
            connect_timeout=5,
            control_connection_timeout=5,
        )
        driver_log = logging.getLogger("cassandra.cluster")
        level = driver_log.level
        driver_log.setLevel(logging.CRITICAL)  # its tracebacks of refused connections; ours names them once
        try:
            session = cluster.connect()
            driver_log.setLevel(level)
            self._create_schema(session)
        except NoHostAvailable as error:
            cluster.shutdown()
            reasons = "; ".join(f"{host}: {reason}" for host, reason in error.errors.items()) or str(error)
            raise UnavailableError(f"cannot reach {self.where}: {reasons}") from None
        except Exception:
            cluster.shutdown()
            raise
        finally:
            driver_log.setLevel(level)
        self._cluster, self.session = cluster, session
        self._prepare(session)
        log.info("connected to %s at %s", self.where, config.consistency)

    def _create_schema(self, session) -> None:
        config = self.config
        if config.replication_strategy == "SimpleStrategy":
            replication = {"class": "SimpleStrategy", "replication_factor": config.replication_factor}
        else:
            replication = {"class": "NetworkTopologyStrategy", config.datacenter: config.replication_factor}
        ks = config.keyspace
        replication_cql = json.dumps(replication).replace('"', "'")
        session.execute(f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication_cql}")
        # TWCS wants a few dozen windows over the data's lifetime.
        lifetime = config.ttl_seconds or 30 * 24 * 3600
        compaction_minutes = max(1, lifetime // 24 // 60)
        ttl = config.ttl_seconds
        session.execute(
            f"""CREATE TABLE IF NOT EXISTS {ks}.segments (
                table_name text, shard text, window bigint, part int, first_key bigint,
                items int, chunk_key bigint, writer_id text, sequence bigint, policy_version bigint,
                priorities blob, columns blob,
                PRIMARY KEY ((table_name, shard, window, part), first_key))
            WITH compaction = {{'class': 'TimeWindowCompactionStrategy',
                                'compaction_window_unit': 'MINUTES', 'compaction_window_size': {compaction_minutes}}}
            AND default_time_to_live = {ttl} AND gc_grace_seconds = 10800"""
        )
        session.execute(
            f"""CREATE TABLE IF NOT EXISTS {ks}.buckets (
                table_name text, shard text, window bigint, part int,
                PRIMARY KEY ((table_name, shard), window, part))
            WITH default_time_to_live = {ttl + config.window_seconds if ttl else 0}"""
        )
        session.execute(  # overwritten in place, so not TWCS; small rows
            f"""CREATE TABLE IF NOT EXISTS {ks}.priorities (
                table_name text, shard text, block bigint, key bigint, priority double,
                PRIMARY KEY ((table_name, shard, block), key))
            WITH default_time_to_live = {ttl}"""
        )
        session.execute(
            f"""CREATE TABLE IF NOT EXISTS {ks}.table_state (
                table_name text, shard text, signature text, oldest_key bigint,
                counters map<text, bigint>, writer_sequences map<text, bigint>, unplaced map<bigint, bigint>,
                saved_at timestamp,
                PRIMARY KEY ((table_name, shard)))"""
        )
        session.cluster.control_connection.wait_for_schema_agreement(wait_time=30)
        session.cluster.refresh_table_metadata(ks, "table_state")
        if "unplaced" not in session.cluster.metadata.keyspaces[ks].tables["table_state"].columns:
            # a keyspace made before the state kept reservations in flight
            from cassandra import InvalidRequest

            try:
                session.execute(f"ALTER TABLE {ks}.table_state ADD unplaced map<bigint, bigint>")
            except InvalidRequest as error:  # another shard starting beside this one added it first
                if "unplaced" not in str(error):
                    raise
            session.cluster.control_connection.wait_for_schema_agreement(wait_time=30)

    def _prepare(self, session) -> None:
        """Prepares every statement, each marked idempotent (each is an upsert by key or a read), so
        that the driver may retry it on another node."""
        ks = self.config.keyspace
        self._insert_segment = session.prepare(
            f"INSERT INTO {ks}.segments (table_name, shard, window, part, first_key, items, chunk_key, writer_id, "
            "sequence, policy_version, priorities, columns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
        )
        self._insert_bucket = session.prepare(
            f"INSERT INTO {ks}.buckets (table_name, shard, window, part) VALUES (?, ?, ?, ?)"
        )
        self._select_buckets = session.prepare(
            f"SELECT window, part FROM {ks}.buckets WHERE table_name = ? AND shard = ?"
        )
        self._select_index = session.prepare(
            f"SELECT first_key, items, chunk_key, writer_id, sequence FROM {ks}.segments "
            "WHERE table_name = ? AND shard = ? AND window = ? AND part = ?"
        )
        self._select_rows = session.prepare(
            f"SELECT first_key, items, policy_version, priorities, columns FROM {ks}.segments "
            "WHERE table_name = ? AND shard = ? AND window = ? AND part = ? AND first_key >= ? AND first_key < ?"
        )
        self._upsert_priority = session.prepare(
            f"INSERT INTO {ks}.priorities (table_name, shard, block, key, priority) VALUES (?, ?, ?, ?, ?)"
        )
        self._select_priorities = session.prepare(
            f"SELECT key, priority FROM {ks}.priorities WHERE table_name = ? AND shard = ? AND block = ?"
        )
        self._select_state = session.prepare(
            f"SELECT signature, oldest_key, counters, writer_sequences, unplaced FROM {ks}.table_state "
            "WHERE table_name = ? AND shard = ?"
        )
        self._upsert_state = session.prepare(
            f"INSERT INTO {ks}.table_state (table_name, shard, signature, oldest_key, counters, writer_sequences, "
            "unplaced, saved_at) VALUES (?, ?, ?, ?, ?, ?, ?, toTimestamp(now()))"
        )
        # a page of rows is a few MB, whatever the partition holds (a node reads a page into its heap)
        self._select_rows.fetch_size = max(1, (4 << 20) // self.config.segment_bytes)
        self._select_index.fetch_size = 5000
        for statement in (
            self._insert_segment, self._insert_bucket, self._select_buckets, self._select_index, self._select_rows,
            self._upsert_priority, self._select_priorities, self._select_state, self._upsert_state,
        ):  # fmt: skip
            statement.is_idempotent = True  # the same row with the same values, or a read: safe to send again

    def close(self) -> None:
        """Lets writes under way finish (up to 10 s), then disconnects."""
        with self._pending_lock:
            self._pending_lock.wait_for(lambda: not self._pending and not self._pending_priorities, timeout=10)
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = self.session = None

    # -- writing -------------------------------------------------------------

    def write(
        self,
        table: str,
        keys: np.ndarray,
        columns: Mapping[str, np.ndarray],
        encoded: Mapping[str, tensor_pb2.Tensor] | None,
        priorities: np.ndarray,
        policy_version: int,
        writer_id: str,
        sequence: int,
    ) -> tuple[Future, list[Segment]]:
        """Starts writing one chunk's items. Returns a future that resolves once
        every row is stored at the consistency level (or fails with
        UnavailableError), and the rows being written.

        ``columns`` hold one row per item (``items x sequence_length x shape``);
        ``encoded`` are the chunk's tensors as they arrived, stored as they are
        when the chunk fits in one row.
        """
        n = len(keys)
        if (
            encoded is not None
            and self._compression
            and any(tensor.compression == codec.Compression.COMPRESSION_NONE for tensor in encoded.values())
        ):
            encoded = None  # compress here
        item_bytes = sum(array[:1].nbytes for array in columns.values()) if n else 0
        per_row = max(1, self.config.segment_bytes // max(1, item_bytes))
        first = int(keys[0])
        rows, segments = [], []
        now = time.time()
        for start in range(0, n, per_row):
            stop = min(n, start + per_row)
            if encoded is not None and start == 0 and stop == n:
                blob = tensor_pb2.Chunk(columns=encoded).SerializeToString()
            else:
                tensors = {
                    name: codec.encode(np.ascontiguousarray(a[start:stop]), self._compression)
                    for name, a in columns.items()
                }
                blob = tensor_pb2.Chunk(columns=tensors).SerializeToString()
            with self._partition_lock:
                partitions = self._partitions.setdefault(
                    table, _Partitions(self.config.window_seconds, self.config.partition_bytes)
                )
                window, part, new = partitions.place(len(blob), now)
            if new:
                self._register(table, window, part)
            segments.append(Segment(window, part, first + start, stop - start))
            prio = np.ascontiguousarray(priorities[start:stop], dtype="<f8").tobytes()
            rows.append(
                (
                    table, self.shard, window, part, first + start, stop - start, first, writer_id, sequence,
                    policy_version, prio, blob, self.config.ttl_seconds,
                )
            )  # fmt: skip
        return self._execute_all(rows, f"table {table!r} chunk {sequence} of writer {writer_id or '-'}"), segments

    def _register(self, table: str, window: int, part: int) -> None:
        """Records a new partition before any of its rows is acknowledged."""
        self._with_retries(lambda: self.session.execute(self._insert_bucket, (table, self.shard, window, part)))

    def _execute_all(self, rows: list[tuple], what: str) -> Future:
        result: Future = Future()
        left = [len(rows)]
        lock = threading.Lock()
        start = time.monotonic()
        size = sum(len(row[11]) for row in rows)
        with self._pending_lock:  # backpressure: wait while too much is on its way to the ring
            self._pending_lock.wait_for(
                lambda: self._pending_bytes + size <= self.config.max_pending_bytes or not self._pending
            )
            self._pending += 1
            self._pending_bytes += size

        def finish(error: BaseException | None) -> None:
            with self._pending_lock:
                self._pending -= 1
                self._pending_bytes -= size
                self._pending_lock.notify_all()
            if error is None:
                self.write_seconds += time.monotonic() - start
                self.writes += 1
                self.written_rows += len(rows)
                self.written_bytes += size
                result.set_result(None)
            else:
                self.write_failures += 1
                result.set_exception(error)

        def attempt(row: tuple, tries: int) -> None:
            try:
                future = self.session.execute_async(self._insert_segment, row)
            except Exception as error:  # the session is gone (shutting down)
                failed(row, tries, error)
                return
            future.add_callbacks(lambda _: succeeded(), lambda error: failed(row, tries, error))

        def succeeded() -> None:
            with lock:
                left[0] -= 1
                done = left[0] == 0
            if done:
                finish(None)

        def failed(row: tuple, tries: int, error: BaseException) -> None:
            if _retryable(error) and tries < self.config.write_attempts:
                self.client_retries += 1
                timer = threading.Timer(_retry_delay(tries), attempt, (row, tries + 1))
                timer.daemon = True
                timer.start()
                return
            with lock:
                if left[0] <= 0:
                    return
                left[0] = -1  # report once
            finish(
                UnavailableError(
                    f"{self.where} did not store {what} at {self.config.consistency} after {tries} attempts "
                    f"({type(error).__name__}: {error}); it was not acknowledged, send it again"
                )
            )

        for row in rows:
            attempt(row, 1)
        return result

    def _with_retries(self, call):
        for tries in range(1, self.config.write_attempts + 1):
            try:
                return call()
            except Exception as error:
                if not _retryable(error) or tries == self.config.write_attempts:
                    raise UnavailableError(f"{self.where}: {type(error).__name__}: {error}") from None
                self.client_retries += 1
                time.sleep(_retry_delay(tries))

    # -- priorities ----------------------------------------------------------------

    def save_priorities(self, table: str, keys: Sequence[int], priorities: Sequence[float]) -> None:
        """Starts storing updated priorities (one single-partition batch per key block) and
        returns at once: an update lost to a crash costs a priority, never an item."""
        from cassandra.query import BatchStatement, BatchType

        blocks: dict[int, BatchStatement] = {}
        for key, priority in zip(keys, priorities):
            block = int(key) // _PRIORITY_BLOCK
            batch = blocks.setdefault(block, BatchStatement(batch_type=BatchType.UNLOGGED))
            batch.add(self._upsert_priority, (table, self.shard, block, int(key), float(priority)))
        for batch in blocks.values():
            with self._pending_lock:
                self._pending_priorities += 1
            self.session.execute_async(batch).add_callbacks(self._priorities_done, self._priorities_done)

    def _priorities_done(self, result) -> None:
        if isinstance(result, BaseException):
            self.priority_failures += 1
            log.warning("storing updated priorities failed (%s); memory has them, a restart would not", result)
        with self._pending_lock:
            self._pending_priorities -= 1
            self._pending_lock.notify_all()

    def _saved_priorities(self, table: str, keys: np.ndarray) -> dict[int, float]:
        from cassandra.concurrent import execute_concurrent_with_args

        if not len(keys):
            return {}
        blocks = range(int(keys.min()) // _PRIORITY_BLOCK, int(keys.max()) // _PRIORITY_BLOCK + 1)
        results = execute_concurrent_with_args(
            self.session, self._select_priorities, [(table, self.shard, b) for b in blocks], concurrency=16,
            raise_on_first_error=True,
        )  # fmt: skip
        return {row.key: row.priority for _, result in results for row in result}

    # -- table state -----------------------------------------------------------

    def save_state(self, table: str, signature: Signature, sequence_length: int, bookkeeping: Bookkeeping) -> None:
        """Saves what a rebuild cannot read from the rows themselves."""
        self._with_retries(
            lambda: self.session.execute(
                self._upsert_state,
                (
                    table, self.shard, _signature_json(signature, sequence_length), bookkeeping.oldest_key,
                    {k: int(v) for k, v in bookkeeping.counters.items()},
                    {k: int(v) for k, v in bookkeeping.writer_sequences.items()},
                    {int(k): int(v) for k, v in bookkeeping.unplaced.items()},
                ),
            )
        )  # fmt: skip

    # -- rebuilding ------------------------------------------------------------

    def rebuild(self, table: str, signature: Signature, sequence_length: int, capacity: int) -> Rebuilt:
        """Reads one table's rows of this shard: the newest ``capacity`` items
        that memory held (or took in after the last saved state) into a state
        to restore, the older rows into a list for sampling beyond memory.

        Raises:
            ConfigError: the ring holds this table with another signature.
        """
        saved = self._with_retries(lambda: self.session.execute(self._select_state, (table, self.shard)).one())
        wanted = _signature_json(signature, sequence_length)
        if saved is not None and saved.signature != wanted:
            raise ConfigError(
                f"tables.{table}.signature: {self.where} holds this table as {saved.signature}, the config asks "
                f"for {wanted}; restore the old signature, or use another table name or keyspace"
            )
        segments, sequences = self._index(table)
        oldest = saved.oldest_key if saved is not None and saved.oldest_key is not None else 0
        live = [s for s in segments if s.end_key > oldest]
        older = [s for s in segments if s.end_key <= oldest]
        # the newest rows that fit in memory
        hot: list[Segment] = []
        items = 0
        for segment in reversed(live):
            if items >= capacity:
                older.append(segment)
                continue
            hot.append(segment)
            items += segment.items
        hot.reverse()
        older.sort(key=lambda s: s.first_key)
        counters = dict(saved.counters or {}) if saved is not None else {}
        next_saved = counters.get("next_key", 1)
        next_key = max([next_saved, *(s.end_key for s in segments)])
        # Rows the saved counters do not include: keys reserved after the save, and the chunks that
        # were on their way into memory when it was taken (reserved before it, placed after it, or
        # never placed but in the ring all the same: what is restored is counted)
        in_flight = sorted((int(k), int(n)) for k, n in ((saved.unplaced or {}) if saved is not None else {}).items())
        starts = [first for first, _ in in_flight]

        def uncounted(segment: Segment) -> bool:
            if segment.first_key >= next_saved:
                return True
            i = bisect.bisect_right(starts, segment.first_key) - 1
            return i >= 0 and segment.first_key < in_flight[i][0] + in_flight[i][1]

        newer = sum(s.items for s in segments if uncounted(s))
        counters = {name: int(counters.get(name, 0)) for name in _COUNTERS}
        counters["next_key"] = next_key
        counters["inserts"] += newer
        counters["inserted_items"] += newer
        writer_sequences = dict(saved.writer_sequences or {}) if saved is not None else {}
        for writer, stored in sequences.items():
            # A writer's chunks are numbered 1, 2, 3, ...; a later chunk may be stored while an
            # earlier one failed and will be sent again. Only an unbroken run counts as stored,
            # so that the resent chunk is taken, not dismissed as a duplicate.
            last = writer_sequences.get(writer, 0)
            while last + 1 in stored:
                last += 1
            writer_sequences[writer] = last
        if not segments and saved is None:
            return Rebuilt(None, [])
        fetched = self.fetch(table, signature, sequence_length, hot)
        keep = fetched.keys >= oldest
        updated = self._saved_priorities(table, fetched.keys[keep])
        if updated:  # priorities set after insertion (UpdatePriorities) win over the inserted ones
            priorities = fetched.priorities.copy()
            for index in np.flatnonzero(keep):
                priorities[index] = updated.get(int(fetched.keys[index]), priorities[index])
            fetched.priorities = priorities
        state = TableState(
            columns={name: array[keep] for name, array in fetched.columns.items()},
            keys=fetched.keys[keep],
            priorities=fetched.priorities[keep],
            times_sampled=np.zeros(int(keep.sum()), np.uint32),
            policy_versions=fetched.policy_versions[keep],
            counters=counters,
            writer_sequences=writer_sequences,
        )
        return Rebuilt(state, older)

    def stored_items(self, table: str) -> int:
        """Items of a table this shard holds in the ring, each chunk counted once."""
        segments, _ = self._index(table)
        return sum(segment.items for segment in segments)

    def _index(self, table: str) -> tuple[list[Segment], dict[str, set[int]]]:
        """Every row of a table in this shard, oldest first, without their data;
        a chunk stored twice (a retried write whose first ack was lost) counts once."""
        from cassandra.concurrent import execute_concurrent_with_args

        buckets = list(self._with_retries(lambda: self.session.execute(self._select_buckets, (table, self.shard))))
        if buckets:  # this process writes on in a fresh part, never into a partition of unknown size
            with self._partition_lock:
                partitions = self._partitions.setdefault(
                    table, _Partitions(self.config.window_seconds, self.config.partition_bytes)
                )
                last = max(buckets, key=lambda b: (b.window, b.part))
                partitions.window, partitions.part, partitions.bytes = last.window, last.part + 1, 0
                self._register(table, partitions.window, partitions.part)
        results = execute_concurrent_with_args(
            self.session,
            self._select_index,
            [(table, self.shard, b.window, b.part) for b in buckets],
            concurrency=16,
            raise_on_first_error=True,
        )
        first_copy: dict[tuple[str, int], int] = {}
        rows = []
        for bucket, (_, result) in zip(buckets, results):
            for row in result:
                rows.append((bucket, row))
                if row.writer_id:
                    copy = (row.writer_id, row.sequence)
                    first_copy[copy] = min(first_copy.get(copy, row.chunk_key), row.chunk_key)
        segments = []
        sequences: dict[str, set[int]] = {}
        for bucket, row in rows:
            if row.writer_id:
                if first_copy[(row.writer_id, row.sequence)] != row.chunk_key:
                    continue
                sequences.setdefault(row.writer_id, set()).add(row.sequence)
            segments.append(Segment(bucket.window, bucket.part, row.first_key, row.items))
        segments.sort(key=lambda s: s.first_key)
        return segments, sequences

    def fetch(self, table: str, signature: Signature, sequence_length: int, segments: Sequence[Segment]) -> Fetched:
        """Reads the items of ``segments`` (one query per partition), keys ascending."""
        from cassandra.concurrent import execute_concurrent_with_args

        by_partition: dict[tuple[int, int], list[Segment]] = {}
        for segment in segments:
            by_partition.setdefault((segment.window, segment.part), []).append(segment)
        wanted = {segment.first_key for segment in segments}
        queries = [
            (table, self.shard, window, part, min(s.first_key for s in group), max(s.first_key for s in group) + 1)
            for (window, part), group in by_partition.items()
        ]
        results = execute_concurrent_with_args(
            self.session, self._select_rows, queries, concurrency=16, raise_on_first_error=True
        )
        keys, priorities, versions = [], [], []
        columns: dict[str, list[np.ndarray]] = {name: [] for name in signature}
        for _, result in results:
            for row in result:
                if row.first_key not in wanted:
                    continue  # a duplicate copy inside the range
                chunk = tensor_pb2.Chunk.FromString(row.columns)
                for name, column in signature.items():
                    array = codec.decode(chunk.columns[name], f"segments[{row.first_key}].columns[{name!r}]")
                    columns[name].append(array.reshape(row.items, sequence_length, *column.shape))
                keys.append(np.arange(row.first_key, row.first_key + row.items, dtype=np.uint64))
                priorities.append(np.frombuffer(row.priorities, dtype="<f8"))
                versions.append(np.full(row.items, row.policy_version, dtype=np.int64))
        order = np.argsort(np.concatenate(keys), kind="stable") if keys else np.empty(0, np.int64)
        return Fetched(
            keys=np.concatenate(keys)[order] if keys else np.empty(0, np.uint64),
            columns={
                name: np.concatenate(parts)[order]
                if parts
                else np.empty((0, sequence_length, *signature[name].shape), signature[name].dtype)
                for name, parts in columns.items()
            },
            priorities=np.concatenate(priorities)[order] if keys else np.empty(0),
            policy_versions=np.concatenate(versions)[order] if keys else np.empty(0, np.int64),
        )


_RETRIES = Backoff(initial=0.1, maximum=2.0)


def _retry_delay(tries: int) -> float:
    """Seconds before the next try of a request that failed ``tries`` times: 0.1, 0.2, ... up to 2."""
    return _RETRIES.step(tries)


def _retryable(error: BaseException) -> bool:
    """What the driver gives up on without asking its retry policy: its own client-side timeout and
    no host answering. (What a node reports went through :class:`RingRetryPolicy` already.)"""
    from cassandra import OperationTimedOut
    from cassandra.cluster import NoHostAvailable

    return isinstance(error, (OperationTimedOut, NoHostAvailable))


class RingRetryPolicy(RetryPolicy):
    """The driver's retry policy for the store's statements, all idempotent: a replica's timeout is
    retried on the same coordinator, too few live replicas or a failed connection on the next node,
    each up to ``attempts`` tries in all (the driver's default retries only batch-log writes, and
    each kind once). ``retries`` counts the retries for the metrics."""

    def __init__(self, attempts: int):
        self.attempts = attempts
        self._retries = 0
        self._lock = threading.Lock()

    @property
    def retries(self) -> int:
        return self._retries

    def _decide(self, retry_num: int, decision):
        if retry_num + 1 >= self.attempts:
            return self.RETHROW, None
        with self._lock:
            self._retries += 1
        return decision, None  # None: at the same consistency level

    def on_read_timeout(self, query, consistency, required_responses, received_responses, data_retrieved, retry_num):
        return self._decide(retry_num, self.RETRY)

    def on_write_timeout(self, query, consistency, write_type, required_responses, received_responses, retry_num):
        return self._decide(retry_num, self.RETRY)

    def on_unavailable(self, query, consistency, required_replicas, alive_replicas, retry_num):
        return self._decide(retry_num, self.RETRY_NEXT_HOST)

    def on_request_error(self, query, consistency, error, retry_num):
        return self._decide(retry_num, self.RETRY_NEXT_HOST)
