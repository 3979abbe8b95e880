import io
import json
import logging
import socket

import pytest

from chatengine.logs import RequestIdFilter, json_formatter


class JsonLogs:
    """What the production JSON handler wrote: the same formatter and filter, on a buffer."""

    def __init__(self, stream: io.StringIO):
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def where(self, **fields) -> list[dict]:
        return [line for line in self.lines if all(line.get(k) == v for k, v in fields.items())]

    def one(self, **fields) -> dict:
        found = self.where(**fields)
        assert len(found) == 1, (fields, self.lines)
        return found[0]


@pytest.fixture
def json_logs():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    # The filters settings.LOGGING put on the one production handler, whatever they are.
    (production,) = [
        h for h in root.handlers if any(isinstance(f, RequestIdFilter) for f in h.filters)
    ]
    for log_filter in production.filters:
        handler.addFilter(log_filter)
    root.addHandler(handler)
    try:
        yield JsonLogs(stream)
    finally:
        root.removeHandler(handler)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broken_cache(settings):
    """The default cache: a real Redis client pointed at a port nobody listens on."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
