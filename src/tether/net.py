"""Small network helpers shared by the runtime, the embedded servers and the tests."""

from __future__ import annotations

import secrets
import socket
import time
from pathlib import Path

# Where free ports are looked for when the kernel's ephemeral range leaves room below it.
_LOW_PORTS = (10000, 32768)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`, chosen outside the kernel's ephemeral range
    when there is room below it.

    A server is often started some time after its port is chosen (a JVM binds its port a minute
    after launch). A port from the ephemeral range can be taken meanwhile by any outgoing
    connection's source port, and the suite makes thousands (a search server once failed to
    start in CI with its port taken); ports below the range are only taken by a program that
    binds them on purpose. Falls back to a port the OS picks."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low, high = _LOW_PORTS
    ephemeral_low, _ = _ephemeral_range()
    high = min(high, ephemeral_low)
    if high - low >= 1000:
        for _ in range(50):
            port = low + secrets.randbelow(high - low)  # not `random`: a seeded one repeats
            if port_is_free(port, host):
                return port
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def bind_port(port: int, host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound (not yet listening) to host:port, to hold the port from the moment
    it is chosen until a server listens on it: checking a port and binding it later is a race.
    Raises OSError when the port is taken. SO_REUSEADDR as servers set it (a port whose last
    connections are in TIME_WAIT is free; one something listens on is not).

    The protocol is named (IPPROTO_TCP), not left 0: asyncio turns Nagle's algorithm off
    (TCP_NODELAY) only on connections of sockets that say they are TCP, and without it every
    small answer waits ~40 ms for a delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether host:port can be bound now. Without SO_REUSEADDR, so a port still in TIME_WAIT or
    held bound by bind_port counts as taken: the safe answer when choosing one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> bool:
    """Wait until something accepts TCP connections on host:port; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False
