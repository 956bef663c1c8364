"""Plumbing every provider shares: telling an error that may pass (a server restarting, a
connection reset, a timeout) from a final one (a wrong password, a refused right, a name taken).

The worker retries an operation that raised a `TransientError`, with backoff, until its deadline;
a final `ClusterError` fails it at once with its reason. Each provider knows its client library's
exception types and error codes; what they share is here: the errno values and the words of an
unreachable server, and keeping the kind of an error when a message is wrapped around it.

Also shared: reading an HTTP admin URL without ever quoting it (`http_admin_url`), the client
that talks to it (`http_admin_client`) and what a failed request means (`http_failure`), the
checks of resource names (`check_names`), the one-line, secret-free reason of a client library's
error (`first_line`), and the per-instance limits on shared clusters
(`instance_limit`), so one tenant cannot take every connection slot of a server and lock the
others out.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit

import httpx

from tether.errors import ClusterError, TransientError
from tether.providers.base import ClusterSpec, ResourceNames
from tether.redact import redact

# -- admin URLs -----------------------------------------------------------------------------------


def host_in_url(host: str) -> str:
    """A host as it goes into a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class HttpAdminUrl:
    """An HTTP(S) admin API URL taken apart; the password is kept out of every other field."""

    scheme: str
    host: str
    port: int
    user: str
    password: str | None
    path: str  # without a trailing slash

    @property
    def where(self) -> str:
        """host:port, safe to show."""
        return f"{host_in_url(self.host)}:{self.port}"

    @property
    def base(self) -> str:
        """scheme://host:port, without credentials or path."""
        return f"{self.scheme}://{self.where}"


