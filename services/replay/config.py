"""Configuration of the replay service and of the tables it holds."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic
from pydantic_settings import CliSuppress, SettingsConfigDict

from rlrings.core.errors import RlringsError
from rlrings.core.shape import MeshShape
from rlrings.rpc.config import ServiceConfig
from rlrings.rpc.signature import Column, Signature


class ColumnConfig(pydantic.BaseModel):
    """Dtype and per-step shape of one column."""

    model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

    dtype: str
    """numpy dtype name: uint8, int32, float32, bool, ..."""
    shape: list[pydantic.NonNegativeInt] = []
    """Shape of one step; [] for a scalar."""
    low: float | list[float] | None = None
    """Lowest value a step may hold (one for every element, or one per element); None: unbounded."""
    high: float | list[float] | None = None
    """Highest value a step may hold, as ``low``."""
    out_of_bounds: Literal["refuse", "clip"] = "refuse"
    """A value outside [low, high]: refuse the chunk (INVALID_ARGUMENT naming the column and the
    bound), or clip it to the bound and store it."""

    @pydantic.field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        from rlrings.rpc import codec

        try:
            codec.dtype_code(np.dtype(value))
        except (TypeError, ValueError) as error:
            raise ValueError(f"unsupported dtype {value!r}: {error}") from None
        return np.dtype(value).name


class RateLimiterConfig(pydantic.BaseModel):
    """When sampling may start, and how far samples and inserts may drift apart.

    With ``samples_per_insert`` set, the limiter keeps
    ``inserts * samples_per_insert - samples`` within
    ``min_size_to_sample * samples_per_insert +- error_buffer`` (or within
    explicit ``min_diff``/``max_diff``), blocking whichever side runs ahead.
    """

    model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

    min_size_to_sample: pydantic.PositiveInt = 1
    """Items the table must hold before any sample is served."""
    samples_per_insert: pydantic.PositiveFloat | None = None
    """Target ratio of sampled to inserted items; None lets both run freely."""
    error_buffer: pydantic.NonNegativeFloat | None = None
    """Half-width of the tolerance band around the target, in samples."""
    min_diff: float | None = None
    """Explicit lower bound of inserts*samples_per_insert - samples (instead of error_buffer)."""
    max_diff: float | None = None
    """Explicit upper bound of inserts*samples_per_insert - samples (instead of error_buffer)."""

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> RateLimiterConfig:
        explicit = self.min_diff is not None or self.max_diff is not None
        if self.samples_per_insert is None and (explicit or self.error_buffer is not None):
            raise ValueError("error_buffer, min_diff and max_diff need samples_per_insert")
        if explicit and self.error_buffer is not None:
            raise ValueError("give either error_buffer or min_diff/max_diff, not both")
        if self.samples_per_insert is not None and not explicit and self.error_buffer is None:
            raise ValueError("samples_per_insert needs error_buffer (or min_diff and max_diff)")
        low, high = self.bounds()
        if low > high:
            raise ValueError(f"min_diff {low} is above max_diff {high}")
        return self

    def bounds(self) -> tuple[float, float]:
        """(min_diff, max_diff) in force."""
        if self.samples_per_insert is None:
            return -math.inf, math.inf
        if self.error_buffer is not None:
            centre = self.min_size_to_sample * self.samples_per_insert
            return centre - self.error_buffer, centre + self.error_buffer
        return (
            -math.inf if self.min_diff is None else self.min_diff,
            math.inf if self.max_diff is None else self.max_diff,
        )


class TableConfig(pydantic.BaseModel):
    """One replay table: what it stores, how it selects, evicts and limits."""

    model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = pydantic.Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    """Table name used by writers and samplers."""
    signature: dict[str, ColumnConfig]
    """Column name -> dtype and per-step shape."""
    sequence_length: pydantic.PositiveInt = 1
    """Steps per item: 1 for transitions, T for trajectories of length T."""
    max_size: pydantic.PositiveInt = 100_000
    """Items held; storage for them is allocated at start."""
    selector: Literal["fifo", "lifo", "uniform", "prioritized"] = "uniform"
    """How samples are chosen."""
    remover: Literal["fifo", "lifo"] = "fifo"
    """Which item is evicted when an insert finds the table full."""
    max_times_sampled: pydantic.NonNegativeInt = 0
    """Remove an item once sampled this often; 0 keeps it until evicted."""
    priority_exponent: pydantic.NonNegativeFloat = 0.6
    """Exponent alpha of prioritized selection, P(i) ~ priority_i ** alpha."""
    max_policy_lag: pydantic.NonNegativeInt = 0
    """Queues (fifo or lifo selector with max_times_sampled): drop, unsampled, items whose policy
    version is older than the sampler's by more than this; 0 keeps every item."""
    rate_limiter: RateLimiterConfig = RateLimiterConfig()
    """Rate limiter settings."""
    max_writer_ids: pydantic.PositiveInt = 65_536
    """Writers whose last chunk the table remembers, to take a retried chunk for the duplicate it is;
    beyond this the writer idle longest is forgotten (a retry of its last chunk would be stored again).
    Writer ids are kept per token, so one client's ids never match another's."""

    @pydantic.field_validator("signature")
    @classmethod
    def _not_empty(cls, value: dict[str, ColumnConfig]) -> dict[str, ColumnConfig]:
        if not value:
            raise ValueError("a table needs at least one column")
        return value

    @pydantic.model_validator(mode="after")
    def _bounds_fit(self) -> TableConfig:
        self.build_signature()  # bounds that do not fit their column are refused here, naming it
        return self

    @pydantic.model_validator(mode="after")
    def _lag_on_queues_only(self) -> TableConfig:
        if self.max_policy_lag and not (self.selector in ("fifo", "lifo") and self.max_times_sampled):
            raise ValueError(
                "max_policy_lag: only queues drop stale items; it needs selector fifo or lifo and max_times_sampled"
            )
        return self

    @classmethod
    def queue(
        cls, name: str, signature: dict, max_size: int, sequence_length: int = 1, max_policy_lag: int = 0
    ) -> TableConfig:
        """A FIFO queue: every item is sampled exactly once, inserts block when full."""
        return cls(
            name=name,
            signature=signature,
            sequence_length=sequence_length,
            max_size=max_size,
            selector="fifo",
            max_times_sampled=1,
            max_policy_lag=max_policy_lag,
            rate_limiter=RateLimiterConfig(min_size_to_sample=1, samples_per_insert=1.0, min_diff=0, max_diff=max_size),
        )

    def build_signature(self) -> Signature:
        try:
            return Signature(
                [
                    Column.bounded(name, np.dtype(c.dtype), tuple(c.shape), c.low, c.high, c.out_of_bounds)
                    for name, c in self.signature.items()
                ]
            )
        except ValueError as error:
            raise ValueError(f"signature: {error}") from None


