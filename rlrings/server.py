"""What every rlrings gRPC server has: health, reflection, metrics, error
mapping and a graceful stop.

A service builds a :class:`Server`, adds its servicer, and calls
:meth:`Server.run` from its entry point (or :meth:`Server.start` and
:meth:`Server.stop` from tests).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Histogram, start_http_server

from rlrings.config import ServiceConfig, load_config
from rlrings.errors import CancelledError, ConfigError, RlringsError
from rlrings.processes import follow_supervisor, limit_malloc_arenas, yield_cpu
from rlrings.security import AuthInterceptor

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


LIVENESS = "liveness"


class Server:
    """A gRPC server with health, reflection and a Prometheus endpoint."""

    def __init__(self, config: ServiceConfig, name: str):
        self.config = config
        self.name = name
        self.registry = CollectorRegistry()
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self._services = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
        limit = config.max_message_bytes
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix=f"{name}-rpc"),
            # the status interceptor is outermost: it maps and counts what the auth checks refuse
            interceptors=[
                StatusAndMetricsInterceptor(self.registry),
                AuthInterceptor(config.auth, config.tls, self.registry),
            ],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),  # a taken port is an error, not a silent second listener
            ],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        self._health_only: grpc.Server | None = None
        if config.health_port is not None:  # plaintext, for probes that cannot speak TLS
            self._health_only = grpc.server(
                futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"{name}-health")
            )
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_only)
        self._metrics_http = None
        self.port = 0
        self.health_port = 0
        self.metrics_port = 0
        self._stop_requested = threading.Event()
        self._signalled = False  # set by SIGTERM/SIGINT (see _on_signal)
        self.serving_at_start = True
        """False for a service that reports SERVING itself once ready (replay waiting for its ring)."""

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def add(self, register: Callable, servicer, service_name: str) -> None:
        """Adds a servicer; ``service_name`` is its full proto name."""
        register(servicer, self._grpc)
        self._services.append(service_name)

    def start(self) -> Server:
        """Binds, starts serving and marks every service SERVING."""
        where = f"{self.config.host}:{self.config.port}"
        credentials = self.config.tls.server_credentials()
        self.port = _bind(self._grpc, where, credentials)
        if not self.port:
            raise OSError(f"{self.name}: cannot bind gRPC to {where} (in use, or not an address of this host)")
        if self._health_only is not None:
            health_where = f"{self.config.host}:{self.config.health_port}"
            self.health_port = _bind(self._health_only, health_where, None)
            if not self.health_port:
                raise OSError(f"{self.name}: cannot bind the health port to {health_where}")
            self._health_only.start()
        reflection.enable_server_reflection(self._services, self._grpc)
        try:
            self._metrics_http, _ = start_http_server(
                self.config.metrics_port, self.config.host, registry=self.registry
            )
        except OSError as error:
            raise OSError(
                f"{self.name}: cannot bind metrics to {self.config.host}:{self.config.metrics_port} ({error.strerror})"
            ) from None
        self.metrics_port = self._metrics_http.server_port
        self._grpc.start()
        # "liveness" answers SERVING while the process runs, even before it is ready
        # (a replay shard waiting for its ring): liveness probes ask for it, readiness for "".
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self.set_serving(self.serving_at_start)
        log.info(
            "%s serving gRPC%s on %s, metrics on http://%s:%d/metrics%s",
            self.name,
            " over TLS" + (" (client certificates required)" if self.config.tls.mutual else "") if credentials else "",
            self.address,
            self.config.host,
            self.metrics_port,
            f", health checks also on plaintext port {self.health_port}" if self.health_port else "",
        )
        return self

    def set_serving(self, serving: bool) -> None:
        """Reports every service SERVING or NOT_SERVING to health checks."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ["", *self._services[2:]]:
            self.health.set(service, status)

    def stop(self, grace: float | None = None, drain: Callable[[], None] = lambda: None) -> None:
        """Reports NOT_SERVING, refuses new RPCs, calls ``drain`` (which should
        release calls that wait on something, such as watch streams), lets
        running calls finish within ``grace`` seconds, then cancels the rest."""
        self.health.enter_graceful_shutdown()
        stopped = self._grpc.stop(self.config.grace_seconds if grace is None else grace)
        drain()
        stopped.wait()
        if self._health_only is not None:
            self._health_only.stop(0).wait()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None

    def request_stop(self) -> None:
        """Makes :meth:`run` stop as if SIGTERM had arrived."""
        self._stop_requested.set()

    @property
    def stop_requested(self) -> bool:
        return self._signalled or self._stop_requested.is_set()

    def _on_signal(self, signum, frame) -> None:
        # A handler runs on the main thread between bytecodes, possibly inside another handler or inside
        # Event.wait: it only sets a plain attribute. Setting the Event here could block forever on the
        # Event's own lock when a second signal arrives during the first handler's Event.set().
        self._signalled = True

    def run(
        self,
        on_stop: Callable[[], None] = lambda: None,
        drain: Callable[[], None] = lambda: None,
        ready: Callable[[Server], None] | None = None,
    ) -> int:
        """Starts, serves until SIGTERM or SIGINT, stops gracefully (see
        :meth:`stop`), then runs ``on_stop`` (flushing state). Returns 0."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.start()
        print(f"{self.name} listening on {self.address} (metrics port {self.metrics_port})", flush=True)
        if ready is not None:
            ready(self)
        while not self._signalled and not self._stop_requested.wait(0.2):
            pass  # the short wait lets a signal's flag be seen; the Event serves request_stop()
        log.info("%s stopping: refusing new calls, %.1fs grace", self.name, self.config.grace_seconds)
        self.stop(drain=drain)
        on_stop()
        log.info("%s stopped", self.name)
        return 0


def _bind(server: grpc.Server, where: str, credentials: grpc.ServerCredentials | None) -> int:
    """The port bound at ``where`` (0 if it could not be)."""
    try:
        if credentials is None:
            return server.add_insecure_port(where)
        return server.add_secure_port(where, credentials)
    except RuntimeError:
        return 0


class StatusAndMetricsInterceptor(grpc.ServerInterceptor):
    """Maps :class:`RlringsError` to its status code, logs unexpected errors
    as INTERNAL, and records every RPC's latency by method and code."""

    def __init__(self, registry: CollectorRegistry):
        self.latency = Histogram(
            "rlrings_grpc_server_handling_seconds",
            "Time from the start of an RPC to its status, by method and code.",
            ["service", "method", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")

        def observe(context: grpc.ServicerContext, start: float) -> None:
            code = context.code() or grpc.StatusCode.OK
            self.latency.labels(service, method, code.name).observe(time.perf_counter() - start)

        if handler.unary_unary or handler.stream_unary:
            behavior = handler.unary_unary or handler.stream_unary

            def unary(request, context):
                start = time.perf_counter()
                try:
                    return behavior(request, context)
                except BaseException as error:
                    if _client_left(error, context):
                        return None  # nobody to answer
                    _end_with_status(error, context)
                finally:
                    observe(context, start)

            make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            return make(unary, handler.request_deserializer, handler.response_serializer)

        behavior = handler.unary_stream or handler.stream_stream

        def streaming(request, context):
            start = time.perf_counter()
            try:
                yield from behavior(request, context)
            except BaseException as error:
                if _client_left(error, context):
                    return  # nobody to answer
                _end_with_status(error, context)
            finally:
                observe(context, start)

        make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return make(streaming, handler.request_deserializer, handler.response_serializer)


def _client_left(error: BaseException, context: grpc.ServicerContext) -> bool:
    """Whether ``error`` only says the client cancelled or went away: reading its next request
    failed, or a wait noticed it had gone. Such an end is no internal error and is not logged as one."""
    return isinstance(error, grpc.RpcError | CancelledError) and not context.is_active()


def _end_with_status(error: BaseException, context: grpc.ServicerContext) -> None:
    """Ends the RPC with the status for ``error``; always raises.

    ``context.abort`` records the code on the context, where the latency
    histogram reads it.
    """
    already = context.code()
    if isinstance(error, GeneratorExit) or already not in (None, grpc.StatusCode.OK):
        # The client cancelled the stream, or the servicer aborted by itself.
        raise error
    if isinstance(error, RlringsError):
        code, message = grpc.StatusCode[error.code], str(error)
    else:
        log.error("internal error in RPC", exc_info=error)
        code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}"
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


@dataclass
class Service:
    """A built service, as :func:`service_main` runs it."""

    server: Server
    on_stop: Callable[[], None] = lambda: None
    """Flushes state after the server has stopped (a snapshot, a checkpoint)."""
    drain: Callable[[], None] = lambda: None
    """Releases calls that wait (watch streams, blocked samples) when stopping begins."""
    loop: Callable[[], None] | None = None
    """Work the process does besides serving (acting, training); the process stops when it ends."""


def service_main(name: str, config_cls: type[ServiceConfig], build: Callable, argv: Sequence[str] | None) -> int:
    """The entry point every service shares: settings, logging, serving until
    SIGTERM, and an exit status (0; 1 on failure; 2 on bad settings)."""
    follow_supervisor()
    limit_malloc_arenas()
    try:
        config = load_config(config_cls, sys.argv[1:] if argv is None else argv)
        logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        service: Service = build(config)
    except ConfigError as error:
        print(f"rlrings {name}: {error}", file=sys.stderr)
        return 2
    failure: dict[str, BaseException] = {}

    def start_loop(server: Server) -> None:
        def body() -> None:
            try:
                service.loop()
            except BaseException as error:
                if not server.stop_requested:  # errors of an orderly stop are not failures
                    failure["error"] = error
            server.request_stop()

        if service.loop is not None:
            threading.Thread(target=body, name=f"{name}-loop", daemon=True).start()
        yield_cpu()  # started at full priority; from here on a niced service yields to training

    try:
        service.server.run(on_stop=service.on_stop, drain=service.drain, ready=start_loop)
    except OSError as error:
        print(f"rlrings {name}: {error}", file=sys.stderr)
        return 1
    error = failure.get("error")
    if error is None:
        return 0
    if isinstance(error, RlringsError):
        print(f"rlrings {name}: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
    log.error("%s failed", name, exc_info=error)
    return 1
