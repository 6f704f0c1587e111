"""Conversion between numpy arrays and ``rlrings.v1.Tensor`` messages.

Tensors travel as raw little-endian bytes read back with one buffer view, which
is what keeps image observations cheap to move. Decoding checks everything a
peer could get wrong (dtype, shape, byte count, compression) and raises
:class:`TensorError` naming the field, so servers can answer INVALID_ARGUMENT.
"""

from __future__ import annotations

import math

import lz4.frame
import numpy as np
import zstandard

from rlrings.core.errors import InvalidArgumentError
from rlrings.v1 import tensor_pb2

Compression = tensor_pb2.Compression

_DTYPES: dict[int, np.dtype] = {
    tensor_pb2.DTYPE_BOOL: np.dtype("bool"),
    tensor_pb2.DTYPE_UINT8: np.dtype("uint8"),
    tensor_pb2.DTYPE_INT8: np.dtype("int8"),
    tensor_pb2.DTYPE_UINT16: np.dtype("<u2"),
    tensor_pb2.DTYPE_INT16: np.dtype("<i2"),
    tensor_pb2.DTYPE_UINT32: np.dtype("<u4"),
    tensor_pb2.DTYPE_INT32: np.dtype("<i4"),
    tensor_pb2.DTYPE_UINT64: np.dtype("<u8"),
    tensor_pb2.DTYPE_INT64: np.dtype("<i8"),
    tensor_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DTYPE_FLOAT64: np.dtype("<f8"),
}
_BY_NAME = {dtype.name: code for code, dtype in _DTYPES.items()}

# Refuse shapes that could never fit in a message, before multiplying bytes.
_MAX_ELEMENTS = 1 << 40
_zstd_compressor = zstandard.ZstdCompressor(level=3)


class TensorError(InvalidArgumentError):
    """A tensor message that cannot be decoded; the message names the field."""


def dtype_code(dtype: np.dtype | str) -> int:
    """The ``DType`` enum value of a numpy dtype (or dtype name)."""
    name = np.dtype(dtype).name
    try:
        return _BY_NAME[name]
    except KeyError:
        raise TensorError(f"dtype {name!r} is not supported; use one of {sorted(_BY_NAME)}") from None


def numpy_dtype(code: int, field: str = "dtype") -> np.dtype:
    """The numpy dtype of a ``DType`` enum value."""
    try:
        return _DTYPES[code]
    except KeyError:
        raise TensorError(f"{field}: unknown or unspecified dtype {code}") from None


def encode(array: np.ndarray, compression: int = Compression.COMPRESSION_NONE) -> tensor_pb2.Tensor:
    """Encodes an array (any numpy-convertible value) as a Tensor message."""
    array = np.asarray(array)
    code = dtype_code(array.dtype)
    target = _DTYPES[code]
    if array.dtype != target or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array, dtype=target)
    data = array.data if array.size else b""
    if compression == Compression.COMPRESSION_LZ4:
        data = lz4.frame.compress(data)
    elif compression == Compression.COMPRESSION_ZSTD:
        data = _zstd_compressor.compress(data)
    elif compression != Compression.COMPRESSION_NONE:
        raise TensorError(f"compression: unknown value {compression}")
    return tensor_pb2.Tensor(dtype=code, shape=array.shape, data=bytes(data), compression=compression)


def decode(tensor: tensor_pb2.Tensor, field: str = "tensor") -> np.ndarray:
    """Decodes a Tensor message into a read-only array, checking its byte count.

    Raises:
        TensorError: unknown dtype or compression, negative dimensions, or
            data whose length does not match dtype and shape.
    """
    dtype = numpy_dtype(tensor.dtype, f"{field}.dtype")
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise TensorError(f"{field}.shape: negative dimension in {list(shape)}")
    elements = math.prod(shape)
    if elements > _MAX_ELEMENTS:
        raise TensorError(f"{field}.shape: {list(shape)} has too many elements")
    expected = elements * dtype.itemsize
    data = _decompress(tensor, expected, field)
    if len(data) != expected:
        raise TensorError(
            f"{field}.data: {len(data)} bytes, but dtype {dtype.name} and shape {list(shape)} need {expected}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _decompress(tensor: tensor_pb2.Tensor, expected: int, field: str) -> bytes:
    """The tensor's bytes, decompressed into at most ``expected`` + 1 bytes whatever the frame claims.

    A frame that declares another size is refused before anything is decompressed (zstd would
    otherwise allocate what a 32 KiB frame declares, ignoring ``max_output_size``).
    """
    compression = tensor.compression
    if compression == Compression.COMPRESSION_NONE:
        return tensor.data
    try:
        if compression == Compression.COMPRESSION_LZ4:
            # Read at most one byte past the expected size: enough to notice a
            # mismatch without letting a small message inflate without bound.
            decompressor = lz4.frame.LZ4FrameDecompressor()
            data = decompressor.decompress(tensor.data, max_length=expected + 1)
            if len(data) <= expected and not decompressor.eof:
                raise RuntimeError("truncated, or not an LZ4 frame")
            return data
        if compression == Compression.COMPRESSION_ZSTD:
            declared = zstandard.get_frame_parameters(tensor.data).content_size
            if declared not in (zstandard.CONTENTSIZE_UNKNOWN, expected):
                raise TensorError(f"{field}.data: the zstd frame declares {declared} bytes, {expected} expected")
            with zstandard.ZstdDecompressor().stream_reader(tensor.data, read_across_frames=True) as reader:
                return reader.read(expected + 1)  # (reads the whole size in one call when it is there)
    except (RuntimeError, zstandard.ZstdError) as error:
        raise TensorError(f"{field}.data: cannot decompress ({error})") from None
    raise TensorError(f"{field}.compression: unknown value {compression}")
