"""Any OpenAI-compatible chat-completions server, through the official `openai` SDK.

Every SDK type and exception stays in this module: callers get llm.types values and
chatengine.exceptions errors.
"""

import asyncio
import math
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import openai
from django.conf import settings
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from chatengine.exceptions import (
    ApplicationError,
    ContextOverflow,
    LLMTimeout,
    LLMUpstreamError,
    RateLimited,
)
from llm.types import ChatMessage, Completion, GenerationOptions, StreamChunk, ToolCall, Usage

CREDENTIALS_REJECTED = (
    "The LLM provider rejected the engine's credentials; an operator must check its API key."
)


def _retry_after(headers: Any) -> str | None:
    """Seconds to wait, from `retry-after-ms` or `retry-after`, as a whole number string."""
    if headers is None:
        return None
    for header, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        raw = headers.get(header)
        if raw is None:
            continue
        try:
            seconds = float(raw) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return str(max(1, math.ceil(seconds)))
    return None


def map_error(exc: BaseException) -> ApplicationError:
    """Translate an SDK (or stream-parsing) failure into the domain error the API returns.

    Messages say what failed, never the upstream body (it may quote the prompt) or the key.
    The category goes in `details` so logs and metrics can count outcomes.
    """
    if isinstance(exc, openai.RateLimitError):
        retry = _retry_after(exc.response.headers)
        return RateLimited(
            "The LLM provider is rate limiting the engine; retry later.",
            details={"category": "rate_limited", "upstream_status": 429},
            headers={"Retry-After": retry} if retry else None,
        )
    if isinstance(exc, openai.APITimeoutError):
        return LLMTimeout(details={"category": "timeout"})
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return LLMUpstreamError(
            CREDENTIALS_REJECTED,
            details={"category": "credentials", "upstream_status": exc.status_code},
        )
    if isinstance(exc, openai.BadRequestError) and _error_code(exc) == "context_length_exceeded":
        return ContextOverflow(
            "The LLM provider says the prompt does not fit the model's context window.",
            details={"category": "context_overflow", "upstream_status": exc.status_code},
        )
    if isinstance(exc, openai.APIStatusError):
        return LLMUpstreamError(
            f"The LLM provider answered with HTTP {exc.status_code}.",
            details={"category": "upstream_error", "upstream_status": exc.status_code},
        )
    if isinstance(exc, openai.APIConnectionError):
        return LLMUpstreamError(
            "The LLM provider could not be reached or closed the connection.",
            details={"category": "connection_error"},
        )
    # A malformed chunk (bad JSON, missing fields) or another SDK error.
    return LLMUpstreamError(
        "The LLM provider sent a response the engine could not read.",
        details={"category": "malformed_response"},
    )


def _error_code(exc: "openai.APIStatusError") -> str | None:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner.get("code")
    return None


# Every SDK failure is re-raised `from None`: the SDK exception's text is the upstream error
# body, which may quote the prompt or the API key, and a 5xx is logged with its traceback
# (chained causes included). The category and upstream status in `details` say what failed.

# What may come out of the SDK while a response is read: its own errors, and a plain
# ValueError/KeyError/TypeError/AttributeError when a chunk is not the JSON it expects.
_SDK_FAILURES = (openai.OpenAIError, ValueError, KeyError, TypeError, AttributeError)


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    return Usage(
        prompt_tokens=int(raw.prompt_tokens or 0),
        completion_tokens=int(raw.completion_tokens or 0),
        total_tokens=int(raw.total_tokens or 0),
    )


def _chunk(raw: Any) -> StreamChunk:
    delta, finish = "", None
    if raw.choices:
        choice = raw.choices[0]
        delta = (choice.delta.content or "") if choice.delta else ""
        finish = choice.finish_reason
    return StreamChunk(delta=delta, model=raw.model, finish_reason=finish, usage=_usage(raw.usage))


class OpenAIProvider:
    name = "openai"

    def __init__(self) -> None:
        self._options = {
            "api_key": settings.OPENAI_API_KEY or "not-set",
            "base_url": settings.OPENAI_BASE_URL or None,
            "timeout": settings.LLM_TIMEOUT_S,
            "max_retries": settings.LLM_MAX_RETRIES,
        }
        self._client = openai.OpenAI(**self._options)
        # An async client's connection pool belongs to the event loop that made it.
        self._async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _async_client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_clients[loop] = openai.AsyncOpenAI(**self._options)
        return client

    @staticmethod
    def _request(
        messages: Sequence[ChatMessage],
        model: str,
        max_output_tokens: int,
        options: GenerationOptions | None = None,
    ) -> dict:
        return {
            "model": model,
            "messages": [m.as_openai() for m in messages],
            "max_completion_tokens": max_output_tokens,
            **(options.as_openai() if options is not None else {}),
        }

    # The body is posted with the client's own `post` (the SDK's documented way to send a
    # request body as is), not `chat.completions.create`: create() re-walks every message
    # against the SDK's TypedDicts, which costs ~0.3 ms per message (33 ms for 100, far more
    # for a 128k window) on every reply. Our messages are already in the wire format; retries,
    # timeouts, errors and response parsing are the same client code either way.
    def _post(self, body: dict, *, stream: bool) -> Any:
        if stream:
            return self._client.post(
                "/chat/completions",
                body=body,
                cast_to=ChatCompletion,
                stream=True,
                stream_cls=openai.Stream[ChatCompletionChunk],
            )
        return self._client.post("/chat/completions", body=body, cast_to=ChatCompletion)

    async def _apost_stream(self, body: dict) -> Any:
        return await self._async_client().post(
            "/chat/completions",
            body=body,
            cast_to=ChatCompletion,
            stream=True,
            stream_cls=openai.AsyncStream[ChatCompletionChunk],
        )

    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        max_output_tokens: int,
        options: GenerationOptions | None = None,
    ) -> Completion:
        try:
            raw = self._post(
                self._request(messages, model, max_output_tokens, options), stream=False
            )
            choice = raw.choices[0]
            tool_calls = tuple(
                ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
                for c in (choice.message.tool_calls or [])
            )
            return Completion(
                text=choice.message.content or "",
                model=raw.model or model,
                finish_reason=choice.finish_reason or "stop",
                usage=_usage(raw.usage),
                tool_calls=tool_calls,
            )
        except _SDK_FAILURES as exc:
            raise map_error(exc) from None
        except IndexError as exc:  # no choices at all
            raise map_error(exc) from None

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        max_output_tokens: int,
        options: GenerationOptions | None = None,
    ) -> Iterator[StreamChunk]:
        try:
            response = self._post(
                {
                    **self._request(messages, model, max_output_tokens, options),
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
                stream=True,
            )
        except _SDK_FAILURES as exc:
            raise map_error(exc) from None
        with response:
            try:
                for raw in response:
                    yield _chunk(raw)
            except _SDK_FAILURES as exc:
                raise map_error(exc) from None

    async def astream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        max_output_tokens: int,
        options: GenerationOptions | None = None,
    ) -> AsyncIterator[StreamChunk]:
        try:
            response = await self._apost_stream(
                {
                    **self._request(messages, model, max_output_tokens, options),
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
            )
        except _SDK_FAILURES as exc:
            raise map_error(exc) from None
        try:
            async for raw in response:
                yield _chunk(raw)
        except _SDK_FAILURES as exc:
            raise map_error(exc) from None
        finally:
            # Also on cancellation (client gone): release the upstream connection now.
            await response.close()
