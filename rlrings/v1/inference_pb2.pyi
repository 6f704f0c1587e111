from rlrings.v1 import spaces_pb2 as _spaces_pb2
from rlrings.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActRequest(_message.Message):
    __slots__ = ("observations", "tag", "version", "min_version")
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    observations: _tensor_pb2.Tensor
    tag: str
    version: int
    min_version: int
    def __init__(self, observations: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., tag: _Optional[str] = ..., version: _Optional[int] = ..., min_version: _Optional[int] = ...) -> None: ...

class ActResponse(_message.Message):
    __slots__ = ("policy", "value", "version", "model")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    policy: _tensor_pb2.Tensor
    value: _tensor_pb2.Tensor
    version: int
    model: _spaces_pb2.ModelSpec
    def __init__(self, policy: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., version: _Optional[int] = ..., model: _Optional[_Union[_spaces_pb2.ModelSpec, _Mapping]] = ...) -> None: ...
