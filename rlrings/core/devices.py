"""Which device a process computes on: what ``device: auto`` means for the learner, the
inference service and the evaluator alike."""

from __future__ import annotations

import os

import torch

from rlrings.core.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` is this process's GPU (``LOCAL_RANK`` picks it on a node of several) where CUDA is
    available, else the CPU.

    Raises:
        ConfigError: a CUDA device on a machine without CUDA.
    """
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} asks for CUDA, which this machine does not have")
    return device
