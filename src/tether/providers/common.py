"""Plumbing every provider shares: telling an error that may pass (a server restarting, a
connection reset, a timeout) from a final one (a wrong password, a refused right, a name taken).

The worker retries an operation that raised a `TransientError`, with backoff, until its deadline;
a final `ClusterError` fails it at once with its reason. Each provider knows its client library's
exception types and error codes; what they share is here: the errno values and the words of an
unreachable server, and keeping the kind of an error when a message is wrapped around it.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterator

from tether.errors import ClusterError, TransientError

#: socket errors that say "not now" rather than "never"
TRANSIENT_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE, errno.EAGAIN,
})

#: how client libraries word a failure that may pass (compared in lower case)
TRANSIENT_WORDS = (
    "connection refused", "connection reset", "connection aborted", "broken pipe",
    "timed out", "timeout expired", "timeout", "temporary failure in name resolution",
    "server closed the connection unexpectedly", "the database system is starting up",
    "the database system is shutting down", "the database system is in recovery mode",
    "terminating connection due to administrator command", "no route to host",
    "network is unreachable", "lost connection", "server has gone away",
    "server shutdown in progress", "remote end closed connection", "connection was closed",
    "too many connections", "try again",
)

#: words that make a failure final even when it looks like a connection problem: a host name
#: that does not resolve at all, or TLS that does not fit, will not fix itself
FINAL_WORDS = (
    "name or service not known", "nodename nor servname", "no address associated",
    "certificate verify failed", "wrong version number", "ssl:",
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The error, then what caused it (explicitly or while handling), without loops."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def final_text(text: str) -> bool:
    """Whether an error message says the failure is final although it looks like a connection
    problem (a host name that does not resolve, TLS that does not fit)."""
    low = text.lower()
    return any(word in low for word in FINAL_WORDS)


def transient_text(text: str) -> bool:
    """Whether an error message reads like a failure that may pass."""
    low = text.lower()
    return not final_text(low) and any(word in low for word in TRANSIENT_WORDS)


def is_final(exc: BaseException) -> bool:
    """Whether a failure that looks like a connection problem will not fix itself: TLS that
    does not fit, a host name that does not resolve at all (not a name server failing for a
    moment)."""
    for e in _chain(exc):
        if isinstance(e, ssl.SSLError):
            return True
        if isinstance(e, socket.gaierror):
            return e.errno != socket.EAI_AGAIN
        if final_text(str(e)):
            return True
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether a failure to talk to a server may pass by itself: refused, reset or timed-out
    connections, a name server failing for a moment, a server starting or stopping."""
    if is_final(exc):
        return False
    for e in _chain(exc):
        if isinstance(e, (TimeoutError, ConnectionError)):
            return True
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return True
        if isinstance(e, socket.gaierror):  # EAI_AGAIN: is_final said the others
            return True
    return any(transient_text(str(e)) for e in _chain(exc))


def cluster_error(message: str, transient: bool) -> ClusterError:
    """A `TransientError` when the failure may pass, else a final `ClusterError`."""
    return TransientError(message) if transient else ClusterError(message)


def rewrap(exc: ClusterError, message: str) -> ClusterError:
    """A new message around `exc` that keeps its kind (transient or final)."""
    return cluster_error(message, isinstance(exc, TransientError))
