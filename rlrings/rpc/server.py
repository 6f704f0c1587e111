"""What every rlrings gRPC server has: health, reflection, metrics, error
mapping, admission (tokens, scopes, limits) and a graceful stop.

Servers run on ``grpc.aio``, on an event loop of their own thread, so that an
open stream costs memory, not a thread: a stream waiting for its client's next
message, or a watcher waiting for news, holds none. Servicers may be written
either way:

- plain methods and generators (the short calls) run on a pool of ``workers``
  threads, one message at a time, with a context that offers ``is_active()``;
- ``async`` methods (the long streams: replay's Insert and Sample, the
  parameter service's Publish and Watch) run on the loop and hand blocking
  work to :func:`blocking`, which runs it on the ``wait_threads`` pool.

A service builds a :class:`Server`, adds its servicer, and calls
:meth:`Server.run` from its entry point (or :meth:`Server.start` and
:meth:`Server.stop` from tests).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Gauge, Histogram, ProcessCollector, start_http_server

from rlrings.core.errors import CancelledError, ConfigError, RlringsError, UnavailableError
from rlrings.ops.processes import follow_supervisor, limit_malloc_arenas, yield_cpu
from rlrings.rpc.config import ServiceConfig, load_config
from rlrings.rpc.reflection import enable as enable_reflection
from rlrings.rpc.security import Admission

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


LIVENESS = "liveness"


async def blocking(function: Callable, *args):
    """Runs ``function(*args)`` on the server's pool for blocking waits (see the module
    docstring) and returns its result; the caller's context variables go along."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(contextvars.copy_context().run, function, *args))


def register_process_metrics(registry: CollectorRegistry) -> None:
    """The process's own figures on ``registry``: Prometheus' standard ``process_*`` (resident
    and virtual memory, CPU seconds, open and maximum file descriptors, start time) plus
    ``process_threads``, every OS thread (gRPC's core and PyTorch's included, not only Python's)."""
    ProcessCollector(registry=registry)
    Gauge("process_threads", "OS threads of the process.", registry=registry).set_function(_os_threads)


def _os_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no /proc (macOS): Python's threads at least
        return threading.active_count()


