"""Process plumbing in one place: what ``rlrings up`` and the few-shot runner use to start,
watch and stop service processes, and what every service process does at start and exit.

- :func:`free_port` and :class:`ServiceProcess` (a service as a child process, from a
  config file in the run directory, with its log);
- :func:`follow_supervisor`: a child asks the kernel for SIGTERM when its supervisor dies,
  even by SIGKILL, so that no service outlives ``rlrings up``;
- :func:`limit_malloc_arenas`: glibc's arenas capped before threads start;
- :func:`usable_cores`: the cores this process may run on (its affinity and a container's quota);
- :func:`finish_process`: the exit path of ring members (torch.distributed's gloo threads
  can abort the interpreter's teardown, so such a process exits at once).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
_exit_hard = False


_RECENT_PORTS = 4096
_recent_ports: collections.OrderedDict[int, None] = collections.OrderedDict()
_ports_lock = threading.Lock()


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may keep busy: its CPU affinity, capped by a container's CPU quota
    (cgroup v2's ``cpu.max``, a pod's ``resources.limits.cpu``) rounded up, at least 1.
    ``os.cpu_count()`` sees the whole node instead, and threads sized by it oversubscribe a pod."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with contextlib.suppress(OSError, ValueError):
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, -(-int(quota) // int(period)))
    return max(1, cores)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` now and that this process has not handed out among its
    last few thousand. The kernel may give a just-released port out again, and a plan that takes
    several ports before any service binds them would then give two services one port (seen:
    an actor refused because the parameter service had its port)."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
            if port not in _recent_ports:
                break
        _recent_ports[port] = None
        _recent_ports.move_to_end(port)
        while len(_recent_ports) > _RECENT_PORTS:
            _recent_ports.popitem(last=False)
        return port


@dataclass
class ServiceProcess:
    """A service run as a child process from a config file in the run directory."""

    name: str
    module: str
    config: dict
    run_dir: Path
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    """time.monotonic() of the last start."""
    quick_deaths: int = 0
    """Deaths in a row soon after a start, not by SIGKILL: a crash loop (see the supervisor)."""
    niceness: int = 0
    """Added CPU niceness once the service serves: the viewer serves people and yields to training.
    It starts at normal priority: imports niced under a busy mesh took minutes (see :func:`yield_cpu`)."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables on top of this process's (a learner rank's place in its ring)."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.config['port']}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.log"

    def start(self) -> ServiceProcess:
        config_path = self.run_dir / "configs" / f"{self.name}.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(json.dumps(self.config, indent=2, default=str))  # JSON is YAML
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.started_at = time.monotonic()
        with open(self.log_path, "ab") as log_file:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, "--config", str(config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    "OMP_NUM_THREADS": "1",
                    **self.env,
                    SUPERVISOR_ENV: str(os.getpid()),
                    **({NICENESS_ENV: str(self.niceness)} if self.niceness else {}),
                },
            )  # (no preexec_fn: forking a threaded process that holds gRPC channels can crash it)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
                self.process.kill()
        return self.process.wait()


def _glibc() -> ctypes.CDLL | None:
    """The C library, where it is Linux's (mallopt and prctl are called through it)."""
    return ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Caps glibc's malloc arenas (unless MALLOC_ARENA_MAX says otherwise).

    glibc gives busy threads arenas of their own, up to 8 per core, and memory
    freed in one arena is not reused by another. A server's gRPC threads then
    grow its resident memory in steps under sustained load. ``make load`` on
    replay: +148% in 5 minutes with glibc's default, -2.8% with 2 arenas, and
    the same insert throughput either way. Call before threads start.
    """
    libc = _glibc()
    if os.environ.get("MALLOC_ARENA_MAX") or libc is None or not hasattr(libc, "mallopt"):
        return  # (musl has no mallopt, and no arenas to cap)
    libc.mallopt(-8, arenas)  # M_ARENA_MAX


SUPERVISOR_ENV = "RLRINGS_SUPERVISOR_PID"
NICENESS_ENV = "RLRINGS_NICENESS"
"""Set by ``rlrings up`` on every service it starts: the supervisor's process id."""


def follow_supervisor() -> None:
    """A service started by ``rlrings up`` asks the kernel for SIGTERM when its
    supervisor dies, even by SIGKILL, so that no service outlives it; and exits
    at once if the supervisor is already gone."""
    supervisor, libc = os.environ.get(SUPERVISOR_ENV), _glibc()
    if not supervisor or libc is None:
        return
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(supervisor):
        sys.exit(0)


def yield_cpu() -> None:
    """Lowers this process's CPU priority by the niceness its supervisor asked for, if any.

    A service calls it once it serves. Niced from its first instruction, a restarted viewer
    needed 45-120 s to import torch beside a learner and actors that keep both cores busy.
    """
    niceness = int(os.environ.get(NICENESS_ENV, "0") or 0)
    if niceness <= 0:
        return
    # Linux keeps a niceness per thread, and threads inherit their creator's: every thread running now
    # (gRPC's, the page's) is reniced, and threads started later inherit from the main one.
    tasks = Path("/proc/self/task")
    for tid in [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]:
        with contextlib.suppress(OSError):
            lower_thread_priority(tid, niceness)


def lower_thread_priority(tid: int, niceness: int) -> None:
    """Adds ``niceness`` to thread ``tid``'s (0: the calling one). Linux keeps a niceness per
    thread, and threads inherit their creator's.

    Raises:
        OSError: the system refused.
    """
    os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)


def exit_hard_at_finish() -> None:
    """Called by a process that joined a torch.distributed group: :func:`finish_process` then
    exits at once."""
    global _exit_hard
    _exit_hard = True


def finish_process(code: int) -> int:
    """Returns ``code``, or, in a process that joined a torch.distributed
    group, exits with it at once (after flushing output).

    gloo's worker threads can abort the interpreter's final teardown with
    "terminate called without an active exception" even after
    ``destroy_process_group`` (a known PyTorch problem), which would turn a
    clean exit into SIGABRT; by now the learner has written its checkpoint.
    """
    if not _exit_hard:
        return code
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
