"""The small error family of rlrings, one class per gRPC status code it uses.

Domain code raises these; the server interceptor turns them into statuses,
and clients turn statuses back into them (``rlrings.rpc.client.from_rpc_error``),
so both sides of a call speak of the same failure in the same words. Codes
are gRPC's status names, so that this module (which the RL core imports)
needs no gRPC.
"""

from __future__ import annotations


class RlringsError(Exception):
    """Base of every error rlrings raises on purpose."""

    code: str = "UNKNOWN"
    """The gRPC status name (``grpc.StatusCode[code]``)."""


class InvalidArgumentError(RlringsError, ValueError):
    """A request or value that can never succeed as given."""

    code = "INVALID_ARGUMENT"


class NotFoundError(RlringsError, LookupError):
    """A named thing (table, version, tag) that does not exist."""

    code = "NOT_FOUND"


class ResourceExhaustedError(RlringsError):
    """A request over a size or rate limit."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExceededError(RlringsError, TimeoutError):
    """A wait (for the rate limiter, for a server) that ran out of time."""

    code = "DEADLINE_EXCEEDED"


class UnavailableError(RlringsError, ConnectionError):
    """The service cannot be reached or is shutting down; retrying may help."""

    code = "UNAVAILABLE"


class FailedPreconditionError(RlringsError):
    """An operation the service cannot do in its current setup or state."""

    code = "FAILED_PRECONDITION"


class CancelledError(RlringsError):
    """The caller went away while the call waited."""

    code = "CANCELLED"


class UnauthenticatedError(RlringsError):
    """A call without a valid token."""

    code = "UNAUTHENTICATED"


class PermissionDeniedError(RlringsError):
    """A call whose token lacks the scope the RPC needs."""

    code = "PERMISSION_DENIED"


class UnimplementedError(RlringsError):
    """A call the server does not offer: most often the address of another service."""

    code = "UNIMPLEMENTED"


class ConfigError(RlringsError, ValueError):
    """A configuration file, flag or environment variable that cannot be used."""

    code = "INVALID_ARGUMENT"


BY_CODE: dict[str, type[RlringsError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        ResourceExhaustedError,
        DeadlineExceededError,
        UnavailableError,
        FailedPreconditionError,
        CancelledError,
        UnauthenticatedError,
        PermissionDeniedError,
        UnimplementedError,
    )
}
"""The error class a client raises for each status name."""
