"""TLS, tokens and per-client limits, for every rlrings server and client.

Services are exposed to game clients outside the cluster, so a server can:

- speak TLS (``tls.cert_file``/``tls.key_file``), and with ``tls.mutual`` require
  client certificates signed by ``tls.ca_file`` (mutual TLS between services);
- require a bearer token (``auth.tokens_file``): each token has a name, scopes
  and limits. An RPC needs one scope (:data:`METHOD_SCOPES`): no token or an
  unknown one is UNAUTHENTICATED, a token without the scope is
  PERMISSION_DENIED (an upload-only token may insert, not sample or publish);
- limit each token's message size, decoded insert rate and concurrent calls
  (RESOURCE_EXHAUSTED).

Health checks and reflection stay open, so probes work whatever the settings;
with TLS on, a server also answers health checks on a plaintext
``health_port``, which is all Kubernetes' gRPC probes can speak. A peer that
presents a client certificate the CA signed is a service of the mesh and may
call what ``auth.certificate_scopes`` gives its common name (everything when
that is empty). Secrets never reach logs, metrics or error messages: tokens
are named by their ``name`` only, and held as ``SecretStr``.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pydantic
import yaml
from prometheus_client import CollectorRegistry, Counter

from rlrings.core.errors import (
    ConfigError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)

SCOPES = ("insert", "sample", "read", "publish", "control", "act")
METHOD_SCOPES = {
    "/rlrings.v1.ReplayService/Insert": "insert",
    "/rlrings.v1.ReplayService/Sample": "sample",
    "/rlrings.v1.ReplayService/UpdatePriorities": "sample",
    "/rlrings.v1.ReplayService/Info": ("read", "insert"),
    "/rlrings.v1.ReplayService/Checkpoint": "control",
    "/rlrings.v1.ParameterService/Publish": "publish",
    "/rlrings.v1.ParameterService/ReportEvaluation": "publish",
    "/rlrings.v1.ParameterService/DeleteTag": "publish",
    "/rlrings.v1.ParameterService/Fetch": "read",
    "/rlrings.v1.ParameterService/Watch": "read",
    "/rlrings.v1.ParameterService/List": "read",
    "/rlrings.v1.ActorService/GetStatus": "read",
    "/rlrings.v1.LearnerService/GetStatus": "read",
    "/rlrings.v1.ViewerService/ListEnvironments": "read",
    "/rlrings.v1.ViewerService/ListDemonstrations": "read",
    "/rlrings.v1.ViewerService/Watch": "read",
    "/rlrings.v1.InferenceService/Act": "act",
}
"""The scope each RPC needs (a tuple: any one of them); any other rlrings RPC (pause, resume, config
updates, Play) needs 'control'. 'act' is for actors and game servers that ask the inference
service for actions. Replay's Info answers an insert-only writer too, with only what
writing needs (the tables' signatures), so game clients need no 'read' to upload."""
COMPONENT_SCOPES = {
    "actor": ["insert", "read", "act"],  # writes experience, fetches and watches weights, or asks for actions
    "learner": ["sample", "read", "publish"],  # samples (and reprioritises), publishes weights
    "viewer": ["read", "insert"],  # fetches weights, records demonstrations
    "fewshot": ["read", "publish"],  # publishes and fetches each job's weights
    "inference": ["read"],  # watches and fetches weights
}
"""What each component of the mesh calls, and so the least its certificate or token may do: the
chart's ``security.componentScopes`` defaults and ``rlrings tokens`` (a test keeps them agreeing)."""
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""RPCs that need no token: health checks (probes) and reflection."""
INSERT_METHOD = "/rlrings.v1.ReplayService/Insert"
ACT_METHOD = "/rlrings.v1.InferenceService/Act"


class TlsConfig(pydantic.BaseModel):
    """TLS of a process's server and of the clients it dials other services with."""

    model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

    cert_file: Path | None = None
    """PEM certificate chain this process presents (as a server, and as a client under mutual TLS)."""
    key_file: Path | None = None
    """PEM private key of cert_file."""
    ca_file: Path | None = None
    """PEM CA bundle that signs the services' certificates: clients verify servers with it, and
    servers verify client certificates with it under mutual TLS."""
    mutual: bool = False
    """Servers require a client certificate signed by ca_file; clients present cert_file."""
    server_name: str | None = None
    """Name clients expect in servers' certificates instead of the dialled host (for example the
    Service name when dialling an IP)."""

    @pydantic.model_validator(mode="after")
    def _complete(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        if self.mutual and (self.cert_file is None or self.ca_file is None):
            raise ValueError("mutual needs cert_file, key_file and ca_file")
        for name in ("cert_file", "key_file", "ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        return self

    @property
    def serving(self) -> bool:
        return self.cert_file is not None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if not self.serving:
            return None
        pair = [(Path(self.key_file).read_bytes(), Path(self.cert_file).read_bytes())]
        root = Path(self.ca_file).read_bytes() if self.mutual else None
        return grpc.ssl_server_credentials(pair, root_certificates=root, require_client_auth=self.mutual)

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """Credentials for dialling a service; None: plaintext (no CA configured)."""
        if self.ca_file is None:
            return None
        key = Path(self.key_file).read_bytes() if self.mutual else None
        chain = Path(self.cert_file).read_bytes() if self.mutual else None
        return grpc.ssl_channel_credentials(Path(self.ca_file).read_bytes(), key, chain)


class ClientLimits(pydantic.BaseModel):
    """Limits of one token's calls."""

    model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_message_bytes: pydantic.PositiveInt | None = None
    """Largest request message this client may send (below the server's own limit)."""
    insert_bytes_per_second: pydantic.PositiveFloat | None = None
    """Sustained Insert traffic, in bytes per second as stored (decompressed: a well-compressed
    chunk is charged what it costs the table, not what it cost the network)."""
    insert_burst_bytes: pydantic.PositiveInt | None = None
    """Insert bytes allowed at once above the rate; default: one second's worth."""
    max_concurrent_calls: pydantic.PositiveInt | None = None
    """Calls (open streams included) this token may have in progress at once, over all its
    connections; None: only the server's own max_concurrent_rpcs bounds them."""
    act_observations_per_second: pydantic.PositiveFloat | None = None
    """Sustained observations this token may send the inference service (Act) per second: a
    game server's share of the device."""
    act_burst_observations: pydantic.PositiveInt | None = None
    """Act observations allowed at once above the rate; default: one second's worth."""


class Token(pydantic.BaseModel):
    """One client's token (from a Secret), what it may call, and its limits."""

    model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = pydantic.Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    """Who the token belongs to; the only part of it that logs, metrics and errors show."""
    token: pydantic.SecretStr
    """The bearer token itself (at least 16 characters)."""
    scopes: list[str]
    """What it may do: insert, sample, read, publish, control, act."""
    limits: ClientLimits = ClientLimits()

    @pydantic.field_validator("token")
    @classmethod
    def _long_enough(cls, value: pydantic.SecretStr) -> pydantic.SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("a token needs at least 16 characters")
        return value

    @pydantic.field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(SCOPES))
        if unknown:
            raise ValueError(f"unknown scopes {unknown}; known: {list(SCOPES)}")
        return value


class AuthConfig(pydantic.BaseModel):
    """Who may call this process's server, and the token it calls other services with."""

    model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

    tokens_file: Path | None = None
    """YAML list of tokens ({name, token, scopes, limits}) this server accepts; None: no tokens
    needed. Mount it from a Secret."""
    token: pydantic.SecretStr | None = None
    """Bearer token this process sends when it calls other services (from a Secret)."""
    trust_client_certificates: bool = True
    """Under mutual TLS, a peer with a certificate the CA signed (a service of the mesh) needs no
    token: it may do what ``certificate_scopes`` gives its certificate's common name."""
    certificate_scopes: dict[str, list[str]] = {}
    """Under mutual TLS, each client certificate's scopes by its common name (the chart gives each
    component its own certificate); a certificate not listed may do nothing. Empty: any certificate
    the CA signed may do everything. A token presented with a certificate narrows it to the
    scopes both hold."""

    @pydantic.field_validator("certificate_scopes")
    @classmethod
    def _known_certificate_scopes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, scopes in value.items():
            unknown = sorted(set(scopes) - set(SCOPES))
            if unknown:
                raise ValueError(f"{name}: unknown scopes {unknown}; known: {list(SCOPES)}")
        return value

    def tokens(self) -> list[Token]:
        if self.tokens_file is None:
            return []
        try:
            entries = yaml.safe_load(Path(self.tokens_file).read_text()) or []
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"auth.tokens_file {self.tokens_file}: cannot read it ({error})") from None
        if not isinstance(entries, list):
            raise ConfigError(f"auth.tokens_file {self.tokens_file}: expected a list of tokens")
        if not entries:  # read as "no tokens needed", an emptied Secret would open the server to anyone
            raise ConfigError(
                f"auth.tokens_file {self.tokens_file}: holds no tokens; an empty file does not turn authentication "
                "off: leave tokens_file unset to run without tokens"
            )
        tokens = []
        for i, entry in enumerate(entries):
            try:
                tokens.append(Token.model_validate(entry))
            except pydantic.ValidationError as error:
                problems = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in error.errors())
                raise ConfigError(f"auth.tokens_file {self.tokens_file}: token {i}: {problems}") from None
        names = [t.name for t in tokens]
        if len(set(names)) != len(names):
            raise ConfigError(f"auth.tokens_file {self.tokens_file}: token names repeat ({names})")
        by_secret: dict[str, list[str]] = {}
        for t in tokens:
            by_secret.setdefault(t.token.get_secret_value(), []).append(t.name)
        shared = [names for names in by_secret.values() if len(names) > 1]
        if shared:  # the server could not tell them apart: whose scopes would apply?
            raise ConfigError(
                f"auth.tokens_file {self.tokens_file}: tokens {shared[0]} share one secret; give each its own"
            )
        return tokens


