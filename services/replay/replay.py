"""The replay domain object: named tables plus their store, without gRPC."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rlrings.errors import ConfigError, FailedPreconditionError, NotFoundError
from services.replay.config import TableConfig
from services.replay.store import SnapshotStore
from services.replay.table import Table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointResult:
    path: Path
    items: int
    seconds: float


class Replay:
    """Tables by name; restores from and snapshots to an optional store."""

    def __init__(
        self,
        tables: list[TableConfig],
        store: SnapshotStore | None = None,
        snapshot_interval_seconds: float = 0.0,
        max_item_bytes: int | None = None,
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
        self._checkpoint_lock = threading.Lock()
        self._stop = threading.Event()
        self._snapshotter: threading.Thread | None = None
        if store is not None:
            self._restore(store)
            if snapshot_interval_seconds > 0:
                self._snapshotter = threading.Thread(
                    target=self._snapshot_every, args=(snapshot_interval_seconds,), name="replay-snapshots", daemon=True
                )
                self._snapshotter.start()

    def table(self, name: str) -> Table:
        try:
            return self.tables[name]
        except KeyError:
            raise NotFoundError(f"table {name!r} not found; this server has {sorted(self.tables)}") from None

    def checkpoint(self) -> CheckpointResult:
        """Writes a snapshot of every table now."""
        if self.store is None:
            raise FailedPreconditionError("the memory store keeps no snapshots; run with store=embedded")
        with self._checkpoint_lock:
            start = time.monotonic()
            states = {name: (table.state(), table.signature) for name, table in self.tables.items()}
            path = self.store.save(states)
            items = sum(len(state.keys) for state, _ in states.values())
            seconds = time.monotonic() - start
        log.info("snapshot of %d items written to %s in %.2fs", items, path, seconds)
        return CheckpointResult(path, items, seconds)

    def release_waiters(self) -> None:
        """Ends every blocked or new insert and sample with UNAVAILABLE."""
        for table in self.tables.values():
            table.close()

    def close(self) -> None:
        """Releases waiters, stops periodic snapshots and writes a last one."""
        self._stop.set()
        self.release_waiters()
        if self._snapshotter is not None:
            self._snapshotter.join()
        if self.store is not None:
            self.checkpoint()

    def _restore(self, store: SnapshotStore) -> None:
        states = store.load({name: table.signature for name, table in self.tables.items()})
        for name, state in states.items():
            dropped = self.tables[name].restore(state)
            log.info("table %r restored with %d items from %s", name, self.tables[name].size, store.current)
            if dropped:
                log.warning("table %r: max_size is below the snapshot; dropped the %d oldest items", name, dropped)

    def _snapshot_every(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.checkpoint()
            except Exception:  # a failed periodic snapshot must not end the service
                log.exception("periodic snapshot failed; the next one will try again")
