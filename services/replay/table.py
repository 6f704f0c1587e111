"""A replay table: preallocated per-column storage, a selector, a remover and
a rate limiter, behind one lock.

An *item* is ``sequence_length`` consecutive steps; a chunk of T steps becomes
``T / sequence_length`` items. Storage for ``max_size`` items is allocated at
start, one array per column (the operating system maps pages in as they are
first written). Inserts and samples wait on the table's condition variable
while the rate limiter holds them back: they sleep, they never spin.

A table whose items leave only by being sampled (a FIFO or LIFO selector with
``max_times_sampled``: Reverb's queue and stack) never evicts: a full table
holds inserts back until samples make room, and a batch waits for as many
distinct items as it asks for, so nothing is lost unseen and nothing repeats.
Such a table may also drop items whose policy is older than the sampler's by
more than ``max_policy_lag`` versions (counted as ``stale_items``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rlrings.core.errors import (
    CancelledError,
    DeadlineExceededError,
    InvalidArgumentError,
    UnavailableError,
)
from rlrings.services.replay.config import TableConfig
from rlrings.services.replay.rate_limiter import RateLimiter
from rlrings.services.replay.selectors import SELECTORS, Occupancy, PrioritizedSelector

# How often a blocked call wakes to check that its caller is still there.
_LIVENESS_CHECK_SECONDS = 0.5


@dataclass
class SampledBatch:
    """Items drawn together; arrays are copies the caller owns."""

    keys: np.ndarray
    columns: dict[str, np.ndarray]
    probabilities: np.ndarray
    importance_weights: np.ndarray
    times_sampled: np.ndarray
    policy_versions: np.ndarray
    table_size: int


@dataclass
class TableState:
    """Everything a snapshot keeps of a table, items oldest first."""

    columns: dict[str, np.ndarray]
    keys: np.ndarray
    priorities: np.ndarray
    times_sampled: np.ndarray
    policy_versions: np.ndarray
    counters: dict[str, int]
    writer_sequences: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Bookkeeping:
    """A table's counters as a durable store saves them (:meth:`Table.bookkeeping`)."""

    oldest_key: int
    """The oldest key in memory (or reserved for a chunk on its way), else the next key."""
    counters: dict[str, int]
    writer_sequences: dict[str, int]
    unplaced: dict[int, int]
    """First key -> items of the reservations not yet in memory: keys below ``next_key`` whose
    items the counters do not include yet (a rebuild counts what of them the ring holds)."""


class WouldBlock(Exception):
    """Raised by a call told not to wait (``wait=False``) that would have had to; nothing was done.
    Servers first try a call on their event loop this way and hand it to a thread only if it must wait."""


