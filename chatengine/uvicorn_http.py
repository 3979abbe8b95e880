"""uvicorn's HTTP protocol with TCP_NODELAY on every connection (`--http` in the Makefile).

Works around Kludex/uvicorn#3149: with `--workers N` the supervisor creates the listening
socket with `proto` 0, accepted sockets inherit it, and asyncio sets TCP_NODELAY only when it
sees IPPROTO_TCP. With Nagle's algorithm left on, a response written in two parts (headers,
then body; or SSE events) waits for the client's delayed ACK: measured here, every keep-alive
request took ~45 ms under `--workers 2` against ~4 ms under one worker (bench/, uvicorn rows).
"""

import socket

from uvicorn.protocols.http.h11_impl import H11Protocol


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
