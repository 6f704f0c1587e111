"""Requests of every stream gathered into one forward pass on the device.

The event loop hands each request's observations to :meth:`Batcher.submit` and awaits the
future it returns; one thread of its own takes what has arrived (up to ``max_batch``
observations, waiting at most ``max_wait`` after the first), stacks it per model, runs one
forward pass each and answers every future. The newest weights are swapped in between passes,
so an actor's data is at most one publish behind the learner.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch
from prometheus_client import Counter, Histogram

from rlrings.clients.parameter import ParameterClient, WeightsFollower
from rlrings.core.errors import NotFoundError, UnavailableError
from rlrings.core.models import ModelSpec, build_model, load_weights
from rlrings.rpc import wire

log = logging.getLogger(__name__)

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, float("inf"))
_SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, float("inf"))


@dataclass
class Served:
    """A model on the device, as it answers requests."""

    version: int
    spec: ModelSpec
    network: torch.nn.Module
    proto: object = None
    """Its ``ModelSpec`` message, sent with a stream's first answer and when it changes."""
    refresh: Callable[[], None] | None = None
    """For the newest model: loads newer weights in place (called by the batcher thread, between passes)."""


@dataclass
class Request:
    observations: np.ndarray
    served: Served
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.perf_counter)


class Models:
    """The newest published model (followed in the background) and a few pinned by tag or version."""

    def __init__(self, parameters: ParameterClient, device: torch.device, pinned: int, tag_seconds: float):
        self.parameters, self.device, self.tag_seconds = parameters, device, tag_seconds
        self.follower = WeightsFollower(parameters)
        self._newest: Served | None = None
        self._pinned: collections.OrderedDict[int, Served] = collections.OrderedDict()
        self._tags: dict[str, tuple[int, float]] = {}
        self._max_pinned = pinned
        self._lock = threading.Lock()

    def _build(self, header, data: bytes) -> Served:
        spec = wire.model_spec_from_proto(header.model)
        network = build_model(spec)
        load_weights(network, data)
        return Served(header.version, spec, network.to(self.device).eval(), header.model)

    def newest(self) -> Served:
        """The newest model: built from the first weights that arrive; later versions are loaded into
        the same network between passes (:meth:`_refresh`), not built again at every publish.

        Raises:
            UnavailableError: nothing published yet.
        """
        if self._newest is not None:
            return self._newest
        latest = self.follower.latest()
        if latest is None:
            raise UnavailableError(
                f"no weights published yet at {self.parameters.address}: the learner publishes its first at start"
            )
        with self._lock:
            if self._newest is None:
                served = self._build(*latest)
                served.refresh = self._refresh
                self._newest = served
            return self._newest

    def _refresh(self) -> None:
        latest, served = self.follower.latest(), self._newest
        if latest is None or latest[0].version <= served.version:
            return
        header, data = latest
        spec = wire.model_spec_from_proto(header.model)
        if spec != served.spec:  # another model was published: build it (rare: a new run on the same service)
            rebuilt = self._build(header, data)
            served.spec, served.network, served.proto = rebuilt.spec, rebuilt.network, rebuilt.proto
        else:
            load_weights(served.network, data)
        served.version = header.version

    def pinned(self, tag: str, version: int) -> Served:
        """The model a request pins (blocking: it may fetch).

        Raises:
            NotFoundError: no such tag or version.
        """
        now = time.monotonic()
        if tag:
            known = self._tags.get(tag)
            if known is not None and now - known[1] < self.tag_seconds:
                version = known[0]
        with self._lock:
            if version and version in self._pinned:
                self._pinned.move_to_end(version)
                return self._pinned[version]
        try:
            header, data = self.parameters.fetch(tag=tag, version=0 if tag else version, timeout=30)
        except NotFoundError:
            raise NotFoundError(
                f"tag: no version tagged {tag!r}" if tag else f"version: no version {version}"
            ) from None
        served = self._build(header, data)
        with self._lock:
            if tag:
                self._tags[tag] = (header.version, now)
            self._pinned[header.version] = served
            while len(self._pinned) > self._max_pinned:
                self._pinned.popitem(last=False)
        return served

    def close(self) -> None:
        self.follower.close()


