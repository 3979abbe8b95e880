"""bind_request_id: the one wrapper that keeps a request's id in the logs of its stream."""

import ast
import asyncio
from pathlib import Path

from chatengine.request_id import bind_request_id, get_request_id, set_request_id

ROOT = Path(__file__).resolve().parents[2]


class Stream:
    """Records the request id seen at each step and at close."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[str | None] = []
        self.closed_with: list[str | None] = []

    def __iter__(self):
        return self

    def __next__(self) -> int:
        self.seen.append(get_request_id())
        if len(self.seen) > self.n:
            raise StopIteration
        return len(self.seen)

    def close(self) -> None:
        self.closed_with.append(get_request_id())


class AsyncStream(Stream):
    def __aiter__(self):
        return self

    async def __anext__(self) -> int:
        try:
            return self.__next__()
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self.close()


def test_a_sync_stream_sees_the_bound_id_at_each_step_and_at_close_the_consumer_never():
    stream = Stream(2)
    set_request_id("consumer")
    consumed = []
    for item in bind_request_id(stream, request_id="req-1"):
        consumed.append((item, get_request_id()))
    assert consumed == [(1, "consumer"), (2, "consumer")]
    assert stream.seen == ["req-1", "req-1", "req-1"]
    assert stream.closed_with == ["req-1"]


def test_a_sync_stream_closed_early_is_closed_under_the_bound_id():
    stream = Stream(5)
    bound = bind_request_id(stream, request_id="req-2")
    assert next(bound) == 1
    bound.close()
    assert stream.closed_with == ["req-2"]
    assert get_request_id() != "req-2"


def test_an_async_stream_sees_the_bound_id_at_each_step_and_at_close_the_consumer_never():
    stream = AsyncStream(2)

    async def consume():
        set_request_id("consumer")
        return [(item, get_request_id()) async for item in bind_request_id(stream, request_id="r")]

    assert asyncio.run(consume()) == [(1, "consumer"), (2, "consumer")]
    assert stream.seen == ["r", "r", "r"]
    assert stream.closed_with == ["r"]


def test_only_the_middleware_and_bind_request_id_set_the_request_id():
    # One wrapper: nobody else sets and resets the id around a stream's steps.
    setters = set()
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0].startswith(".") or "tests" in relative.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "set_request_id":
                setters.add(str(relative))
    assert setters == {"chatengine/request_id.py", "chatengine/middleware.py"}
