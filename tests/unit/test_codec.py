import numpy as np
import pytest

from rlrings.rpc import codec
from rlrings.v1 import tensor_pb2

ALL_DTYPES = [
    "bool",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float16",
    "float32",
    "float64",
]
COMPRESSIONS = [
    codec.Compression.COMPRESSION_NONE,
    codec.Compression.COMPRESSION_LZ4,
    codec.Compression.COMPRESSION_ZSTD,
]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip_every_dtype_and_compression(dtype, compression):
    array = (np.random.default_rng(0).random((3, 5, 2)) * 100).astype(dtype)
    decoded = codec.decode(codec.encode(array, compression))
    assert decoded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded, array)


def test_big_endian_and_strided_inputs_are_normalised():
    array = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]
    tensor = codec.encode(array)
    assert tensor.dtype == tensor_pb2.DTYPE_INT32
    np.testing.assert_array_equal(codec.decode(tensor), array)


def test_scalar_and_empty_shapes():
    assert codec.decode(codec.encode(np.float32(2.5))).shape == ()
    assert codec.decode(codec.encode(np.zeros((0, 3), np.uint8))).shape == (0, 3)


def test_wrong_byte_count_names_field():
    tensor = codec.encode(np.zeros((2, 3), np.float32))
    tensor.shape[:] = [2, 4]
    with pytest.raises(codec.TensorError, match=r"obs\.data: 24 bytes, but dtype float32 and shape \[2, 4\] need 32"):
        codec.decode(tensor, "obs")


def test_unknown_dtype_negative_shape_and_bad_compression():
    with pytest.raises(codec.TensorError, match="x.dtype: unknown or unspecified"):
        codec.decode(tensor_pb2.Tensor(dtype=0, shape=[1], data=b"\0"), "x")
    with pytest.raises(codec.TensorError, match="x.shape: negative"):
        codec.decode(tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_UINT8, shape=[-1], data=b""), "x")
    for compression in COMPRESSIONS[1:]:
        with pytest.raises(codec.TensorError, match="x.data: cannot decompress"):
            codec.decode(
                tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_UINT8, shape=[4], data=b"junk", compression=compression), "x"
            )


@pytest.mark.parametrize("compression", COMPRESSIONS[1:])
def test_decompression_is_bounded_by_the_declared_shape(compression):
    tensor = codec.encode(np.zeros(1 << 20, np.uint8), compression)  # compresses to a few bytes
    tensor.shape[:] = [16]
    with pytest.raises(codec.TensorError, match="x.data"):
        codec.decode(tensor, "x")


def test_unsupported_dtype_is_refused_on_encode():
    with pytest.raises(codec.TensorError, match="complex128"):
        codec.encode(np.zeros(2, np.complex128))
