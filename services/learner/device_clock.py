"""How busy the learner keeps its device: the share of wall time its updates occupy it.

On a GPU an update's kernels run after the Python call that launched them returns, so its wall
time says little; a pair of CUDA events around each update times the device itself, read once
the events have passed (no synchronisation is added). On the CPU the device is the update's own
thread, and its wall time is the answer. The figure is what feeding a GPU is judged by: an
idle share means actors, replay or the batch pipeline keep the learner waiting.
"""

from __future__ import annotations

import collections
import threading
import time

import torch


class DeviceClock:
    """Sums the device time of the updates between :meth:`start` and :meth:`stop`."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._busy = 0.0
        self._since = time.monotonic()
        self._began: float | torch.cuda.Event = 0.0
        self._pending: collections.deque = collections.deque()  # CUDA (start, end) events not yet read
        self._lock = threading.Lock()

    def restart(self) -> None:
        """Counts from now (the training loop's start), forgetting what came before."""
        with self._lock:
            self._busy, self._since = 0.0, time.monotonic()
            self._pending.clear()

    def start(self) -> None:
        if self.cuda:
            self._began = torch.cuda.Event(enable_timing=True)
            self._began.record()
        else:
            self._began = time.perf_counter()

    def stop(self) -> None:
        if not self.cuda:
            with self._lock:
                self._busy += time.perf_counter() - self._began
            return
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        with self._lock:
            self._pending.append((self._began, end))
        if len(self._pending) > 256:  # nobody reads the figure: keep the events few
            self._collect()

    def _collect(self) -> None:
        with self._lock:
            while self._pending and self._pending[0][1].query():
                began, end = self._pending.popleft()
                self._busy += began.elapsed_time(end) / 1000.0

    @property
    def busy_seconds(self) -> float:
        """Device seconds spent in updates since the start (those the device has finished)."""
        if self.cuda:
            self._collect()
        return self._busy

    def busy_share(self) -> float:
        """``busy_seconds`` over the wall time since the start, at most 1."""
        busy = self.busy_seconds
        return min(1.0, busy / max(time.monotonic() - self._since, 1e-9))