class Batcher:
    """One thread that turns the queued requests into forward passes."""

    def __init__(self, device: torch.device, max_batch: int, max_wait_seconds: float, registry):
        self.device, self.max_batch, self.max_wait = device, max_batch, max_wait_seconds
        self._queue: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._held: Request | None = None  # one that did not fit the last batch
        self.busy_seconds = 0.0
        self.started = time.monotonic()
        self.batch_size = Histogram("rlrings_inference_batch_size", "Observations per forward pass.",
                                    buckets=_SIZE_BUCKETS, registry=registry)  # fmt: skip
        self.queue_wait = Histogram("rlrings_inference_queue_wait_seconds", "From a request's arrival to its pass.",
                                    buckets=_SECONDS_BUCKETS, registry=registry)  # fmt: skip
        self.latency = Histogram("rlrings_inference_latency_seconds", "From a request's arrival to its answer.",
                                 buckets=_SECONDS_BUCKETS, registry=registry)  # fmt: skip
        self.observations = Counter("rlrings_inference_observations", "Observations answered.", registry=registry)
        self._thread = threading.Thread(target=self._run, name="inference-batcher", daemon=True)
        self._stopped = threading.Event()

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def submit(self, observations: np.ndarray, served: Served) -> Future:
        request = Request(observations, served)
        self._queue.put(request)
        return request.future

    def busy_share(self) -> float:
        """Share of the time since start the device spent in forward passes (and their copies)."""
        return self.busy_seconds / max(1e-9, time.monotonic() - self.started)

    def stop(self) -> None:
        self._stopped.set()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _gather(self) -> list[Request]:
        first = self._held or self._queue.get()
        self._held = None
        if first is None:
            return []
        batch, count = [first], len(first.observations)
        deadline = time.perf_counter() + self.max_wait
        while count < self.max_batch:
            try:
                timeout = deadline - time.perf_counter()
                request = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                self._queue.put(None)
                break
            if count + len(request.observations) > self.max_batch:
                self._held = request  # the next pass starts with it
                break
            batch.append(request)
            count += len(request.observations)
        return batch

    def _run(self) -> None:
        while not self._stopped.is_set():
            batch = self._gather()
            if not batch:
                continue
            begin = time.perf_counter()
            by_model: dict[int, list[Request]] = collections.defaultdict(list)
            for request in batch:
                by_model[id(request.served)].append(request)
            for requests in by_model.values():
                try:
                    self._forward(requests)
                except Exception as error:  # answered, not lost: each caller gets the error
                    log.exception("a forward pass failed")
                    for request in requests:
                        if not request.future.done():
                            request.future.set_exception(error)
            self.busy_seconds += time.perf_counter() - begin

    def _forward(self, requests: list[Request]) -> None:
        served = requests[0].served
        if served.refresh is not None:
            served.refresh()
        version, proto = served.version, served.proto  # (what answers this pass, whatever comes next)
        begin = time.perf_counter()
        sizes = [len(request.observations) for request in requests]
        stacked = np.concatenate([request.observations for request in requests])  # (a writable copy)
        with torch.inference_mode():
            policy, value = served.network(torch.from_numpy(stacked).to(self.device, non_blocking=True))
            policy = policy.float().cpu().numpy()
            value = (value.float().cpu().numpy() if value is not None
                     else np.zeros(len(stacked), np.float32))  # fmt: skip
        self.batch_size.observe(len(stacked))
        self.observations.inc(len(stacked))
        start, answered = 0, time.perf_counter()
        for request, size in zip(requests, sizes, strict=True):
            self.queue_wait.observe(begin - request.arrived)
            self.latency.observe(answered - request.arrived)
            request.future.set_result((policy[start : start + size], value[start : start + size], version, proto))
            start += size
