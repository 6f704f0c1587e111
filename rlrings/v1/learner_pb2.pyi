from rlrings.v1 import control_pb2 as _control_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetLearnerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLearnerStatusResponse(_message.Message):
    __slots__ = ("state", "rank", "world_size", "algorithm", "learner_step", "steps_per_second", "published_version", "policy_lag", "losses", "replay_wait_seconds", "policy_lag_updates", "policy_lag_seconds", "device_busy_share")
    class LossesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STATE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    LEARNER_STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_LAG_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    REPLAY_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    POLICY_LAG_UPDATES_FIELD_NUMBER: _ClassVar[int]
    POLICY_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_BUSY_SHARE_FIELD_NUMBER: _ClassVar[int]
    state: _control_pb2.RunState
    rank: int
    world_size: int
    algorithm: str
    learner_step: int
    steps_per_second: float
    published_version: int
    policy_lag: float
    losses: _containers.ScalarMap[str, float]
    replay_wait_seconds: float
    policy_lag_updates: float
    policy_lag_seconds: float
    device_busy_share: float
    def __init__(self, state: _Optional[_Union[_control_pb2.RunState, str]] = ..., rank: _Optional[int] = ..., world_size: _Optional[int] = ..., algorithm: _Optional[str] = ..., learner_step: _Optional[int] = ..., steps_per_second: _Optional[float] = ..., published_version: _Optional[int] = ..., policy_lag: _Optional[float] = ..., losses: _Optional[_Mapping[str, float]] = ..., replay_wait_seconds: _Optional[float] = ..., policy_lag_updates: _Optional[float] = ..., policy_lag_seconds: _Optional[float] = ..., device_busy_share: _Optional[float] = ...) -> None: ...

class PauseLearnerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PauseLearnerResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: _control_pb2.RunState
    def __init__(self, state: _Optional[_Union[_control_pb2.RunState, str]] = ...) -> None: ...

class ResumeLearnerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResumeLearnerResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: _control_pb2.RunState
    def __init__(self, state: _Optional[_Union[_control_pb2.RunState, str]] = ...) -> None: ...

class UpdateLearnerConfigRequest(_message.Message):
    __slots__ = ("settings",)
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: _containers.ScalarMap[str, str]
    def __init__(self, settings: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UpdateLearnerConfigResponse(_message.Message):
    __slots__ = ("settings",)
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: _containers.ScalarMap[str, str]
    def __init__(self, settings: _Optional[_Mapping[str, str]] = ...) -> None: ...
