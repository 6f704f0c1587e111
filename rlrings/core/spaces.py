"""Observation and action spaces as rlrings' own small types.

Gymnasium's spaces carry random generators and sampling; what the mesh needs
is what travels with a model and checks data: a :class:`Discrete` choice
(with optional action names) or a :class:`Box` of numbers with its shape,
dtype and bounds. :func:`from_gymnasium` converts an env's spaces once, at
the edge; ``rlrings.rpc.wire`` converts them to and from the protobuf messages.
``MultiDiscrete`` and ``Dict`` have room here as further classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Discrete:
    """A choice of one of ``n`` actions, optionally named."""

    n: int
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"Discrete: n must be positive, got {self.n}")
        if self.names and len(self.names) != self.n:
            raise ValueError(f"Discrete: {len(self.names)} names for {self.n} actions")

    @property
    def shape(self) -> tuple[int, ...]:
        return ()

    @property
    def dtype(self) -> np.dtype:
        return np.dtype("int32")

    def column(self) -> dict:
        """The replay signature column of one action."""
        return {"dtype": "int32", "shape": []}

    def describe(self) -> str:
        return f"Discrete({self.n})"


@dataclass(frozen=True)
class Box:
    """Numbers of one ``dtype`` and ``shape`` within elementwise bounds (``low``/``high``
    are flattened, one per element; infinite where unbounded)."""

    shape: tuple[int, ...]
    dtype: np.dtype = field(default_factory=lambda: np.dtype("float32"))
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        size = int(np.prod(self.shape)) if self.shape else 1
        for name in ("low", "high"):
            bound = tuple(float(x) for x in np.asarray(getattr(self, name), dtype=np.float64).ravel())
            if len(bound) == 1 and size != 1:
                bound = bound * size
            if bound and len(bound) != size:
                raise ValueError(f"Box: {len(bound)} {name} bounds for shape {self.shape}")
            object.__setattr__(self, name, bound or (-np.inf if name == "low" else np.inf,) * size)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def is_image(self) -> bool:
        return self.dtype == np.uint8 and len(self.shape) == 3

    @property
    def bounded(self) -> bool:
        """Finite bounds on every element (what a tanh-squashed policy needs)."""
        return bool(np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high)))

    def low_array(self) -> np.ndarray:
        return np.asarray(self.low, dtype=np.float32).reshape(self.shape)

    def high_array(self) -> np.ndarray:
        return np.asarray(self.high, dtype=np.float32).reshape(self.shape)

    def column(self) -> dict:
        return {"dtype": self.dtype.name, "shape": list(self.shape)}

    def describe(self) -> str:
        return f"Box(shape={self.shape}, dtype={self.dtype.name})"


Space = Discrete | Box


def from_gymnasium(space) -> Space:
    """The rlrings space of a Gymnasium space.

    Raises:
        TypeError: a space rlrings does not handle yet (Dict, MultiDiscrete, Tuple, ...).
    """
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        if int(space.start) != 0:
            raise TypeError(f"{space}: a Discrete space must start at 0")
        return Discrete(int(space.n))
    if isinstance(space, gym.spaces.Box):
        return Box(space.shape, space.dtype, tuple(space.low.ravel()), tuple(space.high.ravel()))
    raise TypeError(f"{space}: rlrings handles Discrete and Box spaces")
