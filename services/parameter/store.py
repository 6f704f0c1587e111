"""Versioned weights on local disk, with tags and change notification.

Each version is two files, ``v<version>.bin`` (the weights) and
``v<version>.json`` (its header). A publish streams its pieces into a
temporary file as they arrive (no copy of the model is held in memory), which
is renamed once complete and checked, so a crash never leaves a half version;
temporary files a crash left are removed at start. A full disk is
RESOURCE_EXHAUSTED and leaves nothing behind.

The store works out three tags: ``latest``; ``best``, the version with the
highest *confirmed* evaluation (a mean over the env's own solving window; an
unconfirmed round of a few episodes ranks below every confirmed one); and
``solved``, the first version reported to have solved the env. A publisher may
also name a version (``fewshot/reptile/s0``): a named tag points at the newest
version published with it. Retention keeps the newest ``keep`` versions and,
whatever their age, the ones ``best``, ``solved`` and named tags point at, and
the ones held: a reader may hold a version while it evaluates it (Fetch's
``hold_seconds``), so its report is never lost to pruning. At most
``max_named_tags`` names and ``max_holds`` holds exist at once.

:class:`WeightDirectory` reads a store's directory with no server and writes
nothing: what ``rlrings models list|pull --run`` read after a run has ended.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from google.protobuf import json_format

from rlrings.core.errors import (
    ConfigError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from rlrings.v1 import parameter_pb2

log = logging.getLogger(__name__)
RESERVED_TAGS = ("latest", "best", "solved")
MAX_HOLD_SECONDS = 3600.0
TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
MAX_TAGS_PER_PUBLISH = 16
_TEMPORARY_SUFFIX = ".tmp"


def check_tags(tags) -> list[str]:
    """Names a publisher may give a version.

    Raises:
        InvalidArgumentError: a reserved or malformed name.
    """
    if len(tags) > MAX_TAGS_PER_PUBLISH:
        raise InvalidArgumentError(f"header.tags: {len(tags)} tags, at most {MAX_TAGS_PER_PUBLISH} per publish")
    for tag in tags:
        if tag in RESERVED_TAGS:
            raise InvalidArgumentError(f"header.tags: {tag!r} is set by the service, not by publishers")
        if not TAG_PATTERN.fullmatch(tag):
            raise InvalidArgumentError(
                f"header.tags: {tag[:140]!r} is not a tag name (letters, digits and . _ / -, at most 128, "
                f"starting with a letter or digit)"
            )
    return list(dict.fromkeys(tags))


class Upload:
    """A version on its way in: pieces go to a temporary file as they arrive, with their sha256
    taken along; :meth:`WeightStore.commit` makes it a version, :meth:`discard` removes it."""

    def __init__(self, directory: Path, header: parameter_pb2.WeightsHeader, tags: list[str]):
        self.header, self.tags = header, tags
        self.received = 0
        self._sha256 = hashlib.sha256()
        with _disk_errors("publish"):
            descriptor, name = tempfile.mkstemp(prefix="upload-", suffix=_TEMPORARY_SUFFIX, dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(descriptor, "wb")

    def write(self, data: bytes) -> None:
        try:
            with _disk_errors("publish"):
                self._file.write(data)
        except BaseException:
            self.discard()
            raise
        self._sha256.update(data)
        self.received += len(data)

    def finish(self) -> None:
        """Makes the file durable and checks it against the header (size and sha256).

        Raises:
            InvalidArgumentError: naming the field that does not match; the upload is discarded.
        """
        try:
            if self.received != self.header.total_bytes:
                raise InvalidArgumentError(
                    f"data: {self.received} bytes received, header.total_bytes says {self.header.total_bytes}"
                )
            if self.header.sha256 and self._sha256.digest() != self.header.sha256:
                raise InvalidArgumentError(
                    "header.sha256: does not match the data received (it is the raw 32-byte digest, not hex)"
                )
            with _disk_errors("publish"):
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def evaluation_rank(header: parameter_pb2.WeightsHeader) -> tuple:
    """How ``best`` orders evaluated versions: confirmed ones above every unconfirmed one, then by
    return, then the newer first."""
    return (header.evaluation_confirmed, header.evaluation_return, header.version)


def named_tags(headers: dict[int, parameter_pb2.WeightsHeader]) -> dict[str, int]:
    """The tags publishers gave, each at the newest version given it."""
    named: dict[str, int] = {}
    for version in sorted(headers):
        named.update(dict.fromkeys(headers[version].tags, version))
    return named


def computed_tags(headers: dict[int, parameter_pb2.WeightsHeader]) -> dict[str, int]:
    """Every tag of a set of versions: the named ones, then ``latest``, ``best`` and ``solved``
    where they point somewhere."""
    tags = named_tags(headers)
    if headers:
        tags["latest"] = max(headers)
    scored = [h for h in headers.values() if h.HasField("evaluation_return")]
    if scored:
        tags["best"] = max(scored, key=evaluation_rank).version
    solved = [v for v, h in headers.items() if h.solved]
    if solved:
        tags["solved"] = min(solved)
    return tags


class WeightDirectory:
    """The versions in a store's directory and their tags, read-only: nothing is written, so a
    finished run's ``weights/`` can be listed and pulled from with no server."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._headers: dict[int, parameter_pb2.WeightsHeader] = {}
        self._cond = threading.Condition()
        self._load()

    def _load(self) -> None:
        for path in sorted(self.directory.glob("v*.json")):
            try:
                header = json_format.Parse(path.read_text(), parameter_pb2.WeightsHeader())
            except (OSError, json_format.ParseError) as error:
                log.warning("skipping %s: not a version header (%s)", path, error)
                continue
            if (self.directory / f"v{header.version:010d}.bin").exists():
                self._headers[header.version] = header

    @property
    def latest_version(self) -> int:
        with self._cond:
            return max(self._headers, default=0)

    def tags(self) -> dict[str, int]:
        with self._cond:
            return computed_tags(self._headers)

    def header(self, version: int = 0, tag: str = "") -> parameter_pb2.WeightsHeader:
        """The header of a version, or of the version a tag points at, with every tag pointing at it.

        Raises:
            NotFoundError: naming the tag or version, and what there is.
        """
        with self._cond:
            tags = computed_tags(self._headers)
            if tag:
                resolved = tags.get(tag)
                if resolved is None:
                    known = "; no version published yet" if not self._headers else f"; tags now: {sorted(tags)}"
                    raise NotFoundError(f"tag: {tag!r} points at no version{known}")
                version = resolved
            if version not in self._headers:
                raise NotFoundError(f"version: {version} is not retained; retained: {sorted(self._headers)}")
            header = parameter_pb2.WeightsHeader()
            header.CopyFrom(self._headers[version])
            header.tags[:] = [name for name, v in tags.items() if v == version]
            return header

    def pieces(self, version: int, piece_bytes: int) -> Iterator[bytes]:
        """The version's weights from disk, ``piece_bytes`` at a time (a version pruned meanwhile
        stays readable to a reader that has begun: the file is open)."""
        try:
            file = open(self.directory / f"v{version:010d}.bin", "rb")  # noqa: SIM115 (closed by the generator)
        except FileNotFoundError:
            raise NotFoundError(f"version: {version} was removed by retention") from None

        def each() -> Iterator[bytes]:
            with file:
                while piece := file.read(piece_bytes):
                    yield piece

        return each()

    def read(self, version: int) -> bytes:
        """The version's weights, whole."""
        return b"".join(self.pieces(version, 1 << 20))

    def headers(self) -> list[parameter_pb2.WeightsHeader]:
        """Every retained version's header, newest first."""
        with self._cond:
            versions = sorted(self._headers, reverse=True)
        return [self.header(v) for v in versions]


