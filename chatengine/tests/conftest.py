import io
import json
import logging

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
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield JsonLogs(stream)
    finally:
        root.removeHandler(handler)
