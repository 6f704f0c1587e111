import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from rlrings.v1 import spaces_pb2 as _spaces_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WeightsHeader(_message.Message):
    __slots__ = ("version", "model", "format", "total_bytes", "sha256", "learner_step", "created", "tags", "evaluation_return", "evaluation_episodes", "evaluation_confirmed", "solved")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    LEARNER_STEP_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_RETURN_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_EPISODES_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    SOLVED_FIELD_NUMBER: _ClassVar[int]
    version: int
    model: _spaces_pb2.ModelSpec
    format: str
    total_bytes: int
    sha256: bytes
    learner_step: int
    created: _timestamp_pb2.Timestamp
    tags: _containers.RepeatedScalarFieldContainer[str]
    evaluation_return: float
    evaluation_episodes: int
    evaluation_confirmed: bool
    solved: bool
    def __init__(self, version: _Optional[int] = ..., model: _Optional[_Union[_spaces_pb2.ModelSpec, _Mapping]] = ..., format: _Optional[str] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[bytes] = ..., learner_step: _Optional[int] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., evaluation_return: _Optional[float] = ..., evaluation_episodes: _Optional[int] = ..., evaluation_confirmed: _Optional[bool] = ..., solved: _Optional[bool] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: WeightsHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[WeightsHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("version", "tag", "header_only", "hold_seconds")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    HEADER_ONLY_FIELD_NUMBER: _ClassVar[int]
    HOLD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    version: int
    tag: str
    header_only: bool
    hold_seconds: float
    def __init__(self, version: _Optional[int] = ..., tag: _Optional[str] = ..., header_only: _Optional[bool] = ..., hold_seconds: _Optional[float] = ...) -> None: ...

class FetchResponse(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: WeightsHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[WeightsHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("send_current",)
    SEND_CURRENT_FIELD_NUMBER: _ClassVar[int]
    send_current: bool
    def __init__(self, send_current: _Optional[bool] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("version", "learner_step", "total_bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LEARNER_STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    learner_step: int
    total_bytes: int
    def __init__(self, version: _Optional[int] = ..., learner_step: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("versions", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[WeightsHeader]
    tags: _containers.ScalarMap[str, int]
    def __init__(self, versions: _Optional[_Iterable[_Union[WeightsHeader, _Mapping]]] = ..., tags: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ReportEvaluationRequest(_message.Message):
    __slots__ = ("version", "evaluation_return", "episodes", "confirmed", "solved")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_RETURN_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    SOLVED_FIELD_NUMBER: _ClassVar[int]
    version: int
    evaluation_return: float
    episodes: int
    confirmed: bool
    solved: bool
    def __init__(self, version: _Optional[int] = ..., evaluation_return: _Optional[float] = ..., episodes: _Optional[int] = ..., confirmed: _Optional[bool] = ..., solved: _Optional[bool] = ...) -> None: ...

class ReportEvaluationResponse(_message.Message):
    __slots__ = ("best_version", "solved_version")
    BEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOLVED_VERSION_FIELD_NUMBER: _ClassVar[int]
    best_version: int
    solved_version: int
    def __init__(self, best_version: _Optional[int] = ..., solved_version: _Optional[int] = ...) -> None: ...

class DeleteTagRequest(_message.Message):
    __slots__ = ("tag",)
    TAG_FIELD_NUMBER: _ClassVar[int]
    tag: str
    def __init__(self, tag: _Optional[str] = ...) -> None: ...

class DeleteTagResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...
