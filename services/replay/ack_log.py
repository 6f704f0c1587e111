"""The embedded store's acknowledgement log: what makes an ack mean "stored".

Snapshots alone left every chunk acknowledged since the last one (five minutes
at the default interval) to a kill -9. So every chunk the embedded store
places in memory is appended here, under the keys it got, *before* its ack is
sent; at start the log is read back on top of the snapshot. The log is a
sequence of generation files (``acklog/00000007.log``): a snapshot first opens
a new generation, then copies the tables, then deletes the generations before
the one it opened. A record whose first key is below its table's restored
``next_key`` is already in the snapshot and is skipped, so a chunk is never
restored twice, whichever side of the snapshot its record landed on.

What survives what:

- a killed process: every acknowledged chunk (``write`` has reached the
  kernel before the ack);
- a machine crash or power loss: what was synced; ``sync: always`` syncs
  before each ack, ``sync: periodic`` every ``sync_interval_seconds`` (the
  choice Cassandra's commitlog offers too).

Queues (tables whose items leave once sampled) also log what sampling took
from them, so a restart neither hands the learner experience it already had
nor leaves the rate limiter counting items that are gone.

A record is ``<length u32><crc u32><kind u8><first key u64>`` and a
payload: for a chunk, the serialized ``Chunk``; for items sampled away, the
table's name, the samples drawn and the keys removed. The checksum is CRC-32C
(hardware-accelerated, a tenth of zlib's CRC-32 on a frame chunk; kind's high
bit says so); records of logs written before it carry zlib's CRC-32 and are
read as such. A torn last record (a crash during the write, never
acknowledged) ends the reading of its file.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from rlrings.core.errors import ResourceExhaustedError, UnavailableError
from rlrings.services.replay.store import sync_dir
from rlrings.v1 import tensor_pb2

log = logging.getLogger(__name__)
_HEADER = struct.Struct("<IIBQ")
CHUNK, SAMPLED = 0, 1
_CRC32C = 0x80
"""Set in a record's kind when its checksum is CRC-32C (every record written now)."""


@dataclass(frozen=True)
class Sampled:
    """Items a queue removed as it handed them out or dropped them as stale, with the table's
    running totals after it: a restart applies a record only where its snapshot is older."""

    table: str
    keys: np.ndarray
    samples: int
    """The table's rate-limiter samples after the draw."""
    stale: int
    """The table's stale items after it."""


def _crc(kind: int, first_key: int, payload: bytes) -> int:
    """The checksum of a record's kind, key and payload: CRC-32C when ``kind`` says so, else zlib's CRC-32."""
    prefix = struct.pack("<BQ", kind, first_key)
    if kind & _CRC32C:
        return google_crc32c.extend(google_crc32c.value(prefix), payload)
    return zlib.crc32(payload, zlib.crc32(prefix))


