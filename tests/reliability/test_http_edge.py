"""The HTTP edge through real sockets: gunicorn (and uvicorn's protocol) as deployed.

A missing trailing slash, a chunked body, and the requests a server refuses before Django
sees them (too long a request line, too large headers, bad framing).
"""

import asyncio
import contextlib
import http.client
import json
import socket
import threading
import urllib.parse
import urllib.request

import pytest
from django.db import connections
from uvicorn import Config, Server

from accounts.tests.factories import api_key_for
from chatengine.uvicorn_http import NoDelayH11Protocol
from conversations.models import ChatSession, Message
from conversations.tests.factories import ChatSessionFactory
from tests.reliability.conftest import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def urllib_json(method: str, url: str, token: str, body: dict):
    """(status, final URL, parsed body) as urllib reports it, redirects followed (its default)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.url, json.loads(response.read())


def raw_exchange(base: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `data` as is on a fresh connection; (status, headers, body) of the answer."""
    address = urllib.parse.urlsplit(base)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in header_lines)}
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunked(body)
    return int(status_line.split()[1]), headers, body


def _dechunked(data: bytes) -> bytes:
    body = b""
    while True:
        size, _, data = data.partition(b"\r\n")
        if not int(size, 16):
            return body
        body, data = body + data[: int(size, 16)], data[int(size, 16) + 2 :]


def assert_envelope(status: int, headers: dict, body: bytes, expected: int, error_type: str):
    assert status == expected, body[:300]
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert set(error) == {"type", "message", "details", "request_id"}
    assert error["type"] == error_type
    assert error["request_id"] == headers["x-request-id"]
    return error


class TestLiveGunicorn:
    def test_urllib_post_and_patch_without_the_slash_are_stored(self, user, live_server_process):
        base, _ = live_server_process
        token = api_key_for(user)
        session = ChatSessionFactory(user=user, title="before")

        status, final_url, body = urllib_json(
            "POST",
            f"{base}/api/v1/sessions/{session.pk}/messages",
            token,
            {"role": "user", "content": "not lost"},
        )
        assert status == 201
        assert final_url == f"{base}/api/v1/sessions/{session.pk}/messages"  # no redirect
        assert body["content"] == "not lost"
        assert list(Message.objects.values_list("content", flat=True)) == ["not lost"]

        status, _, body = urllib_json(
            "PATCH", f"{base}/api/v1/sessions/{session.pk}", token, {"title": "after"}
        )
        assert status == 200
        assert ChatSession.objects.get(pk=session.pk).title == "after"

    def test_a_chunked_body_is_411_and_stores_nothing(self, user, live_server_process):
        base, _ = live_server_process
        token = api_key_for(user)
        session = ChatSessionFactory(user=user)
        address = urllib.parse.urlsplit(base)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        payload = json.dumps({"role": "user", "content": "hi"}).encode()
        connection.request(
            "POST",
            f"/api/v1/sessions/{session.pk}/messages/",
            body=iter([payload]),  # an iterable body: http.client sends it chunked
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        connection.close()
        error = assert_envelope(response.status, headers, body, 411, "length_required")
        assert "Content-Length" in error["message"]
        assert not Message.objects.exists()

    def test_a_request_line_over_the_limit_is_the_414_envelope(self, live_server_process):
        base, _ = live_server_process
        request = f"GET /api/v1/{'a' * 5000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        assert_envelope(*raw_exchange(base, request), 414, "uri_too_long")

    def test_a_header_over_the_limit_is_the_431_envelope(self, live_server_process):
        base, _ = live_server_process
        request = f"GET /api/v1/sessions/ HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 9000}\r\n\r\n"
        assert_envelope(*raw_exchange(base, request.encode()), 431, "header_too_large")

    def test_bad_framing_is_the_400_envelope(self, live_server_process):
        base, _ = live_server_process
        # Both Content-Length and Transfer-Encoding: the request-smuggling shape.
        request = (
            b"POST /api/v1/sessions/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        assert_envelope(*raw_exchange(base, request), 400, "validation_error")
        header_without_colon = b"GET /api/v1/sessions/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"
        assert_envelope(*raw_exchange(base, header_without_colon), 400, "validation_error")


async def _ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.contextmanager
def uvicorn_serving(app):
    """`app` served by uvicorn with our protocol class (as `make serve-asgi`); yields its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server = Server(Config(app, http=NoDelayH11Protocol, lifespan="off", log_level="critical"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listener])))
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=10, what="uvicorn to start")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


class TestLiveUvicorn:
    def test_a_malformed_request_is_the_400_envelope(self):
        with uvicorn_serving(_ok_app) as base:
            answer = raw_exchange(base, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert_envelope(*answer, 400, "validation_error")

    def test_a_chunked_body_is_411_and_a_post_without_the_slash_is_stored(self, user, monkeypatch):
        from chatengine.asgi import application

        # Each request runs in a thread of its own under ASGI: close its database connection
        # when the request ends, or it outlives the test and the test database cannot be
        # dropped. (The settings dict is shared by every thread's connection.)
        monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)

        token = api_key_for(user)
        session = ChatSessionFactory(user=user)
        url = f"/api/v1/sessions/{session.pk}/messages"
        body = json.dumps({"role": "user", "content": "hi"}).encode()
        head = (
            f"POST {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        )
        chunked = f"{head}Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode()
        with uvicorn_serving(application) as base:
            refused = raw_exchange(base, chunked + body + b"\r\n0\r\n\r\n")
            assert_envelope(*refused, 411, "length_required")
            assert not Message.objects.exists()
            status, _, _ = urllib_json("POST", base + url, token, {"role": "user", "content": "a"})
        assert status == 201
        assert list(Message.objects.values_list("content", flat=True)) == ["a"]
