"""Under uvicorn with a pre-bound socket (what `--workers N` does), connections get TCP_NODELAY."""

import asyncio
import http.client
import socket
import threading

from uvicorn import Config, Server
from uvicorn.protocols.http.h11_impl import H11Protocol

from chatengine.uvicorn_http import NoDelayH11Protocol


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def nodelay_of_a_served_connection(protocol_class) -> int:
    """Serve one request the way uvicorn's multi-worker path does; TCP_NODELAY of its socket."""
    seen = []

    class Recording(protocol_class):
        def connection_made(self, transport):
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    # As uvicorn's Config.bind_socket() makes it for the supervisor: proto left at 0.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = Server(Config(app, http=Recording, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listener])))
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            threading.Event().wait(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"ok"
        conn.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
    return seen[0]


def test_a_prebound_listener_loses_tcp_nodelay_with_uvicorns_own_protocol():
    # The bug being worked around; if uvicorn fixes it, this fails and the workaround can go.
    assert nodelay_of_a_served_connection(H11Protocol) == 0


def test_our_protocol_sets_tcp_nodelay_on_every_connection():
    assert nodelay_of_a_served_connection(NoDelayH11Protocol) == 1