class Server:
    """A gRPC server with health, reflection and a Prometheus endpoint."""

    def __init__(self, config: ServiceConfig, name: str):
        self.config = config
        self.name = name
        self.registry = CollectorRegistry()
        register_process_metrics(self.registry)
        self._loop = asyncio.new_event_loop()
        # blocking waits of async servicers (loop.run_in_executor(None, ...)) go to their own pool
        self._loop.set_default_executor(
            futures.ThreadPoolExecutor(config.wait_threads, thread_name_prefix=f"{name}-wait")
        )
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name=f"{name}-grpc", daemon=True)
        self._loop_thread.start()
        self._pool = futures.ThreadPoolExecutor(config.workers, thread_name_prefix=f"{name}-rpc")
        self.health = self._on_loop(_make_health())
        self._services = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
        self._serving = False  # what the service wants health to say; saturation can override it
        self.interceptor = ServingInterceptor(self, Admission(config.auth, config.tls, self.registry))
        limit = config.max_message_bytes
        options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),  # a taken port is an error, not a silent second listener
            ("grpc.max_concurrent_streams", config.max_streams_per_connection),
        ]
        self._grpc = self._on_loop(_make_server(self.interceptor, options, config.max_concurrent_rpcs))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        self._health_only: grpc.aio.Server | None = None
        if config.health_port is not None:  # plaintext, for probes that cannot speak TLS
            self._health_only = self._on_loop(_make_server(None, [], 64))
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_only)
        self._metrics_http = None
        self.port = 0
        self.health_port = 0
        self.metrics_port = 0
        self._stop_requested = threading.Event()
        self._signalled = False  # set by SIGTERM/SIGINT (see _on_signal)
        self._stopped = False
        self.serving_at_start = True
        """False for a service that reports SERVING itself once ready (replay waiting for its ring)."""

    def _on_loop(self, coroutine):
        """Runs a coroutine on the server's loop and waits for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    @property
    def pool(self) -> futures.ThreadPoolExecutor:
        """Threads that run plain (not async) handlers."""
        return self._pool

    def add(self, register: Callable, servicer, service_name: str) -> None:
        """Adds a servicer; ``service_name`` is its full proto name."""
        register(servicer, self._grpc)
        self._services.append(service_name)

    def _unbindable(self, setting: str, where: str, why: str) -> ConfigError:
        """A port that cannot be bound, as the setting to change (a flag or its environment variable)."""
        variable = type(self.config).model_config.get("env_prefix", "") + setting.upper()
        return ConfigError(
            f"cannot bind {where} ({why}); set --{setting.replace('_', '-')} or ${variable} "
            "to a free port, or 0 to pick one"
        )

    def start(self) -> Server:
        """Binds, starts serving and marks every service SERVING.

        Raises:
            ConfigError: a port that cannot be bound, naming its setting.
        """
        where = f"{self.config.host}:{self.config.port}"
        credentials = self.config.tls.server_credentials()
        self.port = _bind(self._grpc, where, credentials)
        if not self.port:
            raise self._unbindable("port", where, "in use, or not an address of this host")
        if self._health_only is not None:
            health_where = f"{self.config.host}:{self.config.health_port}"
            self.health_port = _bind(self._health_only, health_where, None)
            if not self.health_port:
                raise self._unbindable("health_port", health_where, "in use, or not an address of this host")
            self._on_loop(self._health_only.start())
        enable_reflection(self._services, self._grpc, descriptors=[health_pb2.DESCRIPTOR])
        try:
            self._metrics_http, _ = start_http_server(
                self.config.metrics_port, self.config.host, registry=self.registry
            )
        except OSError as error:
            where = f"{self.config.host}:{self.config.metrics_port}"
            raise self._unbindable("metrics_port", where, error.strerror or str(error)) from None
        self.metrics_port = self._metrics_http.server_port
        self._on_loop(self._grpc.start())
        # "liveness" answers SERVING while the process runs, even before it is ready
        # (a replay shard waiting for its ring): liveness probes ask for it, readiness for "".
        self._on_loop(self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING))
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
        self._serving = serving
        self._report_health(serving and not self.interceptor.saturated)

    def _report_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING

        async def report() -> None:
            for service in ["", *self._services[2:]]:
                await self.health.set(service, status)

        if _on_thread_of(self._loop):
            self._loop.create_task(report())
        else:
            self._on_loop(report())

    def stop(self, grace: float | None = None, drain: Callable[[], None] = lambda: None) -> None:
        """Reports NOT_SERVING, refuses new RPCs, calls ``drain`` (which should
        release calls that wait on something, such as watch streams), lets
        running calls finish within ``grace`` seconds, then cancels the rest."""
        if self._stopped:
            return
        self._stopped = True
        self._on_loop(self.health.enter_graceful_shutdown())
        stopping = asyncio.run_coroutine_threadsafe(
            self._grpc.stop(self.config.grace_seconds if grace is None else grace), self._loop
        )
        drain()
        stopping.result()
        if self._health_only is not None:
            self._on_loop(self._health_only.stop(0))
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)

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


async def _make_health() -> HealthServicer:
    return HealthServicer()  # (its conditions belong to the loop it is made on)


async def _make_server(interceptor, options, max_concurrent_rpcs: int) -> grpc.aio.Server:
    return grpc.aio.server(
        interceptors=[interceptor] if interceptor is not None else None,
        options=options,
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )


def _on_thread_of(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _bind(server: grpc.aio.Server, where: str, credentials: grpc.ServerCredentials | None) -> int:
    """The port bound at ``where`` (0 if it could not be)."""
    try:
        if credentials is None:
            return server.add_insecure_port(where)
        return server.add_secure_port(where, credentials)
    except RuntimeError:
        return 0


class _ThreadContext:
    """What a plain (thread-run) handler sees of its call's aio context."""

    def __init__(self, context: grpc.aio.ServicerContext):
        self._context = context

    def is_active(self) -> bool:
        return not self._context.done()

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Abort(code, details)

    def invocation_metadata(self):
        return self._context.invocation_metadata()

    def auth_context(self):
        return self._context.auth_context()

    def peer(self) -> str:
        return self._context.peer()

    def time_remaining(self):
        return self._context.time_remaining()


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code, self.details = code, details


