from rlrings.v1 import spaces_pb2 as _spaces_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListEnvironmentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnvironmentInfo(_message.Message):
    __slots__ = ("env_id", "action_space", "key_map", "continuous_keys")
    class KeyMapEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ContinuousKeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_SPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_MAP_FIELD_NUMBER: _ClassVar[int]
    CONTINUOUS_KEYS_FIELD_NUMBER: _ClassVar[int]
    env_id: str
    action_space: _spaces_pb2.Space
    key_map: _containers.ScalarMap[str, int]
    continuous_keys: _containers.ScalarMap[str, str]
    def __init__(self, env_id: _Optional[str] = ..., action_space: _Optional[_Union[_spaces_pb2.Space, _Mapping]] = ..., key_map: _Optional[_Mapping[str, int]] = ..., continuous_keys: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListEnvironmentsResponse(_message.Message):
    __slots__ = ("environments",)
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    environments: _containers.RepeatedCompositeFieldContainer[EnvironmentInfo]
    def __init__(self, environments: _Optional[_Iterable[_Union[EnvironmentInfo, _Mapping]]] = ...) -> None: ...

class WatchEpisodeRequest(_message.Message):
    __slots__ = ("env_id", "policy_version", "seed")
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    env_id: str
    policy_version: int
    seed: int
    def __init__(self, env_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("image", "media_type", "step", "reward", "episode_return", "terminated", "truncated", "policy_version")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    EPISODE_RETURN_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    media_type: str
    step: int
    reward: float
    episode_return: float
    terminated: bool
    truncated: bool
    policy_version: int
    def __init__(self, image: _Optional[bytes] = ..., media_type: _Optional[str] = ..., step: _Optional[int] = ..., reward: _Optional[float] = ..., episode_return: _Optional[float] = ..., terminated: _Optional[bool] = ..., truncated: _Optional[bool] = ..., policy_version: _Optional[int] = ...) -> None: ...

class StartEpisode(_message.Message):
    __slots__ = ("env_id", "seed")
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    env_id: str
    seed: int
    def __init__(self, env_id: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class PlayRequest(_message.Message):
    __slots__ = ("start", "action", "continuous_action")
    START_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CONTINUOUS_ACTION_FIELD_NUMBER: _ClassVar[int]
    start: StartEpisode
    action: int
    continuous_action: ContinuousAction
    def __init__(self, start: _Optional[_Union[StartEpisode, _Mapping]] = ..., action: _Optional[int] = ..., continuous_action: _Optional[_Union[ContinuousAction, _Mapping]] = ...) -> None: ...

class ContinuousAction(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class ListDemonstrationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Demonstration(_message.Message):
    __slots__ = ("episode_id", "env_id", "steps", "episode_return", "truncated")
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    EPISODE_RETURN_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    episode_id: int
    env_id: str
    steps: int
    episode_return: float
    truncated: bool
    def __init__(self, episode_id: _Optional[int] = ..., env_id: _Optional[str] = ..., steps: _Optional[int] = ..., episode_return: _Optional[float] = ..., truncated: _Optional[bool] = ...) -> None: ...

class ListDemonstrationsResponse(_message.Message):
    __slots__ = ("demonstrations",)
    DEMONSTRATIONS_FIELD_NUMBER: _ClassVar[int]
    demonstrations: _containers.RepeatedCompositeFieldContainer[Demonstration]
    def __init__(self, demonstrations: _Optional[_Iterable[_Union[Demonstration, _Mapping]]] = ...) -> None: ...
