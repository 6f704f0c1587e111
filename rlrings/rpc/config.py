"""Typed service configuration read from flags, environment and a YAML file.

Each service declares one pydantic-settings class with a docstring under every
field; :func:`load_config` parses it once at the entry point. Precedence, from
strongest: command-line flags, environment variables (``RLRINGS_<SERVICE>_``
prefix), the YAML file named by ``--config`` (or ``RLRINGS_<SERVICE>_CONFIG``),
then defaults. Any problem becomes a :class:`ConfigError` that names the
setting.

A *section* (``algorithm``) is a nested setting chosen by name, whose keys
depend on the name. Its sources compose in the same order, key by key, weakest
first: the chosen algorithm's defaults; the file's ``algorithm:`` (a name or a
mapping); ``RLRINGS_<SERVICE>_ALGORITHM`` (a name or JSON), then
``RLRINGS_<SERVICE>_ALGORITHM__<KEY>``; then the flags, left to right:
``--algorithm NAME``, ``--algorithm '{"name": ..., KEY: ...}'`` and
``--algorithm.KEY VALUE`` (``--algorithm.learning-rate`` and
``--algorithm.learning_rate`` alike; VALUE is read as JSON where it is JSON).
The name is the last one given; a key the named algorithm does not have is
refused, never dropped.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pydantic
import yaml
from pydantic_settings import BaseSettings, CliSettingsSource, InitSettingsSource, SettingsConfigDict, SettingsError

from rlrings.core.errors import ConfigError
from rlrings.core.text import plain
from rlrings.rpc.security import AuthConfig, ClientSecurity, TlsConfig

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

    sections: ClassVar[tuple[str, ...]] = ()
    """Nested settings chosen by name (``algorithm``), composed from every source by :func:`load_config`."""

    @classmethod
    def epilog(cls, chosen: dict[str, dict[str, Any]]) -> str:
        """Help after the flags, given the sections as composed so far (``{"algorithm": {"name": ...}}``)."""
        return ""

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
    path = _config_path(cls, argv, prog) or os.environ.get(f"{env_prefix}CONFIG")
    file_values = read_yaml(Path(path)) if path else {}
    argv, sections = compose_sections(cls, argv, file_values, env_prefix, path)
    token = _file_values.set(file_values)
    epilog = plain(cls.epilog(sections)) if {"-h", "--help"} & set(argv) else None
    parser = argparse.ArgumentParser(prog=prog, description=plain(cls.__doc__ or ""), epilog=epilog,
                                     formatter_class=_PlainHelp)  # fmt: skip
    try:
        source = CliSettingsSource(cls, cli_prog_name=prog, root_parser=parser)(args=argv)
        config = cls(_cli_settings_source=source, **{**sections, **overrides})
    except pydantic.ValidationError as error:
        raise ConfigError(_describe(error, path, sections)) from None
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


def _config_path(cls: type[Settings], argv: Sequence[str], prog: str) -> str | None:
    """The ``--config`` flag's value, read by the settings' own parser in a first pass that leaves
    every other flag (and ``--help``) to the second: the file is the weakest source, so it is read
    before the flags are applied over it."""
    first = [arg for arg in argv if arg not in ("-h", "--help")]
    source = CliSettingsSource(cls, cli_prog_name=prog, cli_ignore_unknown_args=True, cli_exit_on_error=False)
    try:
        path = source(args=first)().get("config")
    except SettingsError:
        return None  # the second pass reports what is wrong with the flags
    return None if path is None else str(path)


def _describe(error: pydantic.ValidationError, path: str | None, sections: dict | None = None) -> str:
    where = f" (config file {path}, flags or environment)" if path else ""
    problems = []
    for problem in error.errors():
        loc = list(problem["loc"])
        if len(loc) > 1 and loc[0] in (sections or {}) and loc[1] == sections[loc[0]].get("name"):
            del loc[1]  # the union's tag: algorithm.ppo.epochs reads algorithm.epochs
        message = problem["msg"].removeprefix("Value error, ")
        shown = (
            problem["type"] != "missing" and not isinstance(problem["input"], dict) and problem["type"] != "value_error"
        )
        problems.append(f"{'.'.join(str(part) for part in loc) or 'config'}: {message}"
                        + (f" (got {problem['input']!r})" if shown else ""))  # fmt: skip
    return f"invalid settings{where}: " + "; ".join(problems)


def compose_sections(
    cls: type[Settings], argv: list[str], file_values: dict[str, Any], env_prefix: str, path: str | None = None
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Takes each section's flags out of ``argv`` and composes the section from the file, the
    environment and those flags (the order in the module's docstring); the file's entry is taken
    out of ``file_values``. Returns the other flags and ``{section: mapping}`` for sections given.

    Raises:
        ConfigError: a section's value that is neither a name nor a mapping, or a flag without its value.
    """
    composed: dict[str, dict[str, Any]] = {}
    for section in cls.sections:
        layers: list[tuple[str, Any]] = []
        if section in file_values:
            layers.append((f"config file {path}: {section}", file_values.pop(section)))
        variable = f"{env_prefix}{section.upper()}"
        if variable in os.environ:
            layers.append((variable, _value(os.environ[variable], variable)))
        nested = sorted(name for name in os.environ if name.startswith(f"{variable}__"))
        layers += [(name, {name.removeprefix(f"{variable}__").lower(): _value(os.environ[name], name)})
                   for name in nested]  # fmt: skip
        argv, flags = _take_flags(argv, section)
        layers += flags
        merged: dict[str, Any] = {}
        for origin, value in layers:
            if isinstance(value, str):
                value = {"name": value}
            if not isinstance(value, dict):
                raise ConfigError(f"{section}: {origin} gives {value!r}; expected a name or a mapping of settings")
            merged.update({key.replace("-", "_"): item for key, item in value.items()})
        if layers:
            composed[section] = merged
    return argv, composed


