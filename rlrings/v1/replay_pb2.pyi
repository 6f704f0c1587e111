from rlrings.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InsertRequest(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: _tensor_pb2.Chunk
    def __init__(self, chunk: _Optional[_Union[_tensor_pb2.Chunk, _Mapping]] = ...) -> None: ...

class InsertResponse(_message.Message):
    __slots__ = ("writer_id", "sequence", "keys", "duplicate")
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    writer_id: str
    sequence: int
    keys: _containers.RepeatedScalarFieldContainer[int]
    duplicate: bool
    def __init__(self, writer_id: _Optional[str] = ..., sequence: _Optional[int] = ..., keys: _Optional[_Iterable[int]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("table", "batch_size", "num_batches", "timeout_seconds", "importance_sampling_exponent", "credits", "current_policy_version")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_BATCHES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_SAMPLING_EXPONENT_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    table: str
    batch_size: int
    num_batches: int
    timeout_seconds: float
    importance_sampling_exponent: float
    credits: int
    current_policy_version: int
    def __init__(self, table: _Optional[str] = ..., batch_size: _Optional[int] = ..., num_batches: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., importance_sampling_exponent: _Optional[float] = ..., credits: _Optional[int] = ..., current_policy_version: _Optional[int] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("columns", "keys", "probabilities", "importance_weights", "times_sampled", "policy_versions", "table_size", "end_of_batch")
    class ColumnsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    TIMES_SAMPLED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TABLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    END_OF_BATCH_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.MessageMap[str, _tensor_pb2.Tensor]
    keys: _containers.RepeatedScalarFieldContainer[int]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    importance_weights: _containers.RepeatedScalarFieldContainer[float]
    times_sampled: _containers.RepeatedScalarFieldContainer[int]
    policy_versions: _containers.RepeatedScalarFieldContainer[int]
    table_size: int
    end_of_batch: bool
    def __init__(self, columns: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., keys: _Optional[_Iterable[int]] = ..., probabilities: _Optional[_Iterable[float]] = ..., importance_weights: _Optional[_Iterable[float]] = ..., times_sampled: _Optional[_Iterable[int]] = ..., policy_versions: _Optional[_Iterable[int]] = ..., table_size: _Optional[int] = ..., end_of_batch: _Optional[bool] = ...) -> None: ...

class UpdatePrioritiesRequest(_message.Message):
    __slots__ = ("table", "keys", "priorities")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    table: str
    keys: _containers.RepeatedScalarFieldContainer[int]
    priorities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, table: _Optional[str] = ..., keys: _Optional[_Iterable[int]] = ..., priorities: _Optional[_Iterable[float]] = ...) -> None: ...

class UpdatePrioritiesResponse(_message.Message):
    __slots__ = ("updated", "missing")
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    updated: int
    missing: int
    def __init__(self, updated: _Optional[int] = ..., missing: _Optional[int] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ("tables",)
    TABLES_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tables: _Optional[_Iterable[str]] = ...) -> None: ...

class RateLimiterInfo(_message.Message):
    __slots__ = ("min_size_to_sample", "samples_per_insert", "min_diff", "max_diff", "inserts", "samples", "insert_wait_seconds", "sample_wait_seconds")
    MIN_SIZE_TO_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_INSERT_FIELD_NUMBER: _ClassVar[int]
    MIN_DIFF_FIELD_NUMBER: _ClassVar[int]
    MAX_DIFF_FIELD_NUMBER: _ClassVar[int]
    INSERTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    INSERT_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    min_size_to_sample: int
    samples_per_insert: float
    min_diff: float
    max_diff: float
    inserts: int
    samples: int
    insert_wait_seconds: float
    sample_wait_seconds: float
    def __init__(self, min_size_to_sample: _Optional[int] = ..., samples_per_insert: _Optional[float] = ..., min_diff: _Optional[float] = ..., max_diff: _Optional[float] = ..., inserts: _Optional[int] = ..., samples: _Optional[int] = ..., insert_wait_seconds: _Optional[float] = ..., sample_wait_seconds: _Optional[float] = ...) -> None: ...

class TableInfo(_message.Message):
    __slots__ = ("name", "selector", "remover", "max_size", "size", "max_times_sampled", "sequence_length", "signature", "rate_limiter", "inserted_items", "sampled_items", "evicted_items", "priority_exponent", "max_policy_lag", "stale_items", "withheld")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    REMOVER_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_TIMES_SAMPLED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITER_FIELD_NUMBER: _ClassVar[int]
    INSERTED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    EVICTED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_EXPONENT_FIELD_NUMBER: _ClassVar[int]
    MAX_POLICY_LAG_FIELD_NUMBER: _ClassVar[int]
    STALE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    WITHHELD_FIELD_NUMBER: _ClassVar[int]
    name: str
    selector: str
    remover: str
    max_size: int
    size: int
    max_times_sampled: int
    sequence_length: int
    signature: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.ColumnSpec]
    rate_limiter: RateLimiterInfo
    inserted_items: int
    sampled_items: int
    evicted_items: int
    priority_exponent: float
    max_policy_lag: int
    stale_items: int
    withheld: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., selector: _Optional[str] = ..., remover: _Optional[str] = ..., max_size: _Optional[int] = ..., size: _Optional[int] = ..., max_times_sampled: _Optional[int] = ..., sequence_length: _Optional[int] = ..., signature: _Optional[_Iterable[_Union[_tensor_pb2.ColumnSpec, _Mapping]]] = ..., rate_limiter: _Optional[_Union[RateLimiterInfo, _Mapping]] = ..., inserted_items: _Optional[int] = ..., sampled_items: _Optional[int] = ..., evicted_items: _Optional[int] = ..., priority_exponent: _Optional[float] = ..., max_policy_lag: _Optional[int] = ..., stale_items: _Optional[int] = ..., withheld: _Optional[_Iterable[str]] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("tables",)
    TABLES_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[TableInfo]
    def __init__(self, tables: _Optional[_Iterable[_Union[TableInfo, _Mapping]]] = ...) -> None: ...

class CheckpointRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckpointResponse(_message.Message):
    __slots__ = ("path", "items", "seconds")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    path: str
    items: int
    seconds: float
    def __init__(self, path: _Optional[str] = ..., items: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...
