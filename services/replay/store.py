"""The embedded store: table snapshots in a local directory.

A snapshot is written to a fresh directory, synced, and then swapped in with
renames, so a crash at any moment leaves either the old or the new snapshot
whole. Arrays are plain ``.npy`` files (no pickles); counters and writer
sequences go to ``meta.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from rlrings.core.errors import ConfigError
from rlrings.rpc.signature import Signature
from rlrings.services.replay.table import TableState

log = logging.getLogger(__name__)

_ARRAYS = ("keys", "priorities", "times_sampled", "policy_versions")


class SnapshotStore:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.current = self.directory / "snapshot"
        self._previous = self.directory / "snapshot.previous"
        self._incoming = self.directory / "snapshot.incoming"

    def check_writable(self) -> None:
        """Makes the directory and writes a file there, at start rather than at the first snapshot.

        Raises:
            ConfigError: naming ``snapshot_dir`` and why it cannot be written.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".writable-"):
                pass
        except OSError as error:
            raise ConfigError(
                f"snapshot_dir: {self.directory} cannot be written ({error.strerror or error}); give a directory "
                "this process may write, or store: cassandra"
            ) from None

    def save(self, states: dict[str, tuple[TableState, Signature]], log_from: int | None = None) -> Path:
        """Writes every table's state; returns the snapshot directory. ``log_from``: the first
        acknowledgement-log generation a restart must read on top of it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self._incoming, ignore_errors=True)
        for name, (state, signature) in states.items():
            folder = self._incoming / name
            folder.mkdir(parents=True)
            for column, array in state.columns.items():
                _save_array(folder / f"column.{column}.npy", array)
            for field in _ARRAYS:
                _save_array(folder / f"{field}.npy", getattr(state, field))
            meta = {
                "counters": state.counters,
                "writer_sequences": state.writer_sequences,
                "signature": {c.name: {"dtype": c.dtype.name, "shape": list(c.shape)} for c in signature.values()},
                "saved_at": time.time(),
            }
            _write_synced(folder / "meta.json", json.dumps(meta).encode())
        if log_from is not None:
            _write_synced(self._incoming / "log.json", json.dumps({"log_from": log_from}).encode())
        sync_dir(self._incoming)
        if self.current.exists():
            shutil.rmtree(self._previous, ignore_errors=True)
            os.rename(self.current, self._previous)
        os.rename(self._incoming, self.current)
        sync_dir(self.directory)
        shutil.rmtree(self._previous, ignore_errors=True)
        return self.current

    def log_from(self) -> int:
        """The first acknowledgement-log generation the newest whole snapshot does not hold
        (0 with no snapshot: every generation)."""
        source = self.current if self.current.exists() else self._previous
        path = source / "log.json"
        return json.loads(path.read_text())["log_from"] if path.exists() else 0

    def load(self, signatures: dict[str, Signature]) -> dict[str, TableState]:
        """Reads the newest whole snapshot, for the tables still configured.

        Raises:
            ConfigError: a table's snapshot has columns the config no longer
                has, or with another dtype or shape (nothing is overwritten).
        """
        source = self.current if self.current.exists() else self._previous
        if not source.exists():
            return {}
        states = {}
        for folder in sorted(p for p in source.iterdir() if p.is_dir()):
            name = folder.name
            if name not in signatures:
                log.warning("snapshot has table %r, which is no longer configured; ignoring it", name)
                continue
            meta = json.loads((folder / "meta.json").read_text())
            _check_compatible(name, meta["signature"], signatures[name], source)
            states[name] = TableState(
                columns={c: np.load(folder / f"column.{c}.npy", allow_pickle=False) for c in signatures[name]},
                counters=meta["counters"],
                writer_sequences=meta["writer_sequences"],
                **{field: np.load(folder / f"{field}.npy", allow_pickle=False) for field in _ARRAYS},
            )
        return states


def _check_compatible(name: str, saved: dict, signature: Signature, source: Path) -> None:
    wanted = {c.name: {"dtype": c.dtype.name, "shape": list(c.shape)} for c in signature.values()}
    if saved != wanted:
        raise ConfigError(
            f"tables.{name}.signature: the snapshot in {source} holds {saved}, the config asks for {wanted}; "
            "restore the old signature or move the snapshot away"
        )


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as file:
        np.save(file, np.ascontiguousarray(array), allow_pickle=False)
        file.flush()
        os.fsync(file.fileno())


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
