"""Small network helpers shared by the runtime, the embedded servers and the tests."""

from __future__ import annotations

import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
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