class WeightStore(WeightDirectory):
    """A directory of versions that takes publishes, evaluations, holds and tag deletions."""

    def __init__(self, directory: Path, keep: int, max_named_tags: int = 256, max_holds: int = 16):
        directory = Path(directory)
        try:  # found at start, not at the first publish
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".writable-", suffix=_TEMPORARY_SUFFIX):
                pass
        except OSError as error:
            raise ConfigError(
                f"directory: {directory} cannot be written ({error.strerror or error}); give a directory this "
                "process may write"
            ) from None
        for leftover in directory.glob(f"*{_TEMPORARY_SUFFIX}"):  # a publish a crash cut short
            log.info("removing %s, left by an unfinished write", leftover.name)
            leftover.unlink(missing_ok=True)
        super().__init__(directory)
        self.keep = keep
        self.max_named_tags = max_named_tags
        self.max_holds = max_holds
        self.last_evaluation: tuple[int, float] | None = None  # (version, return) last reported
        self._holds: dict[int, float] = {}  # version -> monotonic time its hold ends
        self._listeners: set[Callable[[], None]] = set()
        self._closed = False
        if self._headers:
            log.info("restored versions %s from %s", sorted(self._headers), self.directory)

    # -- reading -------------------------------------------------------------

    def header(self, version: int = 0, tag: str = "", hold_seconds: float = 0.0) -> parameter_pb2.WeightsHeader:
        """As :meth:`WeightDirectory.header`; with ``hold_seconds``, the version found is held (at once:
        no publish can prune it between the lookup and the hold)."""
        with self._cond:
            header = super().header(version, tag)
            if hold_seconds:
                self.hold(header.version, hold_seconds)
            return header

    def hold(self, version: int, seconds: float) -> None:
        """Keeps ``version`` from pruning for ``seconds`` (or until its evaluation is reported).

        Raises:
            InvalidArgumentError: ``seconds`` out of range; NotFoundError: the version is not retained;
            ResourceExhaustedError: ``max_holds`` other versions are held.
        """
        if not 0 < seconds <= MAX_HOLD_SECONDS:
            raise InvalidArgumentError(f"hold_seconds: {seconds} is not in (0, {MAX_HOLD_SECONDS:g}]")
        with self._cond:
            now = time.monotonic()
            self._holds = {v: end for v, end in self._holds.items() if end > now and v in self._headers}
            if version not in self._headers:
                raise NotFoundError(f"version: {version} is not retained; retained: {sorted(self._headers)}")
            if version not in self._holds and len(self._holds) >= self.max_holds:
                raise ResourceExhaustedError(
                    f"hold_seconds: {len(self._holds)} versions are held already (max_holds {self.max_holds}); "
                    "report their evaluations or let their holds end first"
                )
            self._holds[version] = now + seconds

    def versions_after(self, version: int, timeout: float) -> list[int]:
        """Versions newer than ``version``, waiting up to ``timeout`` for one."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or max(self._headers, default=0) > version, timeout)
            if self._closed:
                raise UnavailableError("parameter service is shutting down")
            return sorted(v for v in self._headers if v > version)

    # -- writing -------------------------------------------------------------

    def begin(self, header: parameter_pb2.WeightsHeader) -> Upload:
        """Starts a publish: checks the header's tags and opens the file its pieces go to.

        Raises:
            InvalidArgumentError: a tag in the header is reserved or malformed.
            ResourceExhaustedError: the tags would pass ``max_named_tags``, or the disk is full.
        """
        tags = check_tags(header.tags)
        self._check_room_for(tags)
        return Upload(self.directory, header, tags)

    def commit(self, upload: Upload) -> int:
        """Makes a finished upload the next version and wakes the watchers; returns its number.

        Raises:
            InvalidArgumentError: the data does not match the header; ResourceExhaustedError: the disk is full.
        """
        upload.finish()
        with self._cond:
            try:
                self._check_room_for(upload.tags)  # (again: another publish may have named tags meanwhile)
                version = max(self._headers, default=0) + 1
                stored = parameter_pb2.WeightsHeader()
                stored.CopyFrom(upload.header)
                stored.version = version
                stored.tags[:] = upload.tags  # the names given; header() reports every tag pointing here
                for field in ("evaluation_return", "evaluation_episodes", "evaluation_confirmed", "solved"):
                    stored.ClearField(field)  # the service's to set, not the publisher's
                stored.created.GetCurrentTime()
                with _disk_errors("publish"):
                    os.rename(upload.path, self.directory / f"v{version:010d}.bin")
                try:
                    _write_atomic(self.directory / f"v{version:010d}.json", json_format.MessageToJson(stored).encode())
                except BaseException:
                    (self.directory / f"v{version:010d}.bin").unlink(missing_ok=True)
                    raise
            except BaseException:
                upload.discard()
                raise
            self._headers[version] = stored
            self._prune()
            self._cond.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return version

    def publish(self, header: parameter_pb2.WeightsHeader, data: bytes) -> int:
        """Stores a new version from bytes in hand (see :meth:`begin` and :meth:`commit`)."""
        upload = self.begin(header)
        upload.write(data)
        return self.commit(upload)

    def _check_room_for(self, tags: list[str]) -> None:
        with self._cond:
            named = named_tags(self._headers)
            new = [tag for tag in tags if tag not in named]
            if len(named) + len(new) > self.max_named_tags:
                raise ResourceExhaustedError(
                    f"header.tags: {len(named)} named tags exist and {len(new)} more would pass max_named_tags "
                    f"({self.max_named_tags}); delete unused ones first (DeleteTag)"
                )

    def delete_tag(self, tag: str) -> int:
        """Removes a named tag; returns the version it pointed at (now retained as any other).

        Raises:
            InvalidArgumentError: ``latest``, ``best`` or ``solved``; NotFoundError: the tag points at no version.
        """
        if tag in RESERVED_TAGS:
            raise InvalidArgumentError(f"tag: {tag!r} is set by the service and cannot be deleted")
        with self._cond:
            version = named_tags(self._headers).get(tag)
            if version is None:
                raise NotFoundError(f"tag: {tag[:140]!r} points at no version")
            for number, header in self._headers.items():
                if tag in header.tags:
                    header.tags.remove(tag)
                    _write_atomic(self.directory / f"v{number:010d}.json", json_format.MessageToJson(header).encode())
            self._prune()
            return version

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Calls ``listener()`` (from the publishing thread) after each publish and at close;
        returns the function that stops it. Watchers on an event loop wait this way, with no thread."""
        with self._cond:
            self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    def report_evaluation(
        self, version: int, evaluation_return: float, episodes: int = 0, confirmed: bool = False, solved: bool = False
    ) -> tuple[int, int]:
        """Records a version's evaluation and ends its hold; returns (best, solved) versions (0: none).

        A version's confirmed evaluation is not replaced by a later unconfirmed one.

        Raises:
            NotFoundError: the version is not retained.
        """
        with self._cond:
            if version not in self._headers:
                raise NotFoundError(f"version: {version} is not retained; retained: {sorted(self._headers)}")
            header = self._headers[version]
            if confirmed or not header.evaluation_confirmed:
                header.evaluation_return = evaluation_return
                header.evaluation_episodes = episodes
                header.evaluation_confirmed = confirmed
            header.solved = header.solved or solved
            self.last_evaluation = (version, evaluation_return)
            _write_atomic(self.directory / f"v{version:010d}.json", json_format.MessageToJson(header).encode())
            self._holds.pop(version, None)
            self._prune()
            tags = computed_tags(self._headers)
            return tags.get("best", 0), tags.get("solved", 0)

    def _prune(self) -> None:
        now = time.monotonic()
        held = {v for v, end in self._holds.items() if end > now}
        tags = computed_tags(self._headers)  # latest, best, solved and the named tags
        keep = set(sorted(self._headers)[-self.keep :]) | set(tags.values()) | held
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
    temporary = path.with_suffix(path.suffix + _TEMPORARY_SUFFIX)
    try:
        with _disk_errors("publish"), open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.rename(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _disk_errors(what: str):
    """A full disk or quota becomes RESOURCE_EXHAUSTED, a status the publisher can act on."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceExhaustedError(
                f"{what}: the parameter store's disk is full ({error.strerror}); nothing was stored, free space "
                "or lower keep_versions and publish again"
            ) from None
        raise