# -- clients ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSecurity:
    """How a client dials: TLS credentials and the token it presents."""

    credentials: grpc.ChannelCredentials | None = None
    token: str | None = None
    server_name: str | None = None

    @classmethod
    def of(cls, tls: TlsConfig, auth: AuthConfig) -> ClientSecurity:
        token = auth.token.get_secret_value() if auth.token is not None else None
        return cls(tls.channel_credentials(), token, tls.server_name)

    def channel(self, address: str, options: list[tuple[str, object]]) -> grpc.Channel:
        options = list(options)
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        if self.credentials is not None:
            channel = grpc.secure_channel(address, self.credentials, options=options)
        else:
            channel = grpc.insecure_channel(address, options=options)
        if self.token:
            channel = grpc.intercept_channel(channel, _BearerToken(self.token))
        return channel


PLAINTEXT = ClientSecurity()


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str):
        self._metadata = ("authorization", f"Bearer {token}")

    def _details(self, details):
        metadata = [*(details.metadata or ()), self._metadata]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)  # fmt: skip

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: list
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


# -- servers ---------------------------------------------------------------------


class _Bucket:
    """A token bucket of bytes per second (thread-safe)."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.level, self.updated = burst, time.monotonic()
        self._lock = threading.Lock()

    def take(self, amount: float) -> bool:
        with self._lock:
            now = time.monotonic()
            self.level = min(self.burst, self.level + (now - self.updated) * self.rate)
            self.updated = now
            if amount > self.level:
                return False
            self.level -= amount
            return True


@dataclass
class _Client:
    token: Token
    digest: bytes
    bucket: _Bucket | None
    act_bucket: _Bucket | None = None
    calls: int = 0
    """Calls of this token in progress (changed on the server's event loop only)."""


@dataclass(frozen=True)
class Caller:
    """Who is calling the RPC being served, as servicers see it (:func:`current_caller`)."""

    name: str
    """The token's name: writer ids are kept per name, so one client cannot stand in for another."""
    scopes: frozenset[str]
    charge_insert: Callable[[int], None]
    """Charges stored bytes to the token's insert rate (raises ResourceExhaustedError above it)."""
    charge_act: Callable[[int], None] = lambda observations: None
    """Charges observations sent to the inference service to the token's act rate (raises
    ResourceExhaustedError above it)."""

    def may(self, scope: str) -> bool:
        return scope in self.scopes


class Admission:
    """Checks each call's token and scope and applies the token's limits (the serving
    interceptor of :mod:`rlrings.rpc.server` asks it, so refusals get their status codes
    and are counted by method and code like any other end)."""

    def __init__(self, auth: AuthConfig, tls: TlsConfig, registry: CollectorRegistry):
        self.clients = []
        for token in auth.tokens():
            secret = token.token.get_secret_value().encode()
            limits = token.limits
            bucket = None
            if limits.insert_bytes_per_second:
                burst = limits.insert_burst_bytes or limits.insert_bytes_per_second
                bucket = _Bucket(limits.insert_bytes_per_second, burst)
            acts = None
            if limits.act_observations_per_second:
                burst = limits.act_burst_observations or limits.act_observations_per_second
                acts = _Bucket(limits.act_observations_per_second, burst)
            self.clients.append(_Client(token, hashlib.sha256(secret).digest(), bucket, acts))
        self.trust_certificates = tls.mutual and auth.trust_client_certificates
        self.certificate_scopes = {name: frozenset(scopes) for name, scopes in auth.certificate_scopes.items()}
        self.required = (
            bool(self.clients)
            or (tls.mutual and not auth.trust_client_certificates)
            or (self.trust_certificates and bool(self.certificate_scopes))
        )
        self.rejected = Counter(
            "rlrings_auth_rejected",
            "Calls refused by authentication, scope or a client's limits, by method and reason.",
            ["method", "reason"],
            registry=registry,
        )

    def needed(self, method: str) -> bool:
        return self.required and not method.startswith(OPEN_PREFIXES)

    def admit(self, method: str, metadata: dict, context) -> _Client | None:
        """The calling client (None: a service of the mesh, by its certificate), which from here
        on :func:`current_caller` describes. An admitted client holds one of its call slots until
        :meth:`release`.

        Raises:
            UnauthenticatedError, PermissionDeniedError: naming what is missing, never a secret.
            ResourceExhaustedError: the token has ``max_concurrent_calls`` calls in progress.
        """
        certificate = self._certificate(context)
        header = metadata.get("authorization")
        if certificate is not None and not self.certificate_scopes and not header:
            return None  # one certificate for the whole mesh: it may do everything
        if certificate is not None and not header:
            held = self._certificate_scopes(certificate, method)
            self._check_scope(method, f"certificate {certificate!r}", held)
            _caller.set(Caller(f"certificate:{certificate}", held, _free))
            return None
        client = self.identify(header, method)
        held = frozenset(client.token.scopes)
        who = f"token {client.token.name!r}"
        if certificate is not None:  # a token narrows what the certificate may do
            held = held & self._certificate_scopes(certificate, method) if self.certificate_scopes else held
            who = f"token {client.token.name!r} with certificate {certificate!r}"
        self._check_scope(method, who, held)
        limit = client.token.limits.max_concurrent_calls
        if limit is not None and client.calls >= limit:
            self.rejected.labels(method, "concurrent_calls").inc()
            raise ResourceExhaustedError(
                f"calls: {client.token.name!r} has {client.calls} calls in progress, its max_concurrent_calls; "
                "end one (close idle streams) before starting another"
            )
        client.calls += 1
        _caller.set(Caller(client.token.name, held, lambda n: self.charge_insert(client, n),
                           lambda n: self.charge_act(client, n)))  # fmt: skip
        return client

    def _certificate(self, context) -> str | None:
        """The common name of the peer's client certificate, where certificates are trusted."""
        if not self.trust_certificates:
            return None
        names = context.auth_context().get("x509_common_name")
        return names[0].decode(errors="replace") if names else None

    def _certificate_scopes(self, certificate: str, method: str) -> frozenset[str]:
        scopes = self.certificate_scopes.get(certificate)
        if scopes is None:
            self.rejected.labels(method, "certificate").inc()
            raise PermissionDeniedError(
                f"certificate {certificate[:64]!r} is not in auth.certificate_scopes, so it may do nothing; "
                f"certificates listed: {sorted(self.certificate_scopes)}"
            )
        return scopes

    def _check_scope(self, method: str, who: str, held: frozenset[str]) -> None:
        needed = METHOD_SCOPES.get(method, "control")
        needed = needed if isinstance(needed, tuple) else (needed,)
        if not any(scope in held for scope in needed):
            self.rejected.labels(method, "scope").inc()
            raise PermissionDeniedError(
                f"{who} may {', '.join(sorted(held)) or 'nothing'}; "
                f"{method.rsplit('/', 1)[-1]} needs scope {' or '.join(map(repr, needed))}"
            )

    def release(self, client: _Client | None) -> None:
        """Gives back the call slot :meth:`admit` took."""
        if client is not None:
            client.calls -= 1

    def identify(self, header: str | None, method: str) -> _Client:
        if not header:
            self.rejected.labels(method, "missing").inc()
            raise UnauthenticatedError("authorization: no bearer token; send 'authorization: Bearer <token>'")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            self.rejected.labels(method, "malformed").inc()
            raise UnauthenticatedError("authorization: expected 'Bearer <token>'")
        digest = hashlib.sha256(presented.strip().encode()).digest()
        found = None
        for client in self.clients:  # compare every token in constant time
            if hmac.compare_digest(client.digest, digest):
                found = client
        if found is None:
            self.rejected.labels(method, "unknown").inc()
            raise UnauthenticatedError("authorization: the token is not recognised")
        return found

    def check_message(self, client: _Client | None, method: str, message) -> None:
        """Applies the client's message-size limit to one request message (the insert rate is
        charged by replay once it knows a chunk's decoded size, :meth:`charge_insert`)."""
        if client is None:
            return
        size = message.ByteSize()
        limits = client.token.limits
        if limits.max_message_bytes is not None and size > limits.max_message_bytes:
            self.rejected.labels(method, "message_size").inc()
            raise ResourceExhaustedError(
                f"message: {size:,} bytes is above the {limits.max_message_bytes:,} bytes allowed to "
                f"{client.token.name!r}; send smaller chunks"
            )

    def charge_insert(self, client: _Client, stored_bytes: int) -> None:
        """Takes ``stored_bytes`` (a chunk's size once decompressed) from the client's insert rate."""
        limits = client.token.limits
        self._charge(client.bucket, stored_bytes, INSERT_METHOD, "insert_rate", lambda: (
            f"insert rate: {client.token.name!r} is above its {limits.insert_bytes_per_second:,.0f} bytes/s "
            f"(counted decompressed; this chunk is {stored_bytes:,} bytes); what was not acknowledged was not "
            "stored, send it again more slowly"))  # fmt: skip

    def charge_act(self, client: _Client, observations: int) -> None:
        """Takes ``observations`` (one Act request's) from the client's act rate."""
        limits = client.token.limits
        self._charge(client.act_bucket, observations, ACT_METHOD, "act_rate", lambda: (
            f"act rate: {client.token.name!r} is above its {limits.act_observations_per_second:,.0f} "
            f"observations/s (this request has {observations:,}); ask again more slowly"))  # fmt: skip

    def _charge(self, bucket: _Bucket | None, amount: float, method: str, reason: str, message) -> None:
        if bucket is not None and not bucket.take(amount):
            self.rejected.labels(method, reason).inc()
            raise ResourceExhaustedError(message())


def _free(stored_bytes: int) -> None:
    """Charges nothing: certificates have no insert rate."""


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def current_caller() -> Caller | None:
    """The token calling the RPC being served; None without authentication and for a service of
    the mesh (by its certificate), which may do everything."""
    return _caller.get()


def caller_may(scope: str) -> bool:
    """Whether the caller of the RPC being served holds ``scope``: true without authentication
    and for a service of the mesh (by its certificate); for a token, whether the token lists it.
    Servicers use it where one call does more for more trusted callers (replay takes an
    insert-only writer's priorities only up to the table's ceiling)."""
    caller = _caller.get()
    return caller is None or caller.may(scope)
