"""The current request's id, readable from anywhere in the request (logs, error envelope)."""

import contextvars
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any, overload

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Accept a caller's id only if it is short and harmless to echo back and log.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id(incoming: str | None = None) -> str:
    if incoming and _VALID_REQUEST_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex


def get_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None) -> contextvars.Token:
    return _request_id.set(value)


def reset_request_id(token: contextvars.Token) -> None:
    _request_id.reset(token)


@overload
def bind_request_id(
    stream: AsyncIterable[Any], *, request_id: str | None
) -> AsyncIterator[Any]: ...
@overload
def bind_request_id(stream: Iterable[Any], *, request_id: str | None) -> Iterator[Any]: ...
def bind_request_id(stream, *, request_id):
    """Keep `request_id` in the logs of a stream (sync or async) that outlives the request.

    A streamed body is iterated after the request middleware has reset the id: take it with
    `get_request_id()` while the request is handled and bind it here. The id is set and reset
    around each step and around closing the stream (whose clean-up logs too), never across a
    `yield`: a token reset after the consumer moved on would restore a stale id into the
    consumer's context, and under ASGI each step may run in another context altogether (a
    contextvar token can only be reset where it was set).
    """
    if hasattr(stream, "__aiter__"):
        return _bind_async(aiter(stream), request_id)
    return _bind_sync(iter(stream), request_id)


async def _bind_async(iterator: AsyncIterator[Any], request_id: str | None) -> AsyncIterator[Any]:
    try:
        while True:
            token = set_request_id(request_id)
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                return
            finally:
                reset_request_id(token)
            yield item
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            token = set_request_id(request_id)
            try:
                await aclose()
            finally:
                reset_request_id(token)


def _bind_sync(iterator: Iterator[Any], request_id: str | None) -> Iterator[Any]:
    try:
        while True:
            token = set_request_id(request_id)
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                reset_request_id(token)
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            token = set_request_id(request_id)
            try:
                close()
            finally:
                reset_request_id(token)
