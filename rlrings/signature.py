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

from rlrings import codec
from rlrings.errors import InvalidArgumentError
from rlrings.v1 import tensor_pb2


@dataclass(frozen=True)
class Column:
    """One column: its dtype and the shape of one step."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @functools.cached_property
    def step_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


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
        return "Signature(" + ", ".join(f"{c.name}: {c.dtype.name}{list(c.shape)}" for c in self.values()) + ")"

    @functools.cached_property
    def step_bytes(self) -> int:
        """Bytes one step occupies across all columns (asked for every chunk on the insert path:
        worked out once)."""
        return sum(column.step_bytes for column in self.values())

    @classmethod
    def from_protos(cls, specs: Sequence[tensor_pb2.ColumnSpec]) -> Signature:
        return cls(
            [Column(s.name, codec.numpy_dtype(s.dtype, f"signature.{s.name}.dtype"), tuple(s.shape)) for s in specs]
        )

    def to_protos(self) -> list[tensor_pb2.ColumnSpec]:
        return [
            tensor_pb2.ColumnSpec(name=c.name, dtype=codec.dtype_code(c.dtype), shape=c.shape) for c in self.values()
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

    def check(self, columns: Mapping[str, np.ndarray], sequence_length: int = 1, field: str = "chunk.columns") -> int:
        """Checks a chunk's columns and returns its number of steps.

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
        assert steps is not None
        if steps == 0:
            raise InvalidArgumentError(f"{field}: empty chunk, 0 steps")
        if steps % sequence_length:
            raise InvalidArgumentError(
                f"{field}: {steps} steps is not a multiple of the table's sequence length {sequence_length}"
            )
        return steps


def _shown(values: Sequence, limit: int = 8) -> str:
    """A client's list in an error message, cut after ``limit`` entries (a hostile one can be long)."""
    values = list(values)
    shown = ", ".join(repr(v[:64]) if isinstance(v, str) else str(v) for v in values[:limit])
    return f"[{shown}{f', ... ({len(values)} in all)' if len(values) > limit else ''}]"