class CassandraConfig(pydantic.BaseModel):
    """Where and how replay keeps acknowledged experience in a Cassandra ring."""

    model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

    contact_points: list[str] = pydantic.Field(default=["127.0.0.1"], min_length=1)
    """Host names or addresses of some nodes of the ring."""
    port: int = pydantic.Field(default=9042, ge=1, le=65535)
    """CQL port."""
    keyspace: str = pydantic.Field(default="rlrings", pattern=r"^[a-z][a-z0-9_]{0,47}$")
    """Keyspace, created with the replication below when missing."""
    replication_factor: pydantic.PositiveInt = 1
    """Copies of every chunk (3 in a cluster)."""
    consistency: Literal["ONE", "TWO", "THREE", "QUORUM", "LOCAL_QUORUM", "EACH_QUORUM", "ALL"] = "QUORUM"
    """Consistency level of writes and reads; an insert is acknowledged only once reached."""
    ttl_seconds: pydantic.NonNegativeInt = 7 * 24 * 3600
    """Seconds before stored experience expires; 0 keeps it forever."""
    username: str | None = None
    """User name (from a Secret, through RLRINGS_REPLAY_CASSANDRA__USERNAME)."""
    password: pydantic.SecretStr | None = None
    """Password (from a Secret, through RLRINGS_REPLAY_CASSANDRA__PASSWORD); never logged."""
    replication_strategy: Literal["SimpleStrategy", "NetworkTopologyStrategy"] = "SimpleStrategy"
    """Replication class of a keyspace the service creates."""
    datacenter: str = "datacenter1"
    """Data center that holds the copies under NetworkTopologyStrategy."""
    shard: str = pydantic.Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """This replay shard's name in the ring's partition keys; shards sharing a ring need distinct
    names. Defaults to the host name, which is stable for a StatefulSet's pods (replay-0, replay-1)."""
    window_seconds: pydantic.PositiveInt = 600
    """Width of a time bucket: rows written in one window share partitions (and TWCS windows)."""
    partition_bytes: int = pydantic.Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    """A window's partition is closed for a new one after this many bytes (Cassandra wants < 100 MB)."""
    segment_bytes: int = pydantic.Field(default=512 * 1024, ge=4096, le=4 * 1024 * 1024)
    """Largest row: a chunk above it is split by items into several rows."""
    compression: Literal["none", "lz4", "zstd"] = "lz4"
    """How columns that arrive uncompressed are compressed in the ring's rows (fewer bytes through
    every replica's commit log and network); columns a writer compressed are stored as they came."""
    max_pending_bytes: int = pydantic.Field(default=32 * 1024 * 1024, ge=1024 * 1024)
    """Bytes of rows sent and not yet confirmed, across all streams; beyond it new writes wait, so a
    slow ring slows the writers (through gRPC flow control) instead of filling memory or the nodes' heaps."""
    request_timeout_seconds: pydantic.PositiveFloat = 10.0
    """Client-side timeout of one CQL request."""
    write_attempts: pydantic.PositiveInt = 5
    """Tries of one statement: the driver's retry policy takes a replica's timeout, unavailable replicas
    and broken connections up to this many tries, and a statement the driver gave up on (its client-side
    timeout, no node answering) is sent again as many times, with backoff. A chunk whose write still fails
    fails its insert with UNAVAILABLE; it is never acknowledged without a successful write."""
    connect_timeout_seconds: pydantic.NonNegativeFloat = 0.0
    """Give up and exit when the ring stays unreachable this long at start; 0 retries forever
    (health reports NOT_SERVING meanwhile)."""
    state_interval_seconds: pydantic.PositiveFloat = 2.0
    """How often each table's counters and oldest key are saved, for the rebuild after a crash."""
    sample_beyond_memory: bool = True
    """Uniform tables with a FIFO remover also sample items evicted from memory but still
    in the ring, in proportion to their number, through a reservoir refreshed in the background."""
    reservoir_items: pydantic.PositiveInt = 4096
    """Items of the ring's older experience each such table keeps at hand for sampling."""


