"""Accepted connections answer without Nagle's delay.

The servers listen on sockets made by ``socket.create_server``, whose ``proto`` is 0, so
asyncio did not set TCP_NODELAY on their connections: each answer (uvicorn writes the
head, then the body) waited for the client's delayed ACK, about 40 ms a request on a
kept-alive connection. The option is checked on the server's own end of a connection.
"""

from __future__ import annotations

import socket

from kit.project import Project

from engine.web import BackgroundServer


def test_a_kept_alive_connection_has_nagle_off_on_the_server_side(
    sqlite_project: Project,
) -> None:
    server = BackgroundServer(sqlite_project.engine())
    with server, socket.create_connection((server.host, server.port)) as client:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        assert server._server is not None
        guard = server._server.config.http.guard  # type: ignore[union-attr]
        connections = [c for held in guard._open.values() for c in held]
        assert len(connections) == 1
        sock = connections[0].transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
