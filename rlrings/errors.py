"""The small error family of rlrings, one class per gRPC status code it uses.

Domain code raises these; the server interceptor turns them into statuses,
and clients turn statuses back into them, so both sides of a call speak of the
same failure in the same words.
"""

from __future__ import annotations

import grpc


class RlringsError(Exception):
    """Base of every error rlrings raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(RlringsError, ValueError):
    """A request or value that can never succeed as given."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(RlringsError, LookupError):
    """A named thing (table, version, tag) that does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhaustedError(RlringsError):
    """A request over a size or rate limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(RlringsError, TimeoutError):
    """A wait (for the rate limiter, for a server) that ran out of time."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UnavailableError(RlringsError, ConnectionError):
    """The service cannot be reached or is shutting down; retrying may help."""

    code = grpc.StatusCode.UNAVAILABLE


class FailedPreconditionError(RlringsError):
    """An operation the service cannot do in its current setup or state."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class CancelledError(RlringsError):
    """The caller went away while the call waited."""

    code = grpc.StatusCode.CANCELLED


class UnauthenticatedError(RlringsError):
    """A call without a valid token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(RlringsError):
    """A call whose token lacks the scope the RPC needs."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ConfigError(RlringsError, ValueError):
    """A configuration file, flag or environment variable that cannot be used."""

    code = grpc.StatusCode.INVALID_ARGUMENT


_BY_CODE = {
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
    )
}


def from_rpc_error(error: grpc.RpcError) -> RlringsError:
    """The rlrings error for a failed call, keeping the server's message."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    exc = _BY_CODE.get(code, RlringsError)(f"{code.name}: {details}")
    exc.code = code
    return exc