class AckLogConfig(pydantic.BaseModel):
    """The embedded store's acknowledgement log (see :mod:`rlrings.services.replay.ack_log`)."""

    model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

    enabled: bool = True
    """Log every chunk before its ack, so an ack survives kill -9; off: only snapshots keep data."""
    sync: Literal["periodic", "always"] = "periodic"
    """When the log reaches the disk: periodic (every sync_interval_seconds; a machine crash may lose
    that much) or always (before each ack; survives power loss, costs a disk sync per chunk)."""
    sync_interval_seconds: pydantic.PositiveFloat = 1.0
    """Seconds between syncs under sync: periodic."""
    max_bytes: int = pydantic.Field(default=1 << 30, ge=1 << 20)
    """A snapshot is taken early when the log grows past this, which bounds its disk use and the
    time a restart spends reading it."""


class ReplayConfig(ServiceConfig):
    """Settings of the replay service."""

    model_config = SettingsConfigDict(env_prefix="RLRINGS_REPLAY_", env_nested_delimiter="__")

    tables: list[TableConfig] = []
    """Tables to serve (a JSON list on the command line, a YAML list in the file); none: the tables
    ``env``, ``algorithm`` and ``mesh`` need, derived at start as rlrings up plans them."""
    env: str | None = None
    """With no tables given: the game the mesh plays, whose spaces shape the tables."""
    algorithm: CliSuppress[dict[str, Any] | str | None] = None
    """With no tables given: the mesh's algorithm and the settings given to it (as actors and the
    learner get them); its learner's table and the viewer's demonstrations are served."""
    mesh: CliSuppress[MeshShape] = MeshShape()
    """With no tables given: the mesh's shape (queues hold a batch and one write of every env)."""
    table: str = "experience"
    """With no tables given: the name of the learner's table."""
    store: Literal["memory", "embedded", "cassandra"] = "embedded"
    """memory: nothing survives a restart; embedded: snapshots and an acknowledgement log in snapshot_dir;
    cassandra: every chunk is written to the ring described by ``cassandra`` before it is acknowledged;
    a restarted shard rebuilds its tables from the ring."""
    cassandra: CassandraConfig = CassandraConfig()
    """The Cassandra ring, when store is cassandra."""
    snapshot_dir: Path = Path("./data/replay")
    """Where the embedded store keeps its snapshot."""
    snapshot_interval_seconds: pydantic.NonNegativeFloat = 300.0
    """Seconds between automatic snapshots; 0 snapshots only on Checkpoint, at shutdown and when the
    acknowledgement log is full."""
    ack_log: AckLogConfig = AckLogConfig()
    """With store embedded: every chunk is logged before its ack; a restart reads the log back on top
    of the snapshot."""
    port: int = pydantic.Field(default=8000, ge=0, le=65535)
    """gRPC port; 0 picks a free one (printed at start)."""
    metrics_port: int = pydantic.Field(default=9000, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 picks a free one."""
    max_chunk_bytes: int = pydantic.Field(default=64 * 1024 * 1024, ge=64 * 1024)
    """Most bytes one inserted chunk may decode to. Declared shapes are checked against it and the
    table's signature before anything is decompressed, so a compressed message cannot claim more."""
    max_sample_batch_size: pydantic.PositiveInt = 8192
    """Most items one Sample batch may ask for (a batch is drawn under its table's lock)."""

    @pydantic.model_validator(mode="after")
    def _tables(self) -> ReplayConfig:
        """The tables given, or those the mesh's env and algorithm need (one function,
        ``rlrings.core.experience.mesh_tables``, for rlrings up and for the chart's pods)."""
        if not self.tables and self.env is not None:
            self.tables = [TableConfig.model_validate(table) for table in derived_tables(self)]
        if not self.tables:
            raise ValueError("tables: none configured; give at least one (config file or --tables), or env")
        names = [table.name for table in self.tables]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"tables: duplicate table names {duplicated}")
        return self


def derived_tables(config: ReplayConfig) -> list[dict]:
    """The tables of a mesh playing ``config.env`` with ``config.algorithm`` (imports the algorithms,
    and with them PyTorch, only here: a replay given its tables never needs them)."""
    from rlrings import algorithms
    from rlrings.core import experience
    from rlrings.envs import env_spec

    settings = pydantic.TypeAdapter(algorithms.AlgorithmSettings).validate_python(config.algorithm or {})
    try:
        spec = env_spec(config.env)
    except RlringsError as error:
        raise ValueError(f"env: {error}") from None
    try:
        return experience.mesh_tables(settings, spec, config.mesh, config.table)
    except RlringsError as error:
        raise ValueError(f"algorithm: {error}") from None
