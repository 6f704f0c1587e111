"""Typed service configuration read from flags, environment and a YAML file.

Each service declares one pydantic-settings class with a docstring under every
field; :func:`load_config` parses it once at the entry point. Precedence, from
strongest: command-line flags, environment variables (``RLRINGS_<SERVICE>_``
prefix), the YAML file named by ``--config`` (or ``RLRINGS_<SERVICE>_CONFIG``),
then defaults. Any problem becomes a :class:`ConfigError` that names the
setting.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml
from pydantic_settings import BaseSettings, InitSettingsSource, SettingsConfigDict

from rlrings.errors import ConfigError
from rlrings.security import AuthConfig, ClientSecurity, TlsConfig

_file_values: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("rlrings_config_file")


class Settings(BaseSettings):
    """Base of every rlrings settings class: flags > environment > file > defaults."""

    model_config = SettingsConfigDict(
        use_attribute_docstrings=True,
        cli_kebab_case=True,
        cli_implicit_flags=True,
        extra="forbid",
        validate_default=True,
        env_nested_delimiter="__",
    )

    config: Path | None = None
    """YAML file with settings; flags and environment variables override it."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        return (init_settings, env_settings, InitSettingsSource(settings_cls, _file_values.get({})))


class ServiceConfig(Settings):
    """Settings every rlrings server has."""

    host: str = "127.0.0.1"
    """Address the gRPC server binds to ("0.0.0.0" in a container)."""
    port: int = pydantic.Field(default=0, ge=0, le=65535)
    """gRPC port; 0 picks a free one (printed at start)."""
    metrics_port: int = pydantic.Field(default=0, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 picks a free one."""
    max_message_bytes: int = pydantic.Field(default=4 * 1024 * 1024, ge=64 * 1024)
    """Largest gRPC message accepted or sent; larger requests get RESOURCE_EXHAUSTED."""
    workers: int = pydantic.Field(default=16, ge=1)
    """Threads for the short work of calls (unary calls, one message of a stream at a time).
    An open stream holds none while it waits for its client or for news."""
    wait_threads: int = pydantic.Field(default=64, ge=1)
    """Threads for calls blocked in the service itself (an insert held by its table's rate limiter,
    a sample waiting for items): past this many at once, further ones queue."""
    max_concurrent_rpcs: int = pydantic.Field(default=1024, ge=1)
    """Calls in progress at once, streams included; past it new calls get RESOURCE_EXHAUSTED (and
    health answers NOT_SERVING until calls end)."""
    max_streams_per_connection: int = pydantic.Field(default=128, ge=1)
    """HTTP/2 streams one client connection may hold open at once."""
    idle_stream_seconds: float | None = pydantic.Field(default=600.0, gt=0)
    """A stream whose client sends nothing for this long while the server waits for its next
    message is closed with UNAVAILABLE (the SDK's writers and samplers open a new one when they
    need it); None: kept open however long."""
    grace_seconds: float = pydantic.Field(default=5.0, ge=0)
    """On SIGTERM, how long in-flight RPCs may run on before they are cancelled."""
    log_level: str = "INFO"
    """Python logging level name."""
    tls: TlsConfig = TlsConfig()
    """TLS of this server and of the clients it dials other services with."""
    auth: AuthConfig = AuthConfig()
    """Tokens this server accepts, and the one its clients present (RLRINGS_<SERVICE>_AUTH__TOKEN)."""
    health_port: int | None = pydantic.Field(default=None, ge=0, le=65535)
    """A plaintext port answering health checks only, for probes that cannot speak TLS
    (Kubernetes' gRPC probes); None: none; 0 picks a free one."""

    def client_security(self) -> ClientSecurity:
        """How this process dials other services."""
        return ClientSecurity.of(self.tls, self.auth)


C = TypeVar("C", bound=Settings)


def load_config(cls: type[C], argv: Sequence[str] | None = None, prog: str = "rlrings", **overrides: Any) -> C:
    """Parses ``cls`` from flags (``argv``), the environment and the config file.

    ``prog`` is the command that ``--help`` names (``rlrings replay``); ``overrides`` are
    applied on top, for callers that build a config in code.

    Raises:
        ConfigError: an unreadable file or an invalid value, naming it.
    """
    argv = list(argv or [])
    env_prefix = cls.model_config.get("env_prefix", "")
    path = _config_path(argv) or os.environ.get(f"{env_prefix}CONFIG")
    token = _file_values.set(read_yaml(Path(path)) if path else {})
    try:
        config = cls(_cli_parse_args=argv, _cli_prog_name=prog, **overrides)
    except pydantic.ValidationError as error:
        raise ConfigError(_describe(error, path)) from None
    except SystemExit as error:  # argparse rejects unknown flags by exiting
        if error.code in (0, None):
            raise
        raise ConfigError(f"bad command-line flags: {' '.join(argv)}") from None
    finally:
        _file_values.reset(token)
    return config


def read_yaml(path: Path) -> dict[str, Any]:
    """Reads a YAML mapping from ``path``, with errors that name the file."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"config file {path}: cannot read it ({error.strerror or error})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path}: not valid YAML ({error})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings, found {type(values).__name__}")
    return {key.replace("-", "_"): value for key, value in values.items()}


def _config_path(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _describe(error: pydantic.ValidationError, path: str | None) -> str:
    where = f" (config file {path}, flags or environment)" if path else ""
    problems = [
        f"{'.'.join(str(part) for part in problem['loc']) or 'config'}: {problem['msg']}"
        + (
            f" (got {problem['input']!r})"
            if problem["type"] != "missing" and not isinstance(problem["input"], dict)
            else ""
        )
        for problem in error.errors()
    ]
    return f"invalid settings{where}: " + "; ".join(problems)


class WorkerConfig(ServiceConfig):
    """Settings shared by the processes that act or learn inside a mesh."""

    replay_address: str = "127.0.0.1:8000"
    """Replay service to write experience to or sample from."""
    parameter_address: str = "127.0.0.1:8001"
    """Parameter service to take weights from or publish them to."""
    env: str = "CartPole-v1"
    """Environment id: a Gymnasium id, 'crafter' or 'minerl:<id>'."""
    table: str = "experience"
    """Replay table of the experience."""
    seed: int = 0
    """Seed of environments, sampling and initial weights."""
    torch_threads: pydantic.PositiveInt = 1
    """CPU threads PyTorch may use."""
