"""The plumbing providers share (issue 9): admin URLs taken apart without ever quoting them, name
checks, one-line redacted reasons, and what a failed request to an HTTP admin API means (real
httpx errors from real sockets: a closed port, a full listen queue, a listener that never
answers, a server that hangs up mid-answer, plain HTTP where TLS was asked)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import httpx
import pytest

from tether.errors import ClusterError, TransientError
from tether.net import free_port
from tether.providers.base import ResourceNames
from tether.providers.common import (
    check_names,
    first_line,
    http_admin_client,
    http_admin_url,
    http_failure,
)

SECRET = "s3cr%3At-pw"  # URL-encoded "s3cr:t-pw"


def test_an_admin_url_is_taken_apart() -> None:
    url = http_admin_url(f"http://adm%40in:{SECRET}@[::1]/api/", what="X API", hint="h",
                         http_port=15672)
    assert (url.scheme, url.host, url.port, url.user, url.password, url.path) == (
        "http", "::1", 15672, "adm@in", "s3cr:t-pw", "/api")
    assert url.where == "[::1]:15672" and url.base == "http://[::1]:15672"
    assert http_admin_url("https://a:b@h.example", what="X", hint="h", http_port=9200).port == 443


@pytest.mark.parametrize(("url", "words"), [
    (f"ftp://a:{SECRET}@h:1/", "is not a X API URL"),
    (f"http://a:{SECRET}@h:99999999/", "is not a valid X API URL"),
    (f"http://:{SECRET}@h:1/", "has no user"),
    (f"http://a:{SECRET}@h:1/some/path", "must not have a path"),
    (f"http://a:{SECRET}@h:1/?q=1", "must not have a path"),
])
def test_a_bad_admin_url_says_what_to_fix_without_its_password(url: str, words: str) -> None:
    with pytest.raises(ClusterError) as err:
        http_admin_url(url, what="X API", hint="use http://USER:PW@HOST:PORT", http_port=1,
                       allow_path=False)
    assert words in err.value.message and "use http://USER:PW@HOST:PORT" in err.value.message
    assert SECRET not in err.value.message and "s3cr:t" not in err.value.message


def test_names_are_plain_identifiers_of_bounded_length() -> None:
    check_names(ResourceNames("tether_i12", rotation=3))
    with pytest.raises(ClusterError, match="plain identifier of at most 32"):
        check_names(ResourceNames("t" * 33), max_length=32)
    for bad in ("Tether", "a-b", "a b", "1abc", 'x";drop'):
        with pytest.raises(ClusterError, match="plain identifier"):
            check_names(ResourceNames(bad))


def test_first_line_is_short_and_secret_free() -> None:
    text = "boom: password pw-123 refused\nsecond line pw-123"
    assert first_line(text, ["pw-123"]) == "boom: password *** refused"
    assert len(first_line("x" * 1000, [])) == 300
    assert first_line("  ", [], fallback="KeyError") == "KeyError"


# -- failed requests to HTTP admin APIs -----------------------------------------------------------

WORDS = {"api": "the X API", "endpoint": "its HTTP API (port 1 by default, not 2)",
         "fix": "check that the server runs"}


def failure(url: str, timeout: httpx.Timeout, secrets: tuple[str, ...] = (),
            client: httpx.Client | None = None) -> ClusterError:
    """The error `http_failure` makes of the httpx error a real GET of `url` raises."""
    where = url.split("/")[2]
    try:
        if client is not None:
            client.get(url, timeout=timeout)
        else:
            httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return http_failure(exc, where=where, request="GET /x", timeout=timeout,
                            secrets=secrets, **WORDS)
    raise AssertionError(f"GET {url} did not fail")


@contextmanager
def listener(answer: Callable[[socket.socket], None] | None = None, backlog: int = 16
             ) -> Iterator[int]:
    """A loopback port that accepts connections. With `answer`, each connection is accepted
    and handed to it (then closed); without, none is ever accepted (the kernel completes the
    handshake, nobody reads or answers)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(backlog)
        stop = threading.Event()

        def serve() -> None:
            server.settimeout(0.1)
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except (TimeoutError, OSError):
                    continue
                with conn:
                    answer(conn)  # type: ignore[misc]

        thread = threading.Thread(target=serve, daemon=True) if answer else None
        if thread:
            thread.start()
        try:
            yield server.getsockname()[1]
        finally:
            stop.set()
            if thread:
                thread.join(5)


def read_request(conn: socket.socket) -> bytes:
    """The request's head (up to the blank line)."""
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_the_admin_client_sends_basic_auth_and_follows_no_redirect() -> None:
    heads: list[bytes] = []

    def redirect(conn: socket.socket) -> None:
        heads.append(read_request(conn))
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\n"
                     b"Content-Length: 0\r\n\r\n")

    with listener(redirect) as port, \
            http_admin_client("adm", None, httpx.Timeout(5.0)) as client:
        response = client.post(f"http://127.0.0.1:{port}/x", json={"a": 1})
    assert response.status_code == 302 and len(heads) == 1
    head = heads[0].lower()
    assert b"authorization: basic ywrtog==" in head  # "adm:" (no password given)
    assert b"content-type: application/json" in head