def _take_flags(argv: list[str], section: str) -> tuple[list[str], list[tuple[str, Any]]]:
    """``argv`` without ``--section VALUE`` and ``--section.KEY VALUE`` (or ``=VALUE``), and those as
    (flag, value) in order; a ``--section.KEY`` with no value is true."""
    rest, taken, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        name, equals, inline = arg.partition("=")
        if name == f"--{section}" or name.startswith(f"--{section}."):
            key = name.removeprefix(f"--{section}").removeprefix(".")
            if equals:
                value = inline
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, i = argv[i + 1], i + 1
            elif key:
                value = "true"
            else:
                raise ConfigError(f"{section}: --{section} needs a value: a name or JSON settings")
            taken.append((name, {key: _value(value, name)} if key else _value(value, name)))
        else:
            rest.append(arg)
        i += 1
    return rest, taken


def _value(text: str, origin: str) -> Any:
    """A flag's or variable's text: JSON where it parses as JSON (8, 1e-3, true, null, {...}), else the
    text; text that opens a JSON object or list must be one.

    Raises:
        ConfigError: malformed JSON, naming ``origin`` (the flag or variable).
    """
    try:
        return json.loads(text)
    except ValueError as error:
        if text.lstrip().startswith(("{", "[")):
            raise ConfigError(f"{origin}: not valid JSON ({error}): {text[:200]!r}") from None
        return text


class _PlainHelp(argparse.RawDescriptionHelpFormatter):
    """Help whose flag texts carry no docstring markup."""

    def _expand_help(self, action):
        return plain(super()._expand_help(action))


class WorkerConfig(ServiceConfig):
    """Settings shared by the processes that act or learn inside a mesh."""

    replay_address: str = "127.0.0.1:8000"
    """Replay service to write experience to or sample from."""
    parameter_address: str = "127.0.0.1:8001"
    """Parameter service to take weights from or publish them to."""
    env: str = "CartPole-v1"
    """Environment id (every kind is listed below the flags)."""
    table: str = "experience"
    """Replay table of the experience."""
    seed: int = 0
    """Seed of environments, sampling and initial weights."""
    torch_threads: pydantic.PositiveInt = 1
    """CPU threads PyTorch may use."""