_END = object()


class ServingInterceptor(grpc.aio.ServerInterceptor):
    """Every call passes here: plain handlers are moved onto the thread pool, the caller is
    admitted (token, scope, limits), errors become status codes (:class:`RlringsError` its
    own, anything else INTERNAL, logged), and latency is recorded by method and code."""

    def __init__(self, server: Server, admission: Admission):
        self.server = server
        self.admission = admission
        self.in_flight = 0
        self.saturated = False
        self.latency = Histogram(
            "rlrings_grpc_server_handling_seconds",
            "Time from the start of an RPC to its status, by method and code.",
            ["service", "method", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=server.registry,
        )
        Gauge(
            "rlrings_grpc_server_calls_in_flight", "Calls in progress, open streams included.", registry=server.registry
        ).set_function(lambda: self.in_flight)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        service, _, name = method.lstrip("/").rpartition("/")
        admission = self.admission if self.admission.needed(method) else None
        metadata = {key: value for key, value in (details.invocation_metadata or ())}
        kind = next(k for k in ("unary_unary", "unary_stream", "stream_unary", "stream_stream") if getattr(handler, k))
        behavior = getattr(handler, kind)
        native = inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)
        pool, loop = self.server.pool, asyncio.get_running_loop()

        def thread(function, *args):
            return loop.run_in_executor(pool, functools.partial(contextvars.copy_context().run, function, *args))

        idle = self.server.config.idle_stream_seconds

        def checked(requests, client):
            """The client's messages, each checked against its limits, the wait for each bounded by
            idle_stream_seconds (an idle stream costs the server little, but not nothing)."""
            if idle is None and (admission is None or client is None):
                return requests

            async def each():
                iterator = requests.__aiter__()
                while True:
                    try:
                        async with asyncio.timeout(idle):  # (cheaper per message than wait_for's task)
                            request = await anext(iterator)
                    except StopAsyncIteration:
                        return
                    except TimeoutError:
                        raise UnavailableError(
                            f"stream idle: nothing received for {idle:g} s (this server's idle_stream_seconds); "
                            "closed, open a new one when there is more to send"
                        ) from None
                    if admission is not None and client is not None:
                        admission.check_message(client, method, request)
                    yield request

            return each()

        def plain_requests(requests):
            """A blocking iterator over an async one, for a plain handler (holds its thread while it waits)."""
            iterator = requests.__aiter__()

            def each():
                while (request := asyncio.run_coroutine_threadsafe(_next(iterator), loop).result()) is not _END:
                    yield request

            return each()

        makers = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        make = functools.partial(makers[kind], request_deserializer=handler.request_deserializer,
                                 response_serializer=handler.response_serializer)  # fmt: skip
        streams_requests = kind.startswith("stream_")

        def begin(context, request, admitted: list) -> tuple[float, object]:
            """Admits the caller (into ``admitted``, to be released at the end) and readies its
            request(s) for the handler; returns (start, request)."""
            self._enter()
            client = admission.admit(method, metadata, context) if admission is not None else None
            admitted.append(client)
            if streams_requests:
                request = checked(request, client)
                return time.perf_counter(), (request if native else plain_requests(request))
            if admission is not None:
                admission.check_message(client, method, request)
            return time.perf_counter(), request

        def end(admitted: list, code: str, start: float) -> None:
            if admitted and admitted[0] is not None:
                admission.release(admitted[0])
            self._leave(service, name, code, start)

        if not kind.endswith("_stream") or inspect.iscoroutinefunction(behavior):
            # one response, or a stream its handler writes with context.write (health's Watch)

            async def call(request, context):
                start, outcome, admitted = time.perf_counter(), ["OK"], []
                try:
                    start, request = begin(context, request, admitted)
                    if native:
                        return await behavior(request, context)
                    return await thread(behavior, request, _ThreadContext(context))
                except BaseException as error:
                    await _fail(error, context, outcome, lambda: end(admitted, outcome[0], start))
                    raise
                finally:
                    if len(outcome) == 1:  # (not yet recorded by _fail)
                        end(admitted, outcome[0], start)

            return make(call)

        async def streaming(request, context):
            start, outcome, admitted = time.perf_counter(), ["OK"], []
            try:
                start, request = begin(context, request, admitted)
                if native:
                    async for response in behavior(request, context):
                        yield response
                    return
                responses = await thread(behavior, request, _ThreadContext(context))
                while (response := await thread(next, responses, _END)) is not _END:
                    yield response
            except BaseException as error:
                await _fail(error, context, outcome, lambda: end(admitted, outcome[0], start))
                raise
            finally:
                if len(outcome) == 1:  # (not yet recorded by _fail)
                    end(admitted, outcome[0], start)

        return make(streaming)

    def _enter(self) -> None:
        self.in_flight += 1
        if not self.saturated and self.in_flight >= self.server.config.max_concurrent_rpcs:
            self.saturated = True  # health says so, on the plaintext probe port too
            self.server._report_health(False)

    def _leave(self, service: str, name: str, code: str, start: float) -> None:
        self.in_flight -= 1
        self.latency.labels(service, name, code).observe(time.perf_counter() - start)
        if self.saturated and self.in_flight < 0.9 * self.server.config.max_concurrent_rpcs:
            self.saturated = False
            self.server._report_health(self.server._serving)


