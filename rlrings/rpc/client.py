"""What every rlrings client shares: a channel with the message limits, a
context manager, a readiness wait and error mapping."""

from __future__ import annotations

import json
import time

import grpc

from rlrings.core.errors import BY_CODE, RlringsError, UnavailableError, UnimplementedError
from rlrings.rpc.security import PLAINTEXT, ClientSecurity

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def from_rpc_error(error: grpc.RpcError, address: str = "") -> RlringsError:
    """The rlrings error for a failed call, keeping the server's message."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    exc = BY_CODE.get(code.name, RlringsError)(describe_rpc_error(error, address))
    exc.code = code.name
    return exc


def describe_rpc_error(error: grpc.RpcError, address: str = "") -> str:
    """``CODE: details``, with gRPC's connection failures said plainly (nothing listening at
    ``address``, a name that does not resolve)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else str(error)) or ""
    if code == grpc.StatusCode.UNAVAILABLE and address:  # gRPC's own words only, never a server's message
        if details.startswith("failed to connect to all addresses") and "Connection refused" in details:
            return f"UNAVAILABLE: connection refused: nothing listens at {address}"
        if details.startswith(("errors resolving", "DNS resolution failed")):
            return f"UNAVAILABLE: the name in {address} does not resolve ({details})"
    return f"{code.name}: {details}"


def served_services(channel: grpc.Channel, timeout: float = 5.0) -> list[str]:
    """The services a server offers, from its reflection service (empty where it has none)."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    try:
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        for reply in stub.ServerReflectionInfo(iter([request]), timeout=timeout):
            return sorted(service.name for service in reply.list_services_response.service)
    except grpc.RpcError:
        pass
    return []


IDEMPOTENT = {
    "rlrings.v1.ParameterService": ["Fetch", "List", "GetStatus"],
    "rlrings.v1.ReplayService": ["Info", "GetStatus"],
    "rlrings.v1.LearnerService": ["GetStatus"],
    "rlrings.v1.ActorService": ["GetStatus"],
    "rlrings.v1.ViewerService": ["GetStatus"],
}
"""Calls that change nothing: gRPC itself retries them where the server could not take them
(UNAVAILABLE: a connection that is not up yet, a burst past the server's streams per connection,
which it refuses with RST_STREAM), before any answer arrives. Writes retry in their own clients,
which know what a duplicate is."""

RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
"""gRPC's own retry policy (with jitter, bounded by the channel's retry budget), for :data:`IDEMPOTENT`."""

SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {"name": [{"service": service, "method": method} for method in methods], "retryPolicy": RETRY_POLICY}
            for service, methods in IDEMPOTENT.items()
        ]
    }
)


def channel_options(max_message_bytes: int) -> list[tuple[str, int | str]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", SERVICE_CONFIG),
    ]


class ServiceClient:
    """Base of the service clients. Use as a context manager, or call close()."""

    service = "service"

    def __init__(
        self,
        address: str,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        security: ClientSecurity = PLAINTEXT,
    ):
        self.address = address
        self.max_message_bytes = max_message_bytes
        self._channel = security.channel(address, channel_options(max_message_bytes))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout: float = 30.0):
        """Blocks until the server reports SERVING to health checks (a replay
        shard does so once its store is connected), or raises UnavailableError."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        status = "no answer"
        stub = health_pb2_grpc.HealthStub(self._channel)
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=left, wait_for_ready=True)
            except grpc.RpcError as error:
                status = f"{error.code().name}: {error.details()}"
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    break
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                continue
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return self
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        raise UnavailableError(f"{self.service} server at {self.address} was not serving within {timeout}s ({status})")

    def _call(self, method, request, timeout: float):
        """A unary call with gRPC errors turned into the rlrings error family; a server that does
        not offer the method is asked what it does offer (an address of another service)."""
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                offered = [name for name in served_services(self._channel) if not name.startswith("grpc.")]
                if offered and not any(name.lower().endswith(f".{self.service}service") for name in offered):
                    raise UnimplementedError(
                        f"UNIMPLEMENTED: {self.address} serves {', '.join(offered)}, not the {self.service} "
                        f"service: is it the {self.service} address?"
                    ) from None
            raise from_rpc_error(error, self.address) from None
