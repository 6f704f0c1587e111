"""The learner's ring: data-parallel ranks that average their gradients.

One small interface, :class:`Ring`, with three implementations:

- :class:`LocalRing`: one process, nothing to exchange (the default);
- :class:`TorchRing`: ``torch.distributed`` (gloo on CPU, NCCL on GPU);
- :class:`HorovodRing`: Horovod's ``DistributedOptimizer`` (gloo on CPU, NCCL on GPU).

Every rank learns its place from the same environment variables, whoever
starts it (``rlrings up``, the Helm chart's StatefulSet, torchrun):
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, and
``LOCAL_RANK``/``LOCAL_WORLD_SIZE`` where several ranks share a host. Rank 0
hosts the rendezvous on ``MASTER_PORT``: torch's TCP store, or Horovod's HTTP
rendezvous server (unless ``horovodrun`` already serves one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import torch
from torch import nn

from rlrings.core.errors import ConfigError, UnavailableError
from rlrings.ops import processes

log = logging.getLogger(__name__)

RingBackend = Literal["none", "horovod", "torch"]
HOROVOD_HINT = (
    "Horovod is not installed in this environment. `make horovod` builds Horovod 0.28.1 for the installed "
    "PyTorch (cached under ~/.cache/rlrings/wheels) and installs it; or use the torch backend (--ring torch)."
)


class RingBrokenError(UnavailableError):
    """A peer left the ring (it crashed or was stopped) or did not answer in
    time. The rank stops; restarted together, the ranks resume from the last
    checkpoint."""


@contextlib.contextmanager
def _collective(what: str) -> Iterator[None]:
    """Turns a backend's failure inside a collective into :class:`RingBrokenError`."""
    try:
        yield
    except RuntimeError as error:  # gloo, NCCL and Horovod all raise RuntimeError subclasses
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RingBrokenError(f"ring: {what} failed, a peer has left or timed out: {first_line[:300]}") from error


@dataclass(frozen=True)
class RingPlace:
    """Where this process sits in the ring, read from the environment."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> RingPlace:
        """Raises:
        ConfigError: a variable is missing or not a number, naming it."""

        def number(name: str, default: int | None = None) -> int:
            raw = environ.get(name)
            if raw is None:
                if default is None:
                    raise ConfigError(f"ring: environment variable {name} is not set; every rank needs it")
                return default
            try:
                return int(raw)
            except ValueError:
                raise ConfigError(f"ring: environment variable {name}={raw!r} is not a whole number") from None

        place = cls(
            rank=number("RANK"),
            size=number("WORLD_SIZE"),
            local_rank=number("LOCAL_RANK", 0),
            local_size=number("LOCAL_WORLD_SIZE", 1),
            master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
            master_port=number("MASTER_PORT", 29500),
        )
        if not 0 < place.master_port < 65536:
            raise ConfigError(f"ring: MASTER_PORT={place.master_port} is not a port number")
        if not 0 <= place.rank < place.size:
            raise ConfigError(f"ring: RANK={place.rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={place.size})")
        if not 0 <= place.local_rank < place.local_size or place.size % place.local_size:
            raise ConfigError(
                f"ring: LOCAL_RANK={place.local_rank} and LOCAL_WORLD_SIZE={place.local_size} do not fit "
                f"WORLD_SIZE={place.size}"
            )
        return place


def local_ring_environment(rank: int, size: int, master_port: int) -> dict[str, str]:
    """The variables that place rank ``rank`` of ``size`` ranks on this host,
    meeting over loopback at ``master_port`` (what the Helm chart gives each pod)."""
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(size),
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(master_port),
        "GLOO_SOCKET_IFNAME": "lo",
        "HOROVOD_GLOO_IFACE": "lo",
    }


class Ring(ABC):
    """What a learner rank needs from its peers."""

    backend: RingBackend
    rank: int = 0
    size: int = 1

    def __init__(self) -> None:
        self.communication_seconds = 0.0
        """Time spent waiting for gradient averages, summed since start."""

    @property
    def is_root(self) -> bool:
        """Rank 0 publishes weights and writes checkpoints."""
        return self.rank == 0

    @abstractmethod
    def average_gradients(self, parameters: Iterable[nn.Parameter], name: str = "model") -> None:
        """After ``backward``: replaces the gradients of ``parameters`` with their mean over
        the ring, in one collective. Clipping and stepping are the algorithm's, so an
        algorithm with several optimizers calls this once per optimizer (``name`` tells
        the collectives apart; every rank must call in the same order)."""

    @abstractmethod
    def broadcast_object(self, value: Any) -> Any:
        """Returns rank 0's ``value`` (any picklable object) on every rank."""

    @abstractmethod
    def allreduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of a small float tensor over the ring."""

    @abstractmethod
    def barrier(self) -> None:
        """Returns once every rank has called it."""

    @abstractmethod
    def close(self) -> None:
        """Leaves the ring."""

    def broadcast_state(self, learning, step: int) -> int:
        """Makes every rank's ``learning`` (an algorithm's learning half) hold rank 0's
        modules, optimizers and counters; returns rank 0's step."""
        if self.size == 1:
            return step
        state = self.broadcast_object(_to_cpu(learning.state_dict()) if self.is_root else None)
        if not self.is_root:
            learning.load_state_dict(state)
        return int(self.broadcast_object(step))

    def agree(self, stop: bool, stats: Mapping[str, float]) -> tuple[bool, dict[str, float]]:
        """One small allreduce per update: whether any rank wants to stop (so
        all ranks leave the loop after the same update) and the mean of
        every rank's loss terms."""
        if self.size == 1:
            return stop, dict(stats)
        values = self.allreduce_mean(torch.tensor([float(stop), *stats.values()], dtype=torch.float64))
        return bool(values[0] > 0), dict(zip(stats, values[1:].tolist()))


