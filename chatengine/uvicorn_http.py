"""uvicorn's HTTP protocol (`--http` in the Makefile): TCP_NODELAY on every connection, and
the error envelope, not plain text, for a request uvicorn itself refuses as malformed.

Works around Kludex/uvicorn#3149: with `--workers N` the supervisor creates the listening
socket with `proto` 0, accepted sockets inherit it, and asyncio sets TCP_NODELAY only when it
sees IPPROTO_TCP. With Nagle's algorithm left on, a response written in two parts (headers,
then body; or SSE events) waits for the client's delayed ACK: measured here, every keep-alive
request took ~45 ms under `--workers 2` against ~4 ms under one worker (bench/, uvicorn rows).
"""

import socket

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from chatengine.server_errors import envelope


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

    def send_400_response(self, msg: str) -> None:
        request_id, body = envelope(400, msg)
        headers = [
            (b"content-type", b"application/json"),
            (b"connection", b"close"),
            (b"x-request-id", request_id.encode()),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()