class Table:
    """One replay table. Thread-safe; every public method takes the lock."""

    def __init__(self, config: TableConfig, seed: int | None = None):
        self.config = config
        self.name = config.name
        self.signature = config.build_signature()
        self.sequence_length = config.sequence_length
        self.capacity = config.max_size
        self.item_bytes = self.signature.step_bytes * self.sequence_length
        self._storage = {
            name: np.empty((self.capacity, self.sequence_length, *column.shape), dtype=column.dtype)
            for name, column in self.signature.items()
        }
        self._keys = np.zeros(self.capacity, dtype=np.uint64)
        self._priorities = np.zeros(self.capacity, dtype=np.float64)
        self._times_sampled = np.zeros(self.capacity, dtype=np.uint32)
        self._policy_versions = np.zeros(self.capacity, dtype=np.int64)
        self._free = list(range(self.capacity - 1, -1, -1))  # a stack of free slots
        self._order: OrderedDict[int, int] = OrderedDict()  # key -> slot, oldest first
        self._occupancy = Occupancy(self.capacity)
        selector_cls = SELECTORS[config.selector]
        if selector_cls is PrioritizedSelector:
            self._selector = selector_cls(self.capacity, self._occupancy, self._order, config.priority_exponent)
        else:
            self._selector = selector_cls(self.capacity, self._occupancy, self._order)
        self.limiter = RateLimiter.from_config(config.rate_limiter)
        self.distinct_batches = config.selector in ("fifo", "lifo")
        """Batches are the oldest (newest) items in order, each once: a batch waits until there are enough."""
        self.is_queue = self.distinct_batches and config.max_times_sampled > 0
        """Items leave only by being sampled: inserts wait for room instead of evicting."""
        self._writer_sequences: OrderedDict[str, int] = OrderedDict()  # the least recently written first
        self._unplaced: dict[int, int] = {}  # first key -> items, of reservations not yet in memory
        self._cond = threading.Condition()
        self._rng = np.random.default_rng(seed)
        self._next_key = 1
        self._closed = False
        self.inserted_items = 0
        self.sampled_items = 0
        self.evicted_items = 0
        self.stale_items = 0
        self.on_sampled_away: Callable[[str, np.ndarray, int, int], None] | None = None
        """Called under the lock with (table, keys removed, samples, stale items) after a draw from a
        table whose items leave once sampled, or after stale items are dropped (the ack log)."""
        self._gone: set[int] = set()  # keys a restart found sampled away before their chunk was read back
        self.max_priority = 1.0
        """The largest priority given so far (1.0 at first): what items inserted without one get,
        and the most a writer without the sample scope may give one."""

    @property
    def size(self) -> int:
        return len(self._order)

    # -- inserting ---------------------------------------------------------

    def insert(
        self,
        columns: Mapping[str, np.ndarray],
        priorities: Sequence[float] = (),
        policy_version: int = 0,
        writer_id: str = "",
        sequence: int = 0,
        is_active: Callable[[], bool] = lambda: True,
    ) -> tuple[np.ndarray, bool]:
        """Stores a chunk, waiting while the rate limiter blocks inserts.

        Returns:
            The new items' keys and whether the chunk was a duplicate (a retry
            of a chunk this writer already stored; nothing is stored again).

        Raises:
            InvalidArgumentError: the chunk does not fit the signature or the
                priorities are bad; nothing is stored.
        """
        _, item_priorities = self.check(columns, priorities)
        return self.insert_checked(columns, item_priorities, policy_version, writer_id, sequence, is_active)

    def insert_checked(
        self,
        columns: Mapping[str, np.ndarray],
        item_priorities: np.ndarray,
        policy_version: int = 0,
        writer_id: str = "",
        sequence: int = 0,
        is_active: Callable[[], bool] = lambda: True,
        keys: np.ndarray | None = None,
        wait: bool = True,
    ) -> tuple[np.ndarray, bool]:
        """:meth:`insert` of a chunk that passed :meth:`check` (``item_priorities``
        is what it returned). ``keys`` are the items' keys when taken earlier with
        :meth:`reserve_keys` (a durable store writes the chunk under them before
        it enters memory)."""
        n = len(item_priorities)
        with self._cond:
            if not wait and not self._insert_ready(n) and not self._is_duplicate(writer_id, sequence):
                raise WouldBlock
            try:
                return self._insert_locked(columns, n, item_priorities, policy_version, writer_id, sequence,
                                           is_active, keys)  # fmt: skip
            finally:
                if keys is not None:  # placed, a duplicate of what is, or given up
                    self._unplaced.pop(int(keys[0]), None)

    def _insert_locked(self, columns, n, item_priorities, policy_version, writer_id, sequence, is_active, keys):
        if self._closed:
            raise UnavailableError(f"table {self.name!r} is shutting down")
        if self._is_duplicate(writer_id, sequence):
            return np.empty(0, dtype=np.uint64), True
        self.limiter.insert_wait_seconds += self._wait(lambda: self._insert_ready(n), None, is_active, "insert")
        if self._is_duplicate(writer_id, sequence):  # a retry may have won the wait
            return np.empty(0, dtype=np.uint64), True
        return self._place_chunk(columns, n, item_priorities, policy_version, writer_id, sequence, keys), False

    def _insert_ready(self, n: int) -> bool:
        return self.limiter.can_insert(self.size) and (not self.is_queue or self.size + n <= self.capacity)

    def restore_logged(
        self, columns: Mapping[str, np.ndarray], item_priorities: np.ndarray, first_key: int,
        policy_version: int, writer_id: str, sequence: int,
    ) -> bool:  # fmt: skip
        """Places a chunk read back from the embedded store's acknowledgement log under the keys
        it was acknowledged with, without waiting on the rate limiter (this is start-up); returns
        False for one the restored snapshot already holds."""
        with self._cond:
            if first_key < self._next_key or self._is_duplicate(writer_id, sequence):
                return False
            n = len(item_priorities)
            keys = np.arange(first_key, first_key + n, dtype=np.uint64)
            self._place_chunk(columns, n, item_priorities, policy_version, writer_id, sequence, keys)
            self._next_key = first_key + n
            gone = [self._order[k] for k in keys.tolist() if k in self._gone]
            if gone:  # sampled away before this record was written: delivered already
                self._remove(np.array(gone, dtype=np.int64))
            return True

    def restore_sampled(self, keys: np.ndarray, samples: int, stale: int) -> None:
        """Applies an ack-log record of items sampled away (see :meth:`restore_logged`)."""
        with self._cond:
            present = [self._order[k] for k in keys.tolist() if k in self._order]
            if present:
                self._remove(np.array(present, dtype=np.int64))
            self._gone.update(k for k in keys.tolist() if k >= self._next_key)
            self.sampled_items += max(0, samples - self.limiter.samples)
            self.limiter.samples = max(self.limiter.samples, samples)
            self.stale_items = max(self.stale_items, stale)
            self.limiter.discarded = max(self.limiter.discarded, stale)

    def settle_restored_queue(self) -> None:
        """After a restart: a queue's rate limiter stops counting items it no longer holds."""
        with self._cond:
            self._gone.clear()
            self._count_only_held_items_as_waiting()

    def _count_only_held_items_as_waiting(self) -> None:
        # Items the snapshot, the ack log or the ring holds but memory does not (a queue rebuilt
        # with fewer items than were inserted and not yet sampled) will never be sampled: the
        # limiter stops counting them as waiting, or a full queue would hold inserts back while
        # its sampler waited for items it cannot have.
        if self.is_queue and self.limiter.samples_per_insert == 1.0:
            self.limiter.discarded = max(0, self.limiter.inserts - self.limiter.samples - self.size)

    def withdraw(self, keys: np.ndarray, writer_id: str) -> None:
        """Takes back the items of a chunk that turned out not to be stored durably (its ack-log write
        failed), and forgets the writer's last sequence so that its retry is not taken for a duplicate."""
        with self._cond:
            slots = [self._order[key] for key in keys.tolist() if key in self._order]
            if slots:
                self._remove(np.array(slots, dtype=np.int64))
                self.inserted_items -= len(slots)
                self.limiter.inserts -= len(slots)
            self._writer_sequences.pop(writer_id, None)

    def _place_chunk(self, columns, n, item_priorities, policy_version, writer_id, sequence, keys) -> np.ndarray:
        overflow = self.size + n - self.capacity
        if overflow > 0:
            self._remove(self._victims(overflow))
            self.evicted_items += overflow
        slots = np.array(self._free[-n:][::-1], dtype=np.int64)
        del self._free[-n:]
        for name, column in self.signature.items():
            self._storage[name][slots] = columns[name].reshape(n, self.sequence_length, *column.shape)
        if keys is None:
            keys = np.arange(self._next_key, self._next_key + n, dtype=np.uint64)
            self._next_key += n
        self._place(slots, keys, item_priorities, np.zeros(n, np.uint32), np.full(n, policy_version))
        if n:
            self.max_priority = max(self.max_priority, float(item_priorities.max()))
        self.limiter.inserts += n
        self.inserted_items += n
        if writer_id:
            self._remember_writer(writer_id, sequence)
        self._cond.notify_all()
        return keys

    def check(
        self, columns: Mapping[str, np.ndarray], priorities: Sequence[float] = (), capped: bool = False
    ) -> tuple[int, np.ndarray]:
        """(items, their priorities) of a chunk that fits this table; ``capped``: priorities
        above :attr:`max_priority` are lowered to it (a writer that may not sample).

        Raises:
            InvalidArgumentError: it does not fit, naming the field.
        """
        steps = self.signature.check(columns, self.sequence_length)
        n = steps // self.sequence_length
        if n > self.capacity:
            raise InvalidArgumentError(f"chunk: {n} items, more than table {self.name!r} holds ({self.capacity})")
        values = _checked_priorities(priorities, n, "chunk.priorities")
        if values is None:  # none given: new items are as urgent as the most urgent yet (Schaul et al.)
            values = np.full(n, self.max_priority)
        if capped:  # an upload-only client's item at 1e300 would otherwise be every batch of the table
            values = np.minimum(values, self.max_priority)
        return n, values

    def reserve_keys(self, n: int) -> np.ndarray:
        """Takes the keys of ``n`` items to come; a key is never handed out twice.
        Until :meth:`insert_checked` places them (or :meth:`release_keys` gives them up),
        the oldest key reported for a durable store stays at or below them."""
        with self._cond:
            keys = np.arange(self._next_key, self._next_key + n, dtype=np.uint64)
            self._unplaced[self._next_key] = n
            self._next_key += n
        return keys

    def release_keys(self, keys: np.ndarray) -> None:
        """Gives up reserved keys that will not be placed (the write failed, the caller left)."""
        if len(keys):
            with self._cond:
                self._unplaced.pop(int(keys[0]), None)

    def is_duplicate(self, writer_id: str, sequence: int) -> bool:
        """Whether this writer's chunk ``sequence`` is already stored."""
        with self._cond:
            return self._is_duplicate(writer_id, sequence)

    def _remember_writer(self, writer_id: str, sequence: int) -> None:
        """Keeps a writer's last sequence, forgetting the writer idle longest beyond
        ``max_writer_ids`` (a client that makes up ids cannot grow the table's memory)."""
        self._writer_sequences[writer_id] = sequence
        self._writer_sequences.move_to_end(writer_id)
        while len(self._writer_sequences) > self.config.max_writer_ids:
            self._writer_sequences.popitem(last=False)

    def _is_duplicate(self, writer_id: str, sequence: int) -> bool:
        return bool(writer_id) and sequence <= self._writer_sequences.get(writer_id, -1)

    def _place(self, slots, keys, priorities, times_sampled, policy_versions) -> None:
        self._keys[slots] = keys
        self._priorities[slots] = priorities
        self._times_sampled[slots] = times_sampled
        self._policy_versions[slots] = policy_versions
        self._order.update(zip(keys.tolist(), slots.tolist()))
        self._occupancy.add(slots)
        self._selector.insert(slots, priorities)

    def _victims(self, count: int) -> np.ndarray:
        ordered = iter(self._order.values()) if self.config.remover == "fifo" else reversed(self._order.values())
        return np.fromiter(ordered, dtype=np.int64, count=count)

    def _remove(self, slots: np.ndarray) -> None:
        for key in self._keys[slots].tolist():
            del self._order[key]
        self._occupancy.remove(slots)
        self._selector.remove(slots)
        self._free.extend(slots.tolist())

    # -- sampling ----------------------------------------------------------

    def sample(
        self,
        batch_size: int,
        timeout: float | None = None,
        importance_sampling_exponent: float = 0.0,
        is_active: Callable[[], bool] = lambda: True,
        policy_version: int = 0,
        wait: bool = True,
    ) -> SampledBatch:
        """Draws ``batch_size`` items (with replacement, for uniform and
        prioritized tables; distinct ones from a queue), waiting up to
        ``timeout`` seconds in all for the rate limiter to allow them.
        ``policy_version`` is the sampler's policy: a queue with
        ``max_policy_lag`` first drops what is older than it by more than that.

        Raises:
            DeadlineExceededError: the limiter held the batch back too long;
                no item was sampled.
            InvalidArgumentError: a queue asked for more items than it holds.
        """
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size: must be >= 1, got {batch_size}")
        if not 0.0 <= importance_sampling_exponent <= 1.0:
            raise InvalidArgumentError(
                f"importance_sampling_exponent: must be in [0, 1], got {importance_sampling_exponent}"
            )
        if self.distinct_batches and batch_size > self.capacity:
            raise InvalidArgumentError(
                f"batch_size: {batch_size} distinct items asked of table {self.name!r}, which holds {self.capacity}"
            )
        deadline = None if not timeout else time.monotonic() + timeout
        with self._cond:
            if self._closed:
                raise UnavailableError(f"table {self.name!r} is shutting down")
            if not wait and not self._sample_ready(batch_size, policy_version):
                raise WouldBlock
            if self.distinct_batches:
                return self._sample_distinct(batch_size, deadline, is_active, policy_version)
            granted = 0
            try:
                while granted < batch_size:
                    self.limiter.sample_wait_seconds += self._wait(
                        lambda: self.limiter.sample_permits(self.size) > 0, deadline, is_active, "sample"
                    )
                    take = min(batch_size - granted, self.limiter.sample_permits(self.size))
                    self.limiter.samples += take
                    granted += take
            except BaseException:
                self.limiter.samples -= granted  # hand back what was reserved
                self._cond.notify_all()
                raise
            batch = self._draw(batch_size, importance_sampling_exponent)
            self._cond.notify_all()
        return batch

    def _sample_ready(self, n: int, policy_version: int) -> bool:
        """Whether a batch of ``n`` can be drawn now, without waiting."""
        if self.distinct_batches:
            self._drop_stale(policy_version)
            return self.size >= n and self.limiter.sample_permits(self.size) >= n
        return self.limiter.sample_permits(self.size) >= n

    def _sample_distinct(self, n: int, deadline, is_active, policy_version: int) -> SampledBatch:
        """A batch of ``n`` distinct items, drawn once they are all there."""

        def ready() -> bool:
            self._drop_stale(policy_version)
            return self.size >= n and self.limiter.sample_permits(self.size) >= n

        self.limiter.sample_wait_seconds += self._wait(ready, deadline, is_active, "sample")
        self.limiter.samples += n
        batch = self._draw(n, 0.0)
        self._cond.notify_all()
        return batch

    def _drop_stale(self, policy_version: int) -> None:
        lag = self.config.max_policy_lag
        if not lag or not self.is_queue or policy_version <= lag or not self._order:
            return
        slots = np.fromiter(self._order.values(), dtype=np.int64, count=self.size)
        stale = slots[self._policy_versions[slots] < policy_version - lag]
        if len(stale):
            keys = self._keys[stale]
            self._remove(stale)
            self.stale_items += len(stale)
            self.limiter.discarded += len(stale)
            if self.on_sampled_away is not None:
                self.on_sampled_away(self.name, keys, self.limiter.samples, self.stale_items)
            self._cond.notify_all()  # room for inserts

    def _draw(self, n: int, beta: float) -> SampledBatch:
        slots, probabilities = self._selector.select(n, self._rng)
        size = self.size
        np.add.at(self._times_sampled, slots, 1)
        if beta > 0:
            weights = np.power(size * probabilities, -beta)
            weights /= weights.max()
        else:
            weights = np.ones(n)
        batch = SampledBatch(
            keys=self._keys[slots],
            columns={name: storage[slots] for name, storage in self._storage.items()},
            probabilities=probabilities,
            importance_weights=weights,
            times_sampled=self._times_sampled[slots],
            policy_versions=self._policy_versions[slots],
            table_size=size,
        )
        self.sampled_items += n
        if self.config.max_times_sampled:
            spent = np.unique(slots[self._times_sampled[slots] >= self.config.max_times_sampled])
            if self.on_sampled_away is not None:
                self.on_sampled_away(self.name, self._keys[spent], self.limiter.samples, self.stale_items)
            if len(spent):
                self._remove(spent)
        return batch

    def _wait(self, ready: Callable[[], bool], deadline: float | None, is_active, side: str) -> float:
        """Sleeps on the condition until ``ready()``; returns the seconds waited."""
        start = time.monotonic()
        while not ready():
            if self._closed:
                raise UnavailableError(f"table {self.name!r} is shutting down")
            if not is_active():
                raise CancelledError(f"table {self.name!r}: the caller went away while the {side} waited")
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                needed = self.limiter.inserts_to_sample(self.size) if side == "sample" else 0
                raise DeadlineExceededError(
                    f"table {self.name!r}: the rate limiter held the {side} back for {now - start:.3f}s"
                    + (f"; it waits for {needed:,} more inserts" if needed else "")
                    + f" (size {self.size}, min_size_to_sample {self.limiter.min_size_to_sample}, "
                    f"samples_per_insert {self.limiter.samples_per_insert}, inserts {self.limiter.inserts}, "
                    f"samples {self.limiter.samples})"
                )
            wait = _LIVENESS_CHECK_SECONDS if deadline is None else min(_LIVENESS_CHECK_SECONDS, deadline - now)
            self._cond.wait(wait)
        return time.monotonic() - start

    # -- priorities ----------------------------------------------------------

    def update_priorities(self, keys: Sequence[int], priorities: Sequence[float]) -> tuple[int, int]:
        """Sets priorities by key. Returns (updated, missing)."""
        if len(keys) != len(priorities):
            raise InvalidArgumentError(f"priorities: {len(priorities)} values for {len(keys)} keys")
        values = _checked_priorities(priorities, len(keys), "priorities")
        if values is None:
            return 0, 0
        with self._cond:
            if len(values):
                self.max_priority = max(self.max_priority, float(values.max()))
            found = [(self._order.get(key), value) for key, value in zip(keys, values.tolist())]
            found = [(slot, value) for slot, value in found if slot is not None]
            if found:
                slots = np.array([slot for slot, _ in found], dtype=np.int64)
                new = np.array([value for _, value in found])
                self._priorities[slots] = new
                self._selector.update(slots, new)
        return len(found), len(keys) - len(found)

    # -- snapshots -----------------------------------------------------------

    def state(self) -> TableState:
        """A consistent copy of the table for a snapshot."""
        with self._cond:
            slots = np.fromiter(self._order.values(), dtype=np.int64, count=self.size)
            return TableState(
                columns={name: storage[slots] for name, storage in self._storage.items()},
                keys=self._keys[slots],
                priorities=self._priorities[slots],
                times_sampled=self._times_sampled[slots],
                policy_versions=self._policy_versions[slots],
                counters=self._counters(),
                writer_sequences=dict(self._writer_sequences),
            )

    def restore(self, state: TableState) -> int:
        """Loads a snapshot into this (empty) table; returns items dropped
        because the table is now smaller than the snapshot."""
        with self._cond:
            if self.size:
                raise RuntimeError(f"table {self.name!r}: restore into a table that is not empty")
            n = len(state.keys)
            keep = slice(max(0, n - self.capacity), n)  # the newest items
            count = len(state.keys[keep])
            slots = np.array(self._free[-count:][::-1], dtype=np.int64) if count else np.empty(0, np.int64)
            del self._free[len(self._free) - count :]
            for name in self.signature:
                self._storage[name][slots] = state.columns[name][keep]
            self._place(
                slots,
                state.keys[keep].astype(np.uint64),
                state.priorities[keep],
                state.times_sampled[keep],
                state.policy_versions[keep],
            )
            counters = state.counters
            self._next_key = counters["next_key"]
            self.limiter.inserts = counters["inserts"]
            self.limiter.samples = counters["samples"]
            self.inserted_items = counters["inserted_items"]
            self.sampled_items = counters["sampled_items"]
            self.evicted_items = counters["evicted_items"] + (n - count)
            self.stale_items = counters.get("stale_items", 0)
            if count:
                self.max_priority = max(1.0, float(state.priorities[keep].max()))
            self.limiter.discarded = self.stale_items
            self._count_only_held_items_as_waiting()
            self._writer_sequences = OrderedDict()
            for writer_id, sequence in state.writer_sequences.items():
                self._remember_writer(writer_id, sequence)
            return n - count

    def bookkeeping(self) -> Bookkeeping:
        """What a durable store saves besides the items."""
        with self._cond:
            return Bookkeeping(self._oldest_key(), self._counters(), dict(self._writer_sequences), dict(self._unplaced))

    def oldest_key(self) -> int:
        """The oldest key memory holds (the next key when empty)."""
        with self._cond:
            return self._oldest_key()

    def _oldest_key(self) -> int:
        # keys enter memory nearly in order (concurrent streams may swap neighbours);
        # keys reserved for chunks still on their way count as held
        return min(itertools.chain(itertools.islice(self._order, 64), self._unplaced), default=self._next_key)

    def _counters(self) -> dict[str, int]:
        return {
            "next_key": self._next_key,
            "inserts": self.limiter.inserts,
            "samples": self.limiter.samples,
            "inserted_items": self.inserted_items,
            "sampled_items": self.sampled_items,
            "evicted_items": self.evicted_items,
            "stale_items": self.stale_items,
        }

    def close(self) -> None:
        """Wakes every waiting call with UNAVAILABLE; used at shutdown."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _checked_priorities(priorities: Sequence[float], n: int, field: str) -> np.ndarray | None:
    """The priorities, one per item; None when none were given."""
    values = np.asarray(priorities, dtype=np.float64).reshape(-1)
    if len(values) == 0:
        return None
    if len(values) not in (1, n):
        raise InvalidArgumentError(f"{field}: {len(values)} values for {n} items; give none, one, or one per item")
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        index = int(np.argmax(bad))
        raise InvalidArgumentError(f"{field}[{index}]: {values[index]} is not a finite number >= 0")
    return np.broadcast_to(values, (n,)).copy()