def _to_cpu(value):
    """``value`` (nested dicts and lists of tensors) with every tensor on the CPU, to pickle."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(item) for item in value)
    return value


def _flat_gradients(parameters: Iterable[nn.Parameter]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    grads = [p.grad for p in parameters if p.grad is not None]
    return grads, (torch.cat([g.reshape(-1) for g in grads]) if grads else None)


def _unflatten(grads: list[torch.Tensor], flat: torch.Tensor) -> None:
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


class LocalRing(Ring):
    """A ring of one: the single-process learner."""

    backend = "none"

    def average_gradients(self, parameters, name="model"):
        pass

    def broadcast_object(self, value):
        return value

    def allreduce_mean(self, values):
        return values

    def barrier(self):
        pass

    def close(self):
        pass


class TorchRing(Ring):
    """``torch.distributed`` with an ``env://`` rendezvous on rank 0.

    Gradients are averaged with one allreduce of a flat buffer after
    ``backward``, so clipping sees the averaged gradient, exactly as one
    process would on the whole batch.
    """

    backend = "torch"

    def __init__(self, place: RingPlace, device: torch.device, timeout_seconds: float):
        super().__init__()
        import torch.distributed as dist

        self._dist = dist
        self.rank, self.size = place.rank, place.size
        self.device = device
        os.environ.setdefault("MASTER_ADDR", place.master_addr)
        os.environ.setdefault("MASTER_PORT", str(place.master_port))
        backend = "nccl" if device.type == "cuda" else "gloo"
        log.info("ring: torch.distributed (%s), rank %d of %d, store on %s:%d", backend, self.rank, self.size,
                 place.master_addr, place.master_port)  # fmt: skip
        with _collective(f"joining at {place.master_addr}:{place.master_port} (timeout {timeout_seconds:g}s)"):
            dist.init_process_group(
                backend,
                init_method="env://",
                rank=place.rank,
                world_size=place.size,
                timeout=timedelta(seconds=timeout_seconds),
            )
        processes.exit_hard_at_finish()

    def average_gradients(self, parameters, name="model"):
        grads, flat = _flat_gradients(parameters)
        if flat is None:
            return
        started = time.perf_counter()
        with _collective("gradient allreduce"):
            self._dist.all_reduce(flat)
        _unflatten(grads, flat.div_(self.size))
        self.communication_seconds += time.perf_counter() - started

    def broadcast_object(self, value):
        box = [value]
        with _collective("broadcast"):
            self._dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def allreduce_mean(self, values):
        values = values.to(self.device)
        with _collective("allreduce"):
            self._dist.all_reduce(values)
        return (values / self.size).cpu()

    def barrier(self):
        with _collective("barrier"):
            self._dist.barrier()

    def close(self):
        if self._dist.is_initialized():
            self._dist.destroy_process_group()


class HorovodRing(Ring):
    """Horovod over gloo (NCCL for GPU tensors where Horovod was built with it).

    Gradients are averaged with one named in-place allreduce of a flat buffer per
    optimizer after ``backward`` (rather than Horovod's ``DistributedOptimizer``,
    which wraps exactly one optimizer), so algorithms with several optimizers and
    their own clipping run on it as on the torch backend.
    """

    backend = "horovod"

    def __init__(self, place: RingPlace | None, timeout_seconds: float):
        """``place`` None: started by ``horovodrun``, whose driver serves the rendezvous."""
        super().__init__()
        try:
            import horovod.torch as hvd
        except ImportError as error:
            raise ConfigError(f"ring: horovod: {HOROVOD_HINT} ({error})") from None
        self._hvd = hvd
        self._rendezvous = None if place is None else _horovod_environment(place, timeout_seconds)
        where = os.environ["HOROVOD_GLOO_RENDEZVOUS_ADDR"] + ":" + os.environ["HOROVOD_GLOO_RENDEZVOUS_PORT"]
        with _collective(f"joining at {where} (timeout {timeout_seconds:g}s)"):
            hvd.init()
        self.rank, self.size = hvd.rank(), hvd.size()
        log.info("ring: horovod (gloo), rank %d of %d", self.rank, self.size)

    def average_gradients(self, parameters, name="model"):
        grads, flat = _flat_gradients(parameters)
        if flat is None:
            return
        started = time.perf_counter()
        with _collective("gradient allreduce"):
            self._hvd.allreduce_(flat, op=self._hvd.Average, name=f"rlrings.gradients.{name}")
        _unflatten(grads, flat)
        self.communication_seconds += time.perf_counter() - started

    def broadcast_object(self, value):
        # An explicit name: Horovod's default is the type's name, which differs where only rank 0 has the value.
        with _collective("broadcast"):
            return self._hvd.broadcast_object(value, root_rank=0, name="rlrings.object")

    def allreduce_mean(self, values):
        with _collective("allreduce"):
            return self._hvd.allreduce(values, op=self._hvd.Average, name="rlrings.agree")

    def barrier(self):
        with _collective("barrier"):
            self._hvd.barrier()

    def close(self):
        self._hvd.shutdown()
        if self._rendezvous is not None:  # once: close() may be called again at the end of a stop
            server, self._rendezvous = self._rendezvous, None
            server.shutdown()
            server.server_close()


def _horovod_environment(place: RingPlace, timeout_seconds: float):
    """Sets the ``HOROVOD_*`` variables that ``horovodrun`` would, from the
    ring's own contract; on rank 0 also starts the rendezvous server on
    ``MASTER_PORT``. Returns that server (rank 0) or None."""
    server = None
    if place.rank == 0:
        from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer
        from horovod.runner.util.threads import in_thread

        server = RendezvousHTTPServer(("", place.master_port), RendezvousHandler, False)
        in_thread(target=server.serve_forever)
    else:
        _wait_for_rendezvous(place, timeout_seconds)
    os.environ.update(
        {
            "HOROVOD_CONTROLLER": "gloo",
            "HOROVOD_CPU_OPERATIONS": "gloo",
            "HOROVOD_GLOO_RENDEZVOUS_ADDR": place.master_addr,
            "HOROVOD_GLOO_RENDEZVOUS_PORT": str(place.master_port),
            "HOROVOD_GLOO_TIMEOUT_SECONDS": str(int(timeout_seconds)),
            "HOROVOD_RANK": str(place.rank),
            "HOROVOD_SIZE": str(place.size),
            "HOROVOD_LOCAL_RANK": str(place.local_rank),
            "HOROVOD_LOCAL_SIZE": str(place.local_size),
            "HOROVOD_CROSS_RANK": str(place.rank // place.local_size),
            "HOROVOD_CROSS_SIZE": str(place.size // place.local_size),
            "HOROVOD_HOSTNAME": os.environ.get("HOROVOD_HOSTNAME", socket.gethostname()),
        }
    )
    return server


def _wait_for_rendezvous(place: RingPlace, timeout_seconds: float) -> None:
    """Waits until rank 0's rendezvous server accepts connections. Horovod's own client gives up
    after a few quick retries and aborts the process: a rank that imported faster than rank 0 (a
    busy machine) then died with "HTTP GET request failed too many times", taking rank 0 with it."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with socket.create_connection((place.master_addr, place.master_port), timeout=1.0):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise RingBrokenError(
                    f"ring: rank 0's rendezvous at {place.master_addr}:{place.master_port} did not answer "
                    f"within {timeout_seconds:g}s ({error.strerror or error})"
                ) from None
            time.sleep(0.1)


def horovod_available() -> bool:
    try:
        import horovod.torch  # noqa: F401
    except ImportError:
        return False
    return True


def connect(backend: RingBackend, device: torch.device | None = None, timeout_seconds: float = 300.0) -> Ring:
    """The ring this process belongs to; blocks until every rank has joined.

    Raises:
        ConfigError: the environment does not describe a ring, or the backend is not installed.
    """
    if backend == "none":
        return LocalRing()
    if backend == "horovod" and "HOROVOD_GLOO_RENDEZVOUS_ADDR" in os.environ:  # under horovodrun
        return HorovodRing(None, timeout_seconds)
    place = RingPlace.from_environ()
    if backend == "torch":
        return TorchRing(place, device or torch.device("cpu"), timeout_seconds)
    if backend == "horovod":
        return HorovodRing(place, timeout_seconds)
    raise ConfigError(f"ring: unknown backend {backend!r}; choose none, horovod or torch")
