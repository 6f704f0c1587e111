"""Table signatures: the columns a table stores, and the check every chunk passes.

The replay server runs :meth:`Signature.check` on every chunk before storing
it, and the client writer runs the same check before sending, so a bad step is
reported where it was made, with the field and the value at fault.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rlrings.core.errors import InvalidArgumentError
from rlrings.rpc import codec
from rlrings.v1 import tensor_pb2


@dataclass(frozen=True)
class Column:
    """One column: its dtype, the shape of one step and, optionally, bounds on its values
    (``low``/``high``: empty, or one per element of a step; ``clip``: clip values outside them
    instead of refusing the chunk)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    clip: bool = False

    @classmethod
    def bounded(cls, name, dtype, shape, low=None, high=None, out_of_bounds: str = "refuse") -> Column:
        """A column with bounds given as None, one number for every element, or one per element.

        Raises:
            ValueError: bounds on a non-numeric column, the wrong number of them, or low above high.
        """
        dtype, shape = np.dtype(dtype), tuple(int(d) for d in shape)
        size = int(np.prod(shape, dtype=np.int64))
        if low is None and high is None:
            return cls(name, dtype, shape)
        if dtype.kind not in "iuf":
            raise ValueError(f"column {name!r}: bounds need a numeric dtype, not {dtype.name}")

        def spread(value, default: float) -> tuple[float, ...]:
            values = np.full(size, default) if value is None else np.asarray(value, np.float64).ravel()
            if values.size == 1:
                values = np.full(size, values[0])
            if values.size != size:
                raise ValueError(f"column {name!r}: {values.size} bounds for steps of {size} values")
            return tuple(float(v) for v in values)

        lows, highs = spread(low, -np.inf), spread(high, np.inf)
        if any(a > b for a, b in zip(lows, highs)):
            raise ValueError(f"column {name!r}: low {list(lows)} is above high {list(highs)}")
        return cls(name, dtype, shape, lows, highs, out_of_bounds == "clip")

    @functools.cached_property
    def step_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @functools.cached_property
    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(low, high) shaped as one step, or None for an unbounded column."""
        if not self.low:
            return None
        return np.asarray(self.low).reshape(self.shape), np.asarray(self.high).reshape(self.shape)

    def describe(self) -> str:
        bounds = f" in [{_bound(self.low)}, {_bound(self.high)}]" if self.low else ""
        return f"{self.name}: {self.dtype.name}{list(self.shape)}{bounds}{' (clipped)' if self.clip else ''}"


class Signature(Mapping[str, Column]):
    """An ordered mapping of column name to :class:`Column`."""

    def __init__(self, columns: Sequence[Column]):
        if not columns:
            raise InvalidArgumentError("signature: a table needs at least one column")
        self._columns = {column.name: column for column in columns}
        if len(self._columns) != len(columns):
            raise InvalidArgumentError(f"signature: duplicate column names in {[c.name for c in columns]}")

    def __getitem__(self, name: str) -> Column:
        return self._columns[name]

    def __iter__(self):
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def __repr__(self) -> str:
        return "Signature(" + ", ".join(c.describe() for c in self.values()) + ")"

    @functools.cached_property
    def step_bytes(self) -> int:
        """Bytes one step occupies across all columns (asked for every chunk on the insert path:
        worked out once)."""
        return sum(column.step_bytes for column in self.values())

    @classmethod
    def from_protos(cls, specs: Sequence[tensor_pb2.ColumnSpec]) -> Signature:
        columns = []
        for s in specs:
            dtype = codec.numpy_dtype(s.dtype, f"signature.{s.name}.dtype")
            try:
                columns.append(
                    Column.bounded(
                        s.name,
                        dtype,
                        tuple(s.shape),
                        list(s.low) or None,
                        list(s.high) or None,
                        "clip" if s.out_of_bounds == tensor_pb2.OUT_OF_BOUNDS_CLIP else "refuse",
                    )  # fmt: skip
                )
            except ValueError as error:
                raise InvalidArgumentError(f"signature.{s.name}: {error}") from None
        return cls(columns)

    def to_protos(self) -> list[tensor_pb2.ColumnSpec]:
        return [
            tensor_pb2.ColumnSpec(
                name=c.name,
                dtype=codec.dtype_code(c.dtype),
                shape=c.shape,
                low=c.low,
                high=c.high,
                out_of_bounds=tensor_pb2.OUT_OF_BOUNDS_CLIP if c.clip else tensor_pb2.OUT_OF_BOUNDS_REFUSE,
            )  # fmt: skip
            for c in self.values()
        ]

    def decode(
        self, tensors: Mapping[str, tensor_pb2.Tensor], max_bytes: int, field: str = "chunk.columns"
    ) -> dict[str, np.ndarray]:
        """Decodes a chunk's columns from the wire, checking first, before anything is
        decompressed, that each declared dtype and shape fits its column and that the whole
        chunk decodes to at most ``max_bytes``: a small message cannot make the server
        allocate more than its table's columns allow.

        Raises:
            InvalidArgumentError: naming the column and what is wrong with it.
        """
        self._match_names(tensors, field)
        steps: int | None = None
        for name, column in self.items():
            tensor, where = tensors[name], f"{field}[{name!r}]"
            if codec.numpy_dtype(tensor.dtype, f"{where}.dtype") != column.dtype:
                raise InvalidArgumentError(
                    f"{where}.dtype: got {codec.numpy_dtype(tensor.dtype).name}, the table stores {column.dtype.name}"
                )
            if len(tensor.shape) != len(column.shape) + 1 or tuple(tensor.shape[1:]) != column.shape:
                wanted = ", ".join(["T", *map(str, column.shape)])
                raise InvalidArgumentError(f"{where}.shape: got {_shown(tensor.shape)}, the table wants [{wanted}]")
            if steps is None:
                steps = tensor.shape[0]
            elif tensor.shape[0] != steps:
                raise InvalidArgumentError(f"{where}.shape: {tensor.shape[0]} steps, but the first column has {steps}")
        assert steps is not None
        if steps * self.step_bytes > max_bytes:
            raise InvalidArgumentError(
                f"{field}: {steps} steps decode to {steps * self.step_bytes} bytes, more than this server takes in one "
                f"chunk ({max_bytes}); send shorter chunks"
            )
        return {name: codec.decode(tensors[name], f"{field}[{name!r}]") for name in self}

    def _match_names(self, columns: Mapping, field: str) -> None:
        if not columns:
            raise InvalidArgumentError(f"{field}: empty chunk, no columns")
        missing = [name for name in self if name not in columns]
        unknown = [name for name in columns if name not in self._columns]
        if missing or unknown:
            raise InvalidArgumentError(
                f"{field}: columns do not match the signature {self!r}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {_shown(unknown)}" if unknown else "")
            )

    def check(self, columns: dict[str, np.ndarray], sequence_length: int = 1, field: str = "chunk.columns") -> int:
        """Checks a chunk's columns and returns its number of steps. A bounded column's values
        outside its bounds refuse the chunk or, where the column clips, are clipped: the clipped
        array replaces the column's in ``columns``.

        Raises:
            InvalidArgumentError: naming the column and what is wrong with it.
        """
        self._match_names(columns, field)
        steps: int | None = None
        first = ""
        for name, column in self.items():
            array = columns[name]
            where = f"{field}[{name!r}]"
            if array.dtype != column.dtype:
                raise InvalidArgumentError(
                    f"{where}.dtype: got {array.dtype.name}, the table stores {column.dtype.name}"
                )
            if array.ndim != len(column.shape) + 1 or tuple(array.shape[1:]) != column.shape:
                wanted = ["T", *map(str, column.shape)]
                raise InvalidArgumentError(
                    f"{where}.shape: got {list(array.shape)}, the table wants [{', '.join(wanted)}]"
                )
            if steps is None:
                steps, first = array.shape[0], name
            elif array.shape[0] != steps:
                raise InvalidArgumentError(f"{where}.shape: {array.shape[0]} steps, but column {first!r} has {steps}")
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                bad = np.argwhere(~np.isfinite(array))[0]
                raise InvalidArgumentError(f"{where}: non-finite value {array[tuple(bad)]} at index {bad.tolist()}")
            if column.bounds is not None:
                columns[name] = _within(array, column, where)
        assert steps is not None
        if steps == 0:
            raise InvalidArgumentError(f"{field}: empty chunk, 0 steps")
        if steps % sequence_length:
            raise InvalidArgumentError(
                f"{field}: {steps} steps is not a multiple of the table's sequence length {sequence_length}"
            )
        return steps


def _within(array: np.ndarray, column: Column, where: str) -> np.ndarray:
    """``array`` itself where it lies within the column's bounds; clipped, where the column clips."""
    low, high = column.bounds
    below, above = array < low, array > high
    if not (below.any() or above.any()):
        return array
    if column.clip:
        return np.clip(array, low, high).astype(column.dtype, copy=False)
    outside = below if below.any() else above
    index = tuple(np.argwhere(outside)[0])
    bound = (low if below.any() else high)[index[1:]]
    side = "below its low bound" if below.any() else "above its high bound"
    at = list(map(int, index))
    raise InvalidArgumentError(f"{where}: value {array[index]:g} at index {at} is {side} {float(bound):g}")


def _bound(values: tuple[float, ...]) -> str:
    return f"{values[0]:g}" if len(set(values)) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _shown(values: Sequence, limit: int = 8) -> str:
    """A client's list in an error message, cut after ``limit`` entries (a hostile one can be long)."""
    values = list(values)
    shown = ", ".join(repr(v[:64]) if isinstance(v, str) else str(v) for v in values[:limit])
    return f"[{shown}{f', ... ({len(values)} in all)' if len(values) > limit else ''}]"