class AckLog:
    """Appends acknowledged chunks; thread-safe."""

    def __init__(self, directory: Path, sync: str = "periodic"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sync_each = sync == "always"
        self._lock = threading.Lock()
        existing = self.generations()
        self.generation = (existing[-1] + 1) if existing else 1
        self._file = self._open(self.generation)
        self.bytes_since_rotation = 0
        self._dirty = False

    def generations(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob("*.log") if p.stem.isdigit())

    def _path(self, generation: int) -> Path:
        return self.directory / f"{generation:08d}.log"

    def _open(self, generation: int):
        file = open(self._path(generation), "ab", buffering=0)  # noqa: SIM115 (kept open; unbuffered)
        sync_dir(self.directory)
        return file

    def append(self, first_key: int, chunk: tensor_pb2.Chunk) -> None:
        """Appends one chunk under its first key; returns once the kernel has it (or the disk,
        with ``sync: always``).

        Raises:
            ResourceExhaustedError: the disk is full (nothing half-written is read back).
            UnavailableError: any other failure to write; the chunk must not be acknowledged.
        """
        self._append(CHUNK, first_key, chunk.SerializeToString())

    def append_sampled(self, table: str, keys: np.ndarray, samples: int, stale: int) -> None:
        """Logs items a queue removed (see :class:`Sampled`); the caller holds the table's lock, so
        these records keep the order of what the table did."""
        name = table.encode()
        payload = struct.pack("<HQQ", len(name), samples, stale) + name + np.asarray(keys, "<u8").tobytes()
        self._append(SAMPLED, 0, payload)

    def _append(self, kind: int, first_key: int, payload: bytes) -> None:
        kind |= _CRC32C
        header = _HEADER.pack(len(payload), _crc(kind, first_key, payload), kind, first_key)
        with self._lock:
            try:
                if len(payload) < 1 << 16:  # small: one write; large: no copy to join them
                    _write_all(self._file.fileno(), header + payload)
                else:
                    _write_all(self._file.fileno(), header)
                    _write_all(self._file.fileno(), payload)
                if self.sync_each:
                    os.fsync(self._file.fileno())
                else:
                    self._dirty = True
            except OSError as error:
                self._recover_from_failed_write()
                if error.errno == errno.ENOSPC:
                    raise ResourceExhaustedError(
                        f"replay's disk is full ({self.directory}); the chunk was not stored, send it again later"
                    ) from None
                raise UnavailableError(f"replay could not log the chunk ({error.strerror}); send it again") from None
            self.bytes_since_rotation += len(header) + len(payload)

    def _recover_from_failed_write(self) -> None:
        """A failed write may have left part of a record: the file is cut back to its last whole one."""
        try:
            size = self._whole_size(self._path(self.generation))
            os.ftruncate(self._file.fileno(), size)
            self._file.seek(size)
        except OSError:
            log.exception("could not cut the acknowledgement log back after a failed write")

    def sync(self) -> None:
        """Syncs what was appended since the last sync (``sync: periodic`` calls it on a timer)."""
        with self._lock:
            if self._dirty:
                os.fsync(self._file.fileno())
                self._dirty = False

    def rotate(self) -> int:
        """Starts a new generation and returns it: a snapshot taken after this call holds every
        record of older generations."""
        with self._lock:
            self._file.close()
            self.generation += 1
            self._file = self._open(self.generation)
            self.bytes_since_rotation = 0
            self._dirty = False
            return self.generation

    def truncate_before(self, generation: int) -> None:
        """Deletes the generations a snapshot made redundant."""
        for old in self.generations():
            if old < generation:
                self._path(old).unlink(missing_ok=True)
        sync_dir(self.directory)

    def records(self, from_generation: int) -> Iterator[tuple[int, tensor_pb2.Chunk] | Sampled]:
        """Every whole record from ``from_generation`` on, oldest first: (first key, chunk) for a
        chunk, :class:`Sampled` for items sampled away."""
        for generation in self.generations():
            if generation < from_generation or generation == self.generation:
                continue  # (the open generation is this process's own, empty at start)
            yield from _read(self._path(generation))

    def _whole_size(self, path: Path) -> int:
        return max((end for end, _, _, _ in _scan(path)), default=0)

    def close(self) -> None:
        with self._lock:
            if self._dirty:
                os.fsync(self._file.fileno())
            self._file.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _scan(path: Path) -> Iterator[tuple[int, int, int, bytes]]:
    """(end offset, kind, first key, payload) of each whole record of a file, read one at a time."""
    with open(path, "rb") as file:
        offset = 0
        while len(header := file.read(_HEADER.size)) == _HEADER.size:
            length, crc, kind, first_key = _HEADER.unpack(header)
            payload = file.read(length)
            if len(payload) < length:
                break  # torn: the process died while writing it, before its ack
            if _crc(kind, first_key, payload) != crc or kind & ~_CRC32C not in (CHUNK, SAMPLED):
                log.warning("%s: a damaged record at byte %d ends its reading", path, offset)
                break
            offset += _HEADER.size + length
            yield offset, kind & ~_CRC32C, first_key, payload


def _read(path: Path) -> Iterator[tuple[int, tensor_pb2.Chunk] | Sampled]:
    for _, kind, first_key, payload in _scan(path):
        if kind == CHUNK:
            chunk = tensor_pb2.Chunk()
            chunk.ParseFromString(payload)
            yield first_key, chunk
        else:
            length, samples, stale = struct.unpack_from("<HQQ", payload)
            start = struct.calcsize("<HQQ")
            name = payload[start : start + length].decode()
            yield Sampled(name, np.frombuffer(payload[start + length :], "<u8"), samples, stale)
