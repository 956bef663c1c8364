"""Sockets Tether binds itself before a server listens on them."""

from __future__ import annotations

import asyncio
import socket

from tether.net import _ephemeral_range, bind_port, free_port, port_is_free


def test_a_server_on_a_bound_port_answers_without_nagle_delays() -> None:
    """asyncio sets TCP_NODELAY on accepted connections only when the listening socket says
    it is TCP; without it each small HTTP answer waited ~40 ms for a delayed ACK."""
    seen: list[int] = []

    async def main() -> None:
        sock = bind_port(0)

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            seen.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        async with server:
            _reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0


def test_free_ports_are_chosen_below_the_ephemeral_range() -> None:
    """A port the OS picks for bind(0) comes from the ephemeral range, where any outgoing
    connection may take it before a slow server (a JVM) binds it: a search server failed to
    start in CI that way. Ports are chosen below the range, and are free."""
    low, _high = _ephemeral_range()
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= port < low for port in ports), ports
    assert len(ports) > 1  # chosen at random, not the first free one each time
    assert all(port_is_free(port) for port in ports)


def test_a_listening_port_is_not_free() -> None:
    sock = bind_port(free_port())
    try:
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])
    finally:
        sock.close()
