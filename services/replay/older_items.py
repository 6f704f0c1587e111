"""Sampling beyond memory: a uniform table also draws from the ring's older rows.

A uniform table with a FIFO remover evicts its oldest items from memory, but
the Cassandra ring keeps them until their TTL, so the experience a shard can
sample is not bounded by its RAM. :class:`OlderItems` indexes those rows and
keeps a reservoir of their items, refreshed in the background by random reads
in proportion to how much is sampled. A batch then takes each item from memory
or from the reservoir in proportion to how many items each side holds, and
never waits on Cassandra.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading

import numpy as np

from rlrings.services.replay.cassandra_store import CassandraStore, Segment
from rlrings.services.replay.table import SampledBatch, Table

log = logging.getLogger(__name__)

_ROWS_PER_READ = 8


class OlderItems:
    """The ring's rows of one table that memory no longer holds, and a reservoir of their items."""

    def __init__(self, store: CassandraStore, table: Table, segments: list[Segment], reservoir_items: int, seed=None):
        self.store = store
        self.table = table
        self._segments = sorted(segments, key=lambda s: s.first_key)
        self._firsts = [s.first_key for s in self._segments]
        self._cumulative: list[int] | None = None  # running item counts over the index
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._rng = np.random.default_rng(seed)
        self.capacity = reservoir_items
        self._columns = {
            name: np.empty((reservoir_items, table.sequence_length, *column.shape), column.dtype)
            for name, column in table.signature.items()
        }
        self._keys = np.zeros(reservoir_items, np.uint64)
        self._versions = np.zeros(reservoir_items, np.int64)
        self.filled = 0
        self._drawn = 0  # items drawn since the last refresh: what the next one replaces
        self.read_rows = 0

    def add(self, segment: Segment) -> None:
        """Indexes a row just written; it counts once memory has evicted its items."""
        with self._lock:
            index = bisect.bisect(self._firsts, segment.first_key)
            self._firsts.insert(index, segment.first_key)
            self._segments.insert(index, segment)
            if self._cumulative is not None and index == len(self._cumulative):  # the usual case: newest
                self._cumulative.append((self._cumulative[-1] if index else 0) + segment.items)
            else:
                self._cumulative = None

    def _older_prefix(self) -> tuple[int, int]:
        """(rows, items) of the index that memory no longer holds. Holds the lock."""
        watermark = self.table.oldest_key()
        rows = bisect.bisect_right(self._firsts, watermark)
        while rows and self._segments[rows - 1].end_key > watermark:
            rows -= 1  # a row partly in memory is not older yet
        if self._cumulative is None:
            self._cumulative = list(itertools.accumulate(s.items for s in self._segments))
        return rows, self._cumulative[rows - 1] if rows else 0

    @property
    def items(self) -> int:
        """Items in the ring beyond memory that sampling reaches."""
        with self._lock:
            return self._older_prefix()[1]

    def mix(self, batch: SampledBatch, rng: np.random.Generator) -> SampledBatch:
        """Replaces a share of a memory batch by items from the reservoir: each
        item comes from the older rows with probability older / (memory + older)."""
        with self._lock:
            _, older = self._older_prefix()
            total = batch.table_size + older
            n = len(batch.keys)
            take = int(rng.binomial(n, older / total)) if older and self.filled else 0
            if take:
                positions = rng.choice(n, take, replace=False)
                picks = rng.integers(0, self.filled, take)
                for name, array in batch.columns.items():
                    array[positions] = self._columns[name][picks]
                batch.keys[positions] = self._keys[picks]
                batch.policy_versions[positions] = self._versions[picks]
                batch.times_sampled[positions] = 1
                self._drawn += take
                self._wake.notify()
        batch.probabilities[:] = 1.0 / total
        batch.table_size = total
        return batch

    def refresh(self, stop: threading.Event) -> None:
        """Fills the reservoir, then replaces what sampling drew, until ``stop``."""
        while not stop.is_set():
            with self._lock:
                rows, older = self._older_prefix()
                need = self.capacity - self.filled if self.filled < self.capacity else self._drawn
                if not rows or not need:
                    self._wake.wait(0.5)
                    continue
                weights = np.asarray(self._cumulative[:rows])
                draws = np.searchsorted(weights, self._rng.integers(0, older, _ROWS_PER_READ), side="right")
                chosen = [self._segments[i] for i in sorted(set(draws.tolist()))]
            try:
                fetched = self.store.fetch(self.table.name, self.table.signature, self.table.sequence_length, chosen)
            except Exception as error:  # the ring is busy or a node is down: try again shortly
                log.warning("table %r: reading older rows failed (%s); retrying", self.table.name, error)
                stop.wait(1.0)
                continue
            found = set(fetched.keys.tolist())
            with self._lock:
                self.read_rows += len(chosen)
                self._forget([s for s in chosen if s.first_key not in found])  # expired by TTL
                count = len(fetched.keys)
                if self.filled < self.capacity:
                    slots = np.arange(self.filled, min(self.capacity, self.filled + count))
                    self.filled += len(slots)
                else:
                    slots = self._rng.choice(self.capacity, min(count, self.capacity), replace=False)
                    self._drawn = max(0, self._drawn - len(slots))
                picks = self._rng.choice(count, len(slots), replace=False) if count > len(slots) else np.arange(count)
                for name, array in fetched.columns.items():
                    self._columns[name][slots] = array[picks]
                self._keys[slots] = fetched.keys[picks]
                self._versions[slots] = fetched.policy_versions[picks]

    def _forget(self, gone: list[Segment]) -> None:
        for segment in gone:
            index = bisect.bisect_left(self._firsts, segment.first_key)
            if index < len(self._firsts) and self._firsts[index] == segment.first_key:
                del self._firsts[index], self._segments[index]
                self._cumulative = None

    def wake(self) -> None:
        with self._lock:
            self._wake.notify_all()