def test_a_closed_port_may_pass_and_says_what_to_fix() -> None:
    err = failure(f"http://127.0.0.1:{free_port()}/x", httpx.Timeout(5.0))
    assert isinstance(err, TransientError)
    assert err.message.startswith("cannot reach the X API at 127.0.0.1:")
    assert ": check that the server runs (" in err.message
    assert "refused" in err.message.lower()


def test_the_reason_is_one_line_without_secrets() -> None:
    err = failure(f"http://127.0.0.1:{free_port()}/x", httpx.Timeout(5.0),
                  secrets=("Connection refused",))
    assert "Connection refused" not in err.message and "***" in err.message


def test_a_listener_that_never_answers_times_out_naming_the_seconds() -> None:
    with listener() as port:
        err = failure(f"http://127.0.0.1:{port}/x", httpx.Timeout(5.0, read=0.3))
    assert isinstance(err, TransientError)
    assert err.message.startswith(f"the X API at 127.0.0.1:{port} timed out: no answer within "
                                  "0.3 s to GET /x. Check that 127.0.0.1:")
    assert "is its HTTP API (port 1 by default, not 2), that the server runs" in err.message


def test_a_connect_timeout_names_the_connect_seconds() -> None:
    """A listen queue that is full: the kernel drops further handshakes, connecting times out."""
    with listener(backlog=0) as port:
        queued = []
        try:
            for _ in range(3):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                queued.append(s)
            err = failure(f"http://127.0.0.1:{port}/x", httpx.Timeout(7.0, connect=0.2))
        finally:
            for s in queued:
                s.close()
    assert isinstance(err, TransientError)
    assert "no answer within 0.2 s to GET /x" in err.message


def test_a_pool_timeout_names_the_pool_seconds() -> None:
    """Every connection of the client's pool is busy: waiting for one times out after the
    pool's seconds, not the read's."""
    def slow(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        conn.settimeout(5)
        with suppress(OSError):
            conn.recv(1)  # keep the body unfinished until the client hangs up

    pool = httpx.Limits(max_connections=1)
    with (listener(slow) as port, httpx.Client(limits=pool) as client,
          client.stream("GET", f"http://127.0.0.1:{port}/held")):
        err = failure(f"http://127.0.0.1:{port}/x", httpx.Timeout(9.0, pool=0.2), client=client)
    assert isinstance(err, TransientError)
    assert "no answer within 0.2 s to GET /x" in err.message


def test_a_server_that_hangs_up_mid_answer_may_pass() -> None:
    def cut(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")

    with listener(cut) as port:
        try:
            httpx.get(f"http://127.0.0.1:{port}/x", timeout=5)
        except httpx.RemoteProtocolError as exc:
            err = http_failure(exc, where=f"127.0.0.1:{port}", request="GET /x",
                               timeout=httpx.Timeout(5.0), secrets=(), **WORDS)
        else:
            raise AssertionError("no RemoteProtocolError")
    assert isinstance(err, TransientError)
    assert err.message.startswith(f"cannot reach the X API at 127.0.0.1:{port}: check that")


def test_tls_to_a_plain_http_port_is_final() -> None:
    """TLS that does not fit will not fix itself: no retries until the deadline."""
    def answer(conn: socket.socket) -> None:
        conn.settimeout(5)
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    with listener(answer) as port:
        err = failure(f"https://127.0.0.1:{port}/x", httpx.Timeout(5.0))
    assert not isinstance(err, TransientError)
    assert "cannot reach the X API" in err.message and "wrong version number" in err.message.lower()


def test_an_unsupported_scheme_is_final() -> None:
    err = failure(f"ftp://127.0.0.1:{free_port()}/x", httpx.Timeout(5.0))
    assert not isinstance(err, TransientError)
    assert "cannot reach the X API" in err.message


def test_admin_clients_share_one_tls_context() -> None:
    """Every `httpx.Client` made its own TLS context, loading the CA bundle again (~28 ms a
    RabbitMQ provision here, a third of it): the admin clients now share one."""
    first = http_admin_client("admin", "pw", httpx.Timeout(5))
    second = http_admin_client("admin", None, httpx.Timeout(5))
    try:
        contexts = [c._transport._pool._ssl_context  # type: ignore[attr-defined]
                    for c in (first, second)]
    finally:
        first.close()
        second.close()
    assert contexts[0] is contexts[1]
    assert contexts[0].verify_mode == ssl.CERT_REQUIRED and contexts[0].check_hostname
