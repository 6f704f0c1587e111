"""Versioned weights on local disk, with tags and change notification.

Each version is two files, ``v<version>.bin`` (the weights) and
``v<version>.json`` (its header), written to temporary names and renamed, so a
crash never leaves a half version. The newest ``keep`` versions are retained,
and the one tagged ``best`` whatever its age.

Besides ``latest`` and ``best``, which the store works out, a publisher may
name a version (``fewshot/reptile/s0``): a named tag points at the newest
version published with it, and that version is kept whatever its age.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

from google.protobuf import json_format

from rlrings.errors import InvalidArgumentError, NotFoundError, UnavailableError
from rlrings.v1 import parameter_pb2

log = logging.getLogger(__name__)
RESERVED_TAGS = ("latest", "best")
TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")


def check_tags(tags) -> list[str]:
    """Names a publisher may give a version.

    Raises:
        InvalidArgumentError: a reserved or malformed name.
    """
    for tag in tags:
        if tag in RESERVED_TAGS:
            raise InvalidArgumentError(f"header.tags: {tag!r} is set by the service, not by publishers")
        if not TAG_PATTERN.fullmatch(tag):
            raise InvalidArgumentError(
                f"header.tags: {tag[:140]!r} is not a tag name (letters, digits and . _ / -, at most 128, "
                f"starting with a letter or digit)"
            )
    return list(dict.fromkeys(tags))


class WeightStore:
    def __init__(self, directory: Path, keep: int):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.last_evaluation: tuple[int, float] | None = None  # (version, return) last reported
        self._headers: dict[int, parameter_pb2.WeightsHeader] = {}
        self._cond = threading.Condition()
        self._listeners: set[Callable[[], None]] = set()
        self._closed = False
        self._cache: tuple[int, bytes] | None = None  # the newest version's bytes
        for path in sorted(self.directory.glob("v*.json")):
            header = json_format.Parse(path.read_text(), parameter_pb2.WeightsHeader())
            if (self.directory / f"v{header.version:010d}.bin").exists():
                self._headers[header.version] = header
        if self._headers:
            log.info("restored versions %s from %s", sorted(self._headers), self.directory)

    # -- reading -------------------------------------------------------------

    @property
    def latest_version(self) -> int:
        with self._cond:
            return max(self._headers, default=0)

    def best_version(self) -> int:
        with self._cond:
            return self._best()

    def _best(self) -> int:
        scored = [(h.evaluation_return, v) for v, h in self._headers.items() if h.HasField("evaluation_return")]
        return max(scored)[1] if scored else 0

    def tags(self) -> dict[str, int]:
        with self._cond:
            tags = self._named()
            if self._headers:
                tags["latest"] = max(self._headers)
            if best := self._best():
                tags["best"] = best
            return tags

    def _named(self) -> dict[str, int]:
        named: dict[str, int] = {}
        for version in sorted(self._headers):
            named.update(dict.fromkeys(self._headers[version].tags, version))
        return named

    def header(self, version: int = 0, tag: str = "") -> parameter_pb2.WeightsHeader:
        """The header of a version, or of the version a tag points at."""
        with self._cond:
            if tag:
                resolved = self.tags().get(tag)
                if resolved is None:
                    known = "; no version published yet" if not self._headers else f"; tags now: {sorted(self.tags())}"
                    raise NotFoundError(f"tag: {tag!r} points at no version{known}")
                version = resolved
            if version not in self._headers:
                raise NotFoundError(f"version: {version} is not retained; retained: {sorted(self._headers)}")
            header = parameter_pb2.WeightsHeader()
            header.CopyFrom(self._headers[version])
            header.tags[:] = [name for name, v in self.tags().items() if v == version]
            return header

    def read(self, version: int) -> bytes:
        with self._cond:
            if self._cache and self._cache[0] == version:
                return self._cache[1]
        try:
            return (self.directory / f"v{version:010d}.bin").read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"version: {version} was removed by retention") from None

    def versions_after(self, version: int, timeout: float) -> list[int]:
        """Versions newer than ``version``, waiting up to ``timeout`` for one."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or max(self._headers, default=0) > version, timeout)
            if self._closed:
                raise UnavailableError("parameter service is shutting down")
            return sorted(v for v in self._headers if v > version)

    def headers(self) -> list[parameter_pb2.WeightsHeader]:
        with self._cond:
            versions = sorted(self._headers, reverse=True)
        return [self.header(v) for v in versions]

    # -- writing -------------------------------------------------------------

    def publish(self, header: parameter_pb2.WeightsHeader, data: bytes) -> int:
        """Stores a new version and wakes the watchers; returns its number.

        Raises:
            InvalidArgumentError: a tag in the header is reserved or malformed.
        """
        tags = check_tags(header.tags)
        with self._cond:
            version = max(self._headers, default=0) + 1
            stored = parameter_pb2.WeightsHeader()
            stored.CopyFrom(header)
            stored.version = version
            stored.tags[:] = tags  # the names given; header() reports every tag pointing here
            stored.ClearField("evaluation_return")
            stored.created.GetCurrentTime()
            _write_atomic(self.directory / f"v{version:010d}.bin", data)
            _write_atomic(self.directory / f"v{version:010d}.json", json_format.MessageToJson(stored).encode())
            self._headers[version] = stored
            self._cache = (version, data)
            self._prune()
            self._cond.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return version

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Calls ``listener()`` (from the publishing thread) after each publish and at close;
        returns the function that stops it. Watchers on an event loop wait this way, with no thread."""
        with self._cond:
            self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    def report_evaluation(self, version: int, evaluation_return: float) -> int:
        with self._cond:
            if version not in self._headers:
                raise NotFoundError(f"version: {version} is not retained; retained: {sorted(self._headers)}")
            header = self._headers[version]
            header.evaluation_return = evaluation_return
            self.last_evaluation = (version, evaluation_return)
            _write_atomic(self.directory / f"v{version:010d}.json", json_format.MessageToJson(header).encode())
            self._prune()
            return self._best()

    def _prune(self) -> None:
        keep = set(sorted(self._headers)[-self.keep :]) | {self._best()} | set(self._named().values())
        for version in [v for v in self._headers if v not in keep]:
            del self._headers[version]
            for suffix in ("bin", "json"):
                (self.directory / f"v{version:010d}.{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            listener()


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.rename(temporary, path)
