"""Batches moved to the learner's device ahead of the update that needs them.

Replay's sampler already draws ``prefetch`` batches ahead over the network; this puts the
next step, host arrays to device tensors, on a thread of its own, so the training thread
only computes. On CUDA each batch is copied into pinned (page-locked) memory and sent with
``non_blocking`` copies on a side stream; the training stream waits on that copy's event
only when it takes the batch, so the copy of batch k+1 runs while update k computes. On
the CPU the thread still does the decoding copy (``np.array`` of replay's read-only
buffers) off the training thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

_END = object()


@dataclass
class DeviceBatch:
    """One sampled batch on the device: columns ``[B, T, ...]`` and importance weights ``[B]``,
    with the host-side keys and policy versions replay gave."""

    columns: dict[str, torch.Tensor]
    weights: torch.Tensor
    keys: np.ndarray
    policy_versions: np.ndarray
    ready: torch.cuda.Event | None = None


def to_device(columns: dict[str, np.ndarray], device: torch.device, stream=None) -> dict[str, torch.Tensor]:
    """Host arrays to tensors on ``device``: through pinned memory and ``non_blocking`` copies on
    ``stream`` for CUDA, one copy (replay's buffers are read-only) for the CPU."""
    if device.type != "cuda":
        return {name: torch.from_numpy(np.array(value)).to(device) for name, value in columns.items()}
    out = {}
    with torch.cuda.stream(stream):
        for name, value in columns.items():
            value = np.asarray(value)
            pinned = torch.empty(value.shape, dtype=torch.from_numpy(np.empty(0, value.dtype)).dtype, pin_memory=True)
            pinned.numpy()[...] = value
            out[name] = pinned.to(device, non_blocking=True)
    return out


class DeviceBatches:
    """Iterates ``batches`` (replay's sampled batches) as :class:`DeviceBatch`, ``depth`` ahead;
    0: each batch is moved when the update asks for it, on the update's thread (no batch waits
    converted, so none is drawn earlier than it must be)."""

    def __init__(self, batches: Iterable, device: torch.device, depth: int = 2):
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" and depth else None
        self._source = iter(batches)
        self._closed = threading.Event()
        self._thread = None
        if depth:
            self._queue: queue.Queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._run, name="learner-prefetch", daemon=True)
            self._thread.start()

    def _convert(self, batch) -> DeviceBatch:
        columns = to_device(batch.columns, self.device, self.stream)
        weights = to_device({"w": np.asarray(batch.importance_weights, np.float32)}, self.device, self.stream)["w"]
        ready = None
        if self.stream is not None:
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return DeviceBatch(columns, weights, np.asarray(batch.keys), np.asarray(batch.policy_versions), ready)

    def _put(self, item) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for batch in self._source:
                if not self._put(self._convert(batch)):
                    return
        except BaseException as error:  # the sampler's errors reach the training thread
            self._put(error)
            return
        self._put(_END)

    def __iter__(self) -> Iterator[DeviceBatch]:
        if self._thread is None:
            for batch in self._source:
                yield self._convert(batch)
            return
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if item.ready is not None:  # the training stream waits for this batch's copy, not for all
                current = torch.cuda.current_stream(self.device)
                current.wait_event(item.ready)
                for tensor in (*item.columns.values(), item.weights):
                    tensor.record_stream(current)  # its memory is not reused while updates read it
            yield item

    def close(self) -> None:
        """Stops the thread (the caller closes the sampler, which ends a blocked draw)."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