async def _next(iterator):
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _END


async def _fail(error: BaseException, context: grpc.aio.ServicerContext, outcome: list, record) -> None:
    """Ends the call with the status for ``error`` where someone is there to hear it (the abort
    raises). ``outcome[0]`` gets the code's name, and ``record()`` counts the call before the status
    leaves: a client that has its answer finds it counted in the metrics."""
    outcome[0], status = _status(error, context)
    record()
    outcome.append("recorded")
    if status is not None:
        await context.abort(*status)


def _status(error: BaseException, context: grpc.aio.ServicerContext) -> tuple[str, tuple | None]:
    """(code name, (code, message) to end the call with, or None when there is no one to tell)."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit) or context.done():
        return "CANCELLED", None  # the client cancelled or went away: nothing to answer, nothing to log
    if isinstance(error, grpc.aio.AbortError):  # a servicer aborted by itself
        code = getattr(context, "code", lambda: None)()
        return (code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"), None
    if isinstance(error, _Abort):
        code, message = error.code, error.details
    elif isinstance(error, RlringsError):
        code, message = grpc.StatusCode[error.code], str(error)
    elif isinstance(error, grpc.RpcError | CancelledError):  # reading a departing client's next message
        return "CANCELLED", None
    else:
        log.error("internal error in RPC", exc_info=error)
        code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}"
    return code.name, (code, message)


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
        config = load_config(config_cls, sys.argv[1:] if argv is None else argv, prog=f"rlrings {name}")
        logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        algorithm = getattr(config, "algorithm", None)
        if hasattr(algorithm, "model_dump_json"):  # what it runs, as it runs it (secrets stay out)
            log.info("%s algorithm settings: %s", name, algorithm.model_dump_json())
        if hasattr(config, "mesh") and hasattr(config, "tables"):  # replay: the tables it derived or was given
            log.info(
                "%s tables: %s", name, ", ".join(f"{t.name} ({t.selector}, {t.max_size} items)" for t in config.tables)
            )
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
    except ConfigError as error:  # a port in use: the settings need changing
        print(f"rlrings {name}: {error}", file=sys.stderr)
        return 2
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
