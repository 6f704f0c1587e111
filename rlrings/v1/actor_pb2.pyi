from rlrings.v1 import control_pb2 as _control_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetActorStatusRequest(_message.Message):
    __slots__ = ("episodes_after",)
    EPISODES_AFTER_FIELD_NUMBER: _ClassVar[int]
    episodes_after: int
    def __init__(self, episodes_after: _Optional[int] = ...) -> None: ...

class EpisodeRecord(_message.Message):
    __slots__ = ("index", "episode_return", "length", "policy_version", "end_time", "achievements")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    EPISODE_RETURN_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ACHIEVEMENTS_FIELD_NUMBER: _ClassVar[int]
    index: int
    episode_return: float
    length: int
    policy_version: int
    end_time: float
    achievements: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, index: _Optional[int] = ..., episode_return: _Optional[float] = ..., length: _Optional[int] = ..., policy_version: _Optional[int] = ..., end_time: _Optional[float] = ..., achievements: _Optional[_Iterable[str]] = ...) -> None: ...

class GetActorStatusResponse(_message.Message):
    __slots__ = ("state", "env_id", "num_envs", "env_steps", "steps_per_second", "episodes", "mean_episode_return", "mean_episode_length", "policy_version", "buffered_chunks", "recent_episodes")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_ENVS_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    MEAN_EPISODE_RETURN_FIELD_NUMBER: _ClassVar[int]
    MEAN_EPISODE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    RECENT_EPISODES_FIELD_NUMBER: _ClassVar[int]
    state: _control_pb2.RunState
    env_id: str
    num_envs: int
    env_steps: int
    steps_per_second: float
    episodes: int
    mean_episode_return: float
    mean_episode_length: float
    policy_version: int
    buffered_chunks: int
    recent_episodes: _containers.RepeatedCompositeFieldContainer[EpisodeRecord]
    def __init__(self, state: _Optional[_Union[_control_pb2.RunState, str]] = ..., env_id: _Optional[str] = ..., num_envs: _Optional[int] = ..., env_steps: _Optional[int] = ..., steps_per_second: _Optional[float] = ..., episodes: _Optional[int] = ..., mean_episode_return: _Optional[float] = ..., mean_episode_length: _Optional[float] = ..., policy_version: _Optional[int] = ..., buffered_chunks: _Optional[int] = ..., recent_episodes: _Optional[_Iterable[_Union[EpisodeRecord, _Mapping]]] = ...) -> None: ...

class PauseActorRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PauseActorResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: _control_pb2.RunState
    def __init__(self, state: _Optional[_Union[_control_pb2.RunState, str]] = ...) -> None: ...

class ResumeActorRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResumeActorResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: _control_pb2.RunState
    def __init__(self, state: _Optional[_Union[_control_pb2.RunState, str]] = ...) -> None: ...

class UpdateActorConfigRequest(_message.Message):
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

class UpdateActorConfigResponse(_message.Message):
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
