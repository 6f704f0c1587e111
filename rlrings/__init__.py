"""rlrings: distributed reinforcement learning as a gRPC microservice mesh.

What users rely on, importable from here::

    from rlrings import ReplayClient, ParameterClient, Policy

Names are loaded on first use, so a service that needs only the replay
client does not pay for importing PyTorch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ReplayClient": "rlrings.clients.replay",
    "Batch": "rlrings.clients.replay",
    "Writer": "rlrings.clients.replay",
    "ParameterClient": "rlrings.clients.parameter",
    "Policy": "rlrings.core.models",
    "ModelSpec": "rlrings.core.models",
    "RlringsError": "rlrings.core.errors",
    "InvalidArgumentError": "rlrings.core.errors",
    "NotFoundError": "rlrings.core.errors",
    "ResourceExhaustedError": "rlrings.core.errors",
    "DeadlineExceededError": "rlrings.core.errors",
    "UnavailableError": "rlrings.core.errors",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rlrings' has no attribute {name!r}")
