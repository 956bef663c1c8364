"""Sockets Tether binds itself before a server listens on them."""

from __future__ import annotations

import asyncio
import socket

from tether.net import bind_port


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
