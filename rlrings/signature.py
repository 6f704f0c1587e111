"""Table signatures: the columns a table stores, and the check every chunk passes.

The replay server runs :meth:`Signature.check` on every chunk before storing
it, and the client writer runs the same check before sending, so a bad step is
reported where it was made, with the field and the value at fault.
"""

from __future__ import annotations

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

    @property
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

    @property
    def step_bytes(self) -> int:
        """Bytes one step occupies across all columns."""
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

    def check(self, columns: Mapping[str, np.ndarray], sequence_length: int = 1, field: str = "chunk.columns") -> int:
        """Checks a chunk's columns and returns its number of steps.

        Raises:
            InvalidArgumentError: naming the column and what is wrong with it.
        """
        if not columns:
            raise InvalidArgumentError(f"{field}: empty chunk, no columns")
        missing = [name for name in self if name not in columns]
        unknown = [name for name in columns if name not in self._columns]
        if missing or unknown:
            raise InvalidArgumentError(
                f"{field}: columns do not match the signature {self!r}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
            )
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
