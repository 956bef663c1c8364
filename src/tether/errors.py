"""Typed errors. A `UserError` is something the user can fix: it maps to HTTP 4xx and exit code 2,
and its message says what was wrong and how to fix it. An `OperationError` is a failure of the
work itself (a server refused, an app did not become healthy): HTTP 5xx/operation status, exit 1.

Messages must never contain secrets: build them from names, never from DSNs or passwords."""

from __future__ import annotations


class TetherError(Exception):
    """Base of every error Tether raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserError(TetherError):
    """Bad input or a refused action (HTTP 400, exit 2)."""

    code = "bad_request"
    status = 400


class NotFound(UserError):
    code = "not_found"
    status = 404


class Conflict(UserError):
    """The action is refused in the current state (HTTP 409, exit 2)."""

    code = "refused"
    status = 409


class Unauthorized(UserError):
    code = "unauthorized"
    status = 401


class TooManyAttempts(UserError):
    """Refused for now: too many failed attempts from one address (HTTP 429, Retry-After)."""

    code = "too_many_attempts"
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OperationError(TetherError):
    """The work failed (exit 1). Retrying is safe."""

    code = "operation_failed"


class ClusterError(OperationError):
    """A cluster could not be reached or refused an admin call."""

    code = "cluster_error"


class TransientError(ClusterError):
    """An error that may pass (a cluster unreachable for a moment, a connection reset): the worker
    retries the operation with backoff until its deadline, then it fails with this reason."""

    code = "cluster_unavailable"