def http_admin_url(url: str, *, what: str, hint: str, http_port: int,
                   allow_path: bool = True) -> HttpAdminUrl:
    """The parts of an `http(s)://USER:PASSWORD@HOST[:PORT][/PATH]` admin URL (user and password
    URL-decoded; the port `http_port` for http, 443 for https when none is given). A
    `ClusterError` with `hint` otherwise, never quoting the URL (it holds the password).
    `what` names the API in messages (e.g. "RabbitMQ management API")."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # the parser's message may quote the URL, password included
        raise ClusterError(f"the cluster URL is not a valid {what} URL: {hint}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClusterError(f"the cluster URL is not a {what} URL: {hint} (https:// for TLS)")
    if not parts.username:
        raise ClusterError(f"the cluster URL has no user: {hint}")
    path = parts.path.rstrip("/")
    if not allow_path and (path or parts.query or parts.fragment):
        raise ClusterError(f"the cluster URL must not have a path or a query: {hint}")
    return HttpAdminUrl(
        scheme=parts.scheme, host=parts.hostname,
        port=port or (http_port if parts.scheme == "http" else 443),
        user=unquote(parts.username),
        password=unquote(parts.password) if parts.password is not None else None, path=path)


# -- names and messages ---------------------------------------------------------------------------

#: a resource name every engine takes as it is (and every provider still quotes): lower-case
#: letters, digits and `_`, not starting with a digit
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")
#: the longest reason kept from a server's error message
MAX_REASON = 300


def check_names(names: ResourceNames, *, max_length: int = 63) -> None:
    """Refuse resource names that are not plain identifiers of at most `max_length` characters
    (63: PostgreSQL's limit; MySQL users take 32). Names come from instance ids, never from
    users; this is the last line that keeps a name from escaping a quoted identifier, a URL
    path segment or a base directory."""
    for name in dict.fromkeys((names.base, names.login)):
        if not (_PLAIN_NAME.fullmatch(name) and len(name) <= max_length):
            raise ClusterError(f"refusing the resource name {name!r}: not a plain identifier "
                               f"of at most {max_length} characters")


def first_line(text: str, secrets: Iterable[str | None], *, fallback: str = "error") -> str:
    """The first line of a server's or client library's message, shortened and without any
    of `secrets` (a password, an admin URL) it may quote."""
    stripped = text.strip()
    first = stripped.splitlines()[0] if stripped else fallback
    if len(first) > MAX_REASON:
        first = first[:MAX_REASON - 3] + "..."
    return redact(first, list(secrets))


#: socket errors that say "not now" rather than "never"
TRANSIENT_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE, errno.EAGAIN,
})

#: how client libraries word a failure that may pass (compared in lower case): a connection cut
#: or refused, a server starting, stopping or out of connection slots, TLS cut mid-way (an EOF or
#: a reset, not a certificate or a protocol that does not fit)
TRANSIENT_WORDS = (
    "connection refused", "connection reset", "connection aborted", "broken pipe",
    "timed out", "timeout expired", "timeout", "temporary failure in name resolution",
    "server closed the connection unexpectedly", "the database system is starting up",
    "the database system is shutting down", "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "terminating connection due to administrator command", "no route to host",
    "network is unreachable", "lost connection", "server has gone away",
    "server shutdown in progress", "remote end closed connection", "connection was closed",
    "too many connections", "too many clients", "remaining connection slots are reserved",
    "try again", "ssl connection has been closed unexpectedly", "ssl syscall error",
    "unexpected_eof_while_reading", "unexpected eof while reading", "eof detected",
    "eof occurred in violation of protocol",
)

#: words that make a failure final even when it looks like a connection problem: a host name
#: that does not resolve at all, or TLS that does not fit (a certificate that does not verify, a
#: protocol or version both sides do not share), will not fix itself. TLS cut mid-way (an EOF, a
#: reset) is not among them: it may pass.
FINAL_WORDS = (
    "name or service not known", "nodename nor servname", "no address associated",
    # certificates
    "certificate verify failed", "certificate has expired", "self-signed certificate",
    "self signed certificate", "alert unknown ca", "alert bad certificate",
    "alert certificate", "does not match host name", "hostname mismatch",
    # protocol or version mismatches
    "wrong version number", "unsupported protocol", "alert protocol version",
    "no protocols available", "unknown protocol", "version too low", "version too high",
    "does not support ssl", "alert handshake failure",
)

#: TLS failures that say the connection was cut, not that TLS does not fit: they may pass
_TRANSIENT_SSL = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


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


def _ssl_final(exc: ssl.SSLError) -> bool:
    """Whether a TLS failure will not fix itself: a certificate that does not verify, or a
    protocol or version both sides do not share. A connection cut mid-way (EOF, reset) may pass;
    any other TLS failure is not final here (nor transient, unless its words say so)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    if isinstance(exc, _TRANSIENT_SSL):
        return False
    reason = str(getattr(exc, "reason", None) or "").lower().replace("_", " ")
    return final_text(reason) or final_text(str(exc))


def is_final(exc: BaseException) -> bool:
    """Whether a failure that looks like a connection problem will not fix itself: TLS that
    does not fit (a certificate that does not verify, a protocol or version mismatch), a host
    name that does not resolve at all (not a name server failing for a moment)."""
    for e in _chain(exc):
        if isinstance(e, ssl.SSLError):
            if _ssl_final(e):
                return True
            continue
        if isinstance(e, socket.gaierror):
            return e.errno != socket.EAI_AGAIN
        if final_text(str(e)):
            return True
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether a failure to talk to a server may pass by itself: refused, reset or timed-out
    connections, TLS cut mid-way, a name server failing for a moment, a server starting,
    stopping or out of connection slots."""
    if is_final(exc):
        return False
    for e in _chain(exc):
        if isinstance(e, (TimeoutError, ConnectionError, *_TRANSIENT_SSL)):
            return True
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return True
        if isinstance(e, socket.gaierror):  # EAI_AGAIN: is_final said the others
            return True
    return any(transient_text(str(e)) for e in _chain(exc))


def cluster_error(message: str, transient: bool) -> ClusterError:
    """A `TransientError` when the failure may pass, else a final `ClusterError`."""
    return TransientError(message) if transient else ClusterError(message)


# -- HTTP admin APIs ------------------------------------------------------------------------------


@functools.cache
def _tls() -> ssl.SSLContext:
    """The TLS settings of every admin client, made once: each `httpx.Client` otherwise makes
    its own, loading the whole CA bundle again (~28 ms here, a third of provisioning a
    RabbitMQ vhost). The same trust as httpx's default (certifi's CAs, or SSL_CERT_FILE /
    SSL_CERT_DIR); a context may serve many connections on many threads."""
    return httpx.create_ssl_context()


def http_admin_client(user: str, password: str | None, timeout: httpx.Timeout) -> httpx.Client:
    """An HTTP client as an API's admin: basic auth (an empty password when the URL has none:
    the server's 401 then says to add it), JSON bodies, `timeout` by default, and redirects not
    followed (a redirect would not be the API the URL names)."""
    return httpx.Client(auth=(user, password or ""), timeout=timeout, follow_redirects=False,
                        headers={"content-type": "application/json"}, verify=_tls())


def waited_for(exc: httpx.TimeoutException, timeout: httpx.Timeout) -> float | None:
    """The seconds of `timeout` that ran out in `exc`: connecting, writing the request, waiting
    for a connection of the pool, or (any other timeout) reading the answer."""
    if isinstance(exc, httpx.ConnectTimeout):
        return timeout.connect
    if isinstance(exc, httpx.WriteTimeout):
        return timeout.write
    if isinstance(exc, httpx.PoolTimeout):
        return timeout.pool
    return timeout.read


def http_failure(exc: httpx.HTTPError, *, api: str, where: str, request: str,
                 timeout: httpx.Timeout, endpoint: str, fix: str,
                 secrets: Iterable[str | None]) -> ClusterError:
    """What a request to an HTTP admin API that got no answer means, as the error to raise
    (`raise http_failure(...) from None`: httpx's own message may quote the URL).

    - A timeout is a `TransientError` that names the seconds waited and `request` ("GET /x"),
      and says to check that `where` is `endpoint` (e.g. "the management API (port 15672 by
      default, not AMQP's 5672)"): an address that accepts but never answers is often another
      port of the same server.
    - Any other failure says it cannot reach `api` at `where`, then `fix`, then httpx's reason
      (its first line, without any of `secrets`). It is transient when the connection was
      refused, cut or reset (`httpx.NetworkError`, `httpx.RemoteProtocolError`) and the cause
      is not final (a certificate that does not verify, a host name that does not resolve:
      `is_final`); anything else (an invalid URL, too many redirects...) is final.

    `api` names the API as a message begins ("the RabbitMQ management API"); `where` is
    host:port, safe to show."""
    if isinstance(exc, httpx.TimeoutException):
        waited = waited_for(exc, timeout)
        within = f"within {waited:g} s" if waited is not None else "in time"
        return TransientError(
            f"{api} at {where} timed out: no answer {within} to {request}. Check that {where} "
            f"is {endpoint}, that the server runs and is not overloaded, and that no firewall "
            "drops the traffic")
    detail = first_line(str(exc) or type(exc).__name__, secrets)
    transient = (isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError))
                 and not is_final(exc))
    return cluster_error(f"cannot reach {api} at {where}: {fix} ({detail})", transient)


def rewrap(exc: ClusterError, message: str) -> ClusterError:
    """A new message around `exc` that keeps its kind (transient or final)."""
    return cluster_error(message, isinstance(exc, TransientError))


# -- fair shares on shared clusters --------------------------------------------------------------

#: the cluster setting that caps how many connections one instance's credentials may hold at
#: once (PostgreSQL `CONNECTION LIMIT` on its role, MariaDB/MySQL `MAX_USER_CONNECTIONS` on its
#: user, RabbitMQ `max-connections` on its vhost), so one tenant cannot take every connection
#: slot of a shared server and lock the others out
CONNECTION_LIMIT = "connection_limit"
#: the RabbitMQ cluster setting that caps the queues of one instance's vhost (`max-queues`)
QUEUE_LIMIT = "queue_limit"
#: the highest value each limit setting takes; 0 means "no limit"
MAX_LIMITS = {CONNECTION_LIMIT: 10_000, QUEUE_LIMIT: 100_000}


def parse_limit(name: str, raw: Any) -> int:
    """A limit setting as an integer from 0 (no limit) to its maximum; a `ValueError` whose
    message says what to fix otherwise. Numbers written as text (a TOML string, a form field)
    are taken; booleans, fractions and anything else are not."""
    high = MAX_LIMITS[name]
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
        value = int(raw.strip())
    if value is None or not 0 <= value <= high:
        shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:40] + "..."
        raise ValueError(f"the cluster setting {name}={shown} is not valid: use a whole number "
                         f"from 1 to {high}, or 0 for no limit (e.g. --setting {name}=20)")
    return value


def check_limit_settings(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings with each limit setting checked and made an integer; a `ValueError` (with
    the fix) for a bad value, or for a limit this kind of cluster does not have (each provider
    declares its limits and their defaults on shared clusters: `ProviderBase.limits`)."""
    from tether.providers.registry import available, provider_class

    checked = dict(settings)
    for name in MAX_LIMITS:
        if name not in checked:
            continue
        if name not in provider_class(kind).limits:
            kinds = sorted(k for k, disabled in available().items()
                           if disabled is None and name in provider_class(k).limits)
            raise ValueError(f"{kind} clusters have no {name} setting: it applies to "
                             f"{', '.join(kinds)} clusters")
        checked[name] = parse_limit(name, checked[name])
    return checked


def instance_limit(cluster: ClusterSpec, name: str) -> int | None:
    """The limit `name` each instance on this cluster gets, or None for no limit.

    The cluster setting when given (0: no limit); else, on a shared cluster, the kind's default
    (its provider's `limits`); a private cluster (one instance owns the whole server) has no limit
    unless the setting asks for one. A bad stored value is a final `ClusterError`."""
    raw = (cluster.settings or {}).get(name)
    if raw is None:
        if cluster.private:
            return None
        from tether.providers.registry import provider_class

        return provider_class(cluster.kind).limits.get(name)
    try:
        value = parse_limit(name, raw)
    except ValueError as exc:
        raise ClusterError(str(exc)) from None
    return value or None


C = TypeVar("C")


class KeptConnections(Generic[C]):
    """Kept admin connections, a few per cluster, so that provisioning does not pay for a new
    connection (TCP, TLS, the login: most of a small provision's time) every time — the reason
    provisioning through Tether beats a script that connects afresh for each instance.

    Keyed by the cluster's id and URL: a cluster whose URL (address or admin credentials)
    changed has its old connections closed. A kept connection is checked before use (`check`:
    one round trip; it raises when the connection is dead); one that fails the check, that is
    not `reusable` when handed back, or that was in use when an error happened (the provider
    closes it instead of handing it back), is closed, never kept. Hand-written rather than a
    pool library (psycopg_pool): a new connection is made in the caller's thread by the
    provider, so a failure to connect is reported with the server's own reason (a pool connects
    in the background and reports only that it timed out). Every instance is closed when the
    process exits."""

    def __init__(self, check: Callable[[C], object], reusable: Callable[[C], bool],
                 close: Callable[[C], object], max_idle: int = 4) -> None:
        self.check, self.reusable, self._close = check, reusable, close
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: dict[int, tuple[str, list[C]]] = {}
        atexit.register(self.close)

    def take(self, cluster: ClusterSpec) -> C | None:
        """A kept connection that answers, or None (the caller connects)."""
        while True:
            stale: list[C] = []
            with self._lock:
                url, idle = self._idle.get(cluster.id, (cluster.url, []))
                if url != cluster.url:  # the cluster changed: its old connections go
                    stale, idle = idle, []
                    self._idle[cluster.id] = (cluster.url, idle)
                conn = idle.pop() if idle else None
            for old in stale:
                self._quietly_close(old)
            if conn is None:
                return None
            try:
                self.check(conn)
                return conn
            except Exception:  # the server restarted, or ended the session: the next one
                self._quietly_close(conn)

    def give(self, cluster: ClusterSpec, conn: C) -> None:
        """Keep a connection that ended its use cleanly (else close it)."""
        if self.reusable(conn):
            with self._lock:
                url, idle = self._idle.setdefault(cluster.id, (cluster.url, []))
                if url == cluster.url and len(idle) < self.max_idle:
                    idle.append(conn)
                    return
        self._quietly_close(conn)

    def close(self) -> None:
        """Close every kept connection (a stopping process)."""
        with self._lock:
            idle = [conn for _, conns in self._idle.values() for conn in conns]
            self._idle.clear()
        for conn in idle:
            self._quietly_close(conn)

    def _quietly_close(self, conn: C) -> None:
        with contextlib.suppress(Exception):  # one that cannot even close is gone anyway
            self._close(conn)
