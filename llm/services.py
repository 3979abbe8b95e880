"""A reply: store the user message, build the context, call the provider, store the reply.

Each database write is its own short transaction (`append_message`); the provider is called
with no transaction open, so a slow model never holds a row lock or a connection's transaction.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction

from accounting import services as accounting
from accounting.models import CallKind
from chatengine.events import log_event
from chatengine.exceptions import ApplicationError, Conflict
from chatengine.metrics import LLM_LATENCY, LLM_REQUESTS, LLM_TOKENS
from conversations import branching, idempotency, selectors, services
from conversations.models import ChatSession, Message
from llm import summaries, titles
from llm.catalog import for_model
from llm.context import compute_budget, select_messages
from llm.providers.base import LLMProvider, get_provider
from llm.tokens import TokenCounter, counter_for_model
from llm.types import Completion, Context, GenerationOptions, HistoryMessage, ToolCall, Usage

logger = logging.getLogger("chatengine.llm")

HISTORY_BATCH_SIZE = 100
INTERRUPTED = "interrupted"


def context_window_for_model(model: str) -> int:
    """The model's context window: settings.LLM_MODEL_CONTEXT_WINDOWS (llm.catalog.for_model),
    else the default."""
    window = for_model(settings.LLM_MODEL_CONTEXT_WINDOWS, model)
    return settings.LLM_DEFAULT_CONTEXT_TOKENS if window is None else window


def resolve_model(*, session: ChatSession, model: str | None = None) -> str:
    return model or session.model or settings.LLM_MODEL


def history_message(message: Message) -> HistoryMessage:
    """Adapt a stored row to what the pure context builder takes."""
    return HistoryMessage(
        seq=message.seq,
        role=message.role,
        content=message.content,
        token_count=message.token_count,
        name=message.name,
        tool_calls=tuple(ToolCall.from_openai(c) for c in (message.tool_calls or [])),
        tool_call_id=message.tool_call_id,
    )


def _history_batch_size(*, session: ChatSession, budget: int) -> int:
    """How many messages to read per batch: about what fills the window, from the session's
    average stored message size, so one read usually suffices and it never grows with the
    history. Falls back to HISTORY_BATCH_SIZE for an empty session."""
    if not session.message_count or not session.total_tokens:
        return HISTORY_BATCH_SIZE
    average = max(1, session.total_tokens // session.message_count)
    return max(16, min(2_000, budget // average + 2))


def build_context(
    session: ChatSession,
    *,
    budget: int | None = None,
    model: str | None = None,
    max_output_tokens: int | None = None,
    pending: HistoryMessage | tuple[HistoryMessage, ...] | None = None,
    replacing: int | None = None,
    max_context_tokens: int | None = None,
) -> Context:
    """What would be sent for `session` now (plus `pending`: messages not stored yet, oldest
    first).

    `max_context_tokens`: a lower ceiling than the model's budget (OpenAI's
    `context_management` `compact_threshold`).

    `replacing`: the seq of the session's last message, whose answer is being regenerated;
    the history then ends before it (the context that message was answered from).

    History is read newest-first in keyset batches and reading stops once the budget is full.
    The session's `system` and pinned messages are always sent: read with the first batch,
    in the same round trip.
    """
    model = resolve_model(session=session, model=model)
    counter = counter_for_model(model)
    if budget is None:
        budget = compute_budget(
            context_window=context_window_for_model(model),
            max_output_tokens=max_output_tokens or settings.LLM_DEFAULT_MAX_OUTPUT_TOKENS,
            safety_margin=settings.LLM_CONTEXT_SAFETY_MARGIN,
        )
    if max_context_tokens is not None:
        budget = min(budget, max_context_tokens)

    batch_size = _history_batch_size(session=session, budget=budget)
    if session._state.adding:
        # An unsaved session (a reply that stores nothing, in no conversation): no history.
        first = selectors.ContextRows(newest=[], has_more=False, system=[])
    else:
        # One round trip: the first batch and the system and pinned messages (below the
        # message being regenerated, if any: the context it was answered from).
        first = selectors.list_context_messages(
            session=session, limit=batch_size, before=replacing, always_sent=True
        )

    if pending is None:
        pending = ()
    elif isinstance(pending, HistoryMessage):
        pending = (pending,)

    def history() -> Iterator[HistoryMessage]:
        yield from reversed(pending)
        rows = first
        while True:
            yield from rows.newest
            if not rows.has_more:
                return
            rows = selectors.list_context_messages(
                session=session, limit=batch_size, before=rows.newest[-1].seq
            )

    pinned = first.system
    summary_options = summaries.builder_options(session=session)
    return select_messages(
        system_prompt=session.system_prompt,
        system_prompt_tokens=counter.count_message(role="system", content=session.system_prompt),
        pinned=pinned,
        history_newest_first=history(),
        total_messages=session.message_count + len(pending) - (1 if replacing is not None else 0),
        budget=budget,
        encoding=counter.encoding_name,
        **summary_options,
    )


@dataclass(frozen=True)
class PreparedReply:
    """Everything decided before the LLM call; the user message (if any) is stored."""

    session: ChatSession
    user_message: Message | None
    context: Context
    model: str
    max_output_tokens: int
    metadata: dict[str, Any] | None
    counter: TokenCounter
    provider: LLMProvider
    # False: nothing is written, the reply comes back as an unsaved Message (OpenAI's
    # `store: false`; prepared with `user_message=None` and a context built in memory).
    store: bool = True
    options: GenerationOptions | None = None  # temperature, top_p, tools: passed through
    # A regenerate: the last message, whose current answer the reply replaces (not appended).
    replaces: Message | None = None

    def provider_options(self) -> dict[str, Any]:
        """Keyword arguments of the provider call beyond the messages."""
        options = {"model": self.model, "max_output_tokens": self.max_output_tokens}
        if self.options is not None:
            options["options"] = self.options
        return options


@dataclass(frozen=True)
class ReplyResult:
    user_message: Message | None
    message: Message
    context: Context


def prepare_reply(
    *,
    session: ChatSession,
    content: str | None = None,
    model: str | None = None,
    max_output_tokens: int | None = None,
    metadata: dict[str, Any] | None = None,
    checkpoint: idempotency.Checkpoint | None = None,
    max_context_tokens: int | None = None,
) -> PreparedReply:
    """Validate, build the context (with the new message counted) and only then store it.

    Anything rejected here (archived session, empty session, context overflow) stores nothing.
    `checkpoint` (the request's Idempotency-Key, if any) records the stored user message with
    it, so a retry after a failed LLM call reuses that message instead of storing it twice.
    """
    if session.archived:
        raise Conflict("The session is archived; unarchive it to add messages.")
    if content is None and session.message_count == 0:
        # A conflict with the session's state, not a malformed request: the same body is valid
        # once the session has messages (the schema cannot know, so a 400 here would
        # contradict it).
        raise Conflict("The session has no messages yet; send content to reply to.")
    accounting.check_quota(user_id=session.user_id)
    model = resolve_model(session=session, model=model)
    max_output_tokens = max_output_tokens or settings.LLM_DEFAULT_MAX_OUTPUT_TOKENS
    counter = counter_for_model(model)
    stored = _user_message_of_a_failed_attempt(session=session, checkpoint=checkpoint)
    if stored is not None:
        # A retry (same Idempotency-Key) of a reply whose LLM call failed: its user message
        # is already in the history; ask again without storing it twice.
        return PreparedReply(
            session=session,
            user_message=stored,
            context=_context_for_reply(
                session,
                model=model,
                max_output_tokens=max_output_tokens,
                counter=counter,
                max_context_tokens=max_context_tokens,
            ),
            model=model,
            max_output_tokens=max_output_tokens,
            metadata=None,
            counter=counter,
            provider=get_provider(),
        )
    pending = None
    if content is not None:
        pending = HistoryMessage(
            seq=None,
            role=Message.Role.USER,
            content=content,
            token_count=counter.count_message(role=Message.Role.USER, content=content),
        )
    context = _context_for_reply(
        session,
        model=model,
        max_output_tokens=max_output_tokens,
        counter=counter,
        pending=pending,
        max_context_tokens=max_context_tokens,
    )
    user_message = None
    if pending is not None:

        def store_user_message() -> Message:
            return services.append_message(
                session=session,
                role=Message.Role.USER,
                content=content,
                metadata=metadata,
                token_count=pending.token_count,
            )

        if checkpoint is not None:
            # Short: the message and its key's checkpoint commit together, never the LLM call.
            with transaction.atomic():
                user_message = store_user_message()
                checkpoint.save(user_message_id=user_message.pk)
        else:
            # The append is its own transaction; wrapping it would only add a savepoint (or a
            # BEGIN/COMMIT) round trip pair before the LLM call.
            user_message = store_user_message()
        context = context.with_pending_seq(user_message.seq)
    return PreparedReply(
        session=session,
        user_message=user_message,
        context=context,
        model=model,
        max_output_tokens=max_output_tokens,
        metadata=None if user_message is not None else metadata,
        counter=counter,
        provider=get_provider(),
    )


def _context_for_reply(
    session: ChatSession,
    *,
    model: str,
    max_output_tokens: int,
    counter: TokenCounter,
    pending: HistoryMessage | None = None,
    max_context_tokens: int | None = None,
) -> Context:
    """build_context, after folding what left the window into the summary (summary strategy,
    llm/summaries.py); before the user message is stored, so a summarising call holds no
    transaction and a rejected request stores nothing."""
    return summaries.context_for_reply(
        session=session,
        build=lambda: build_context(
            session,
            model=model,
            max_output_tokens=max_output_tokens,
            pending=pending,
            max_context_tokens=max_context_tokens,
        ),
        model=model,
        counter=counter,
        provider=get_provider(),
        input_budget=compute_budget(
            context_window=context_window_for_model(model),
            max_output_tokens=max_output_tokens,
            safety_margin=settings.LLM_CONTEXT_SAFETY_MARGIN,
        ),
    )


def _user_message_of_a_failed_attempt(
    *, session: ChatSession, checkpoint: idempotency.Checkpoint | None
) -> Message | None:
    """The user message an earlier attempt with this request's Idempotency-Key stored."""
    if checkpoint is None:
        return None
    message_id = checkpoint.progress.get("user_message_id")
    if message_id is None:
        return None
    return Message.objects.filter(pk=message_id, session=session).first()


# --- Logging and metrics --------------------------------------------------------------------
def _log_request(prepared: PreparedReply) -> None:
    log_event(
        "llm.request",
        provider=prepared.provider.name,
        model=prepared.model,
        prompt_tokens=prepared.context.tokens,
        messages=len(prepared.context.messages),
    )


def _log_response(
    prepared: PreparedReply,
    *,
    model: str,
    usage: Usage | None,
    finish_reason: str,
    latency_ms: int,
) -> None:
    provider = prepared.provider.name
    outcome = "interrupted" if finish_reason == INTERRUPTED else "ok"
    LLM_REQUESTS.labels(provider=provider, outcome=outcome).inc()
    LLM_LATENCY.labels(provider=provider).observe(latency_ms / 1000)
    if usage is not None:
        LLM_TOKENS.labels(provider=provider, kind="prompt").inc(usage.prompt_tokens)
        LLM_TOKENS.labels(provider=provider, kind="completion").inc(usage.completion_tokens)
    log_event(
        "llm.response",
        provider=provider,
        model=model,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        latency_ms=latency_ms,
        finish_reason=finish_reason,
    )


def _log_error(prepared: PreparedReply, exc: ApplicationError, latency_ms: int) -> None:
    category = (exc.details or {}).get("category", exc.error_type)
    LLM_REQUESTS.labels(provider=prepared.provider.name, outcome=category).inc()
    LLM_LATENCY.labels(provider=prepared.provider.name).observe(latency_ms / 1000)
    log_event(
        "llm.error",
        level=logging.WARNING,
        provider=prepared.provider.name,
        model=prepared.model,
        latency_ms=latency_ms,
        category=category,
        error_type=exc.error_type,
    )


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def store_reply(
    prepared: PreparedReply,
    *,
    text: str,
    model: str,
    finish_reason: str,
    usage: Usage | None,
    latency_ms: int,
    tool_calls: tuple[ToolCall, ...] = (),
) -> Message:
    """Append the assistant message with what went into it, and account for its usage, in one
    transaction: the usage totals always equal the stored replies' usage. For a regenerate,
    store it as the new answer of the message it replaces, and account for it the same.

    With `prepared.store` false, the same message unsaved (no id, no seq): nothing is written
    but its usage, on the user alone (the tokens were spent all the same).
    """
    fields = dict(
        role=Message.Role.ASSISTANT,
        content=text,
        metadata=prepared.metadata,
        token_count=prepared.counter.count_message(
            role=Message.Role.ASSISTANT, content=text, tool_calls=tool_calls
        ),
        tool_calls=[c.as_openai() for c in tool_calls] or None,
        model=model,
        usage=usage.as_dict() if usage else None,
        finish_reason=finish_reason,
        latency_ms=latency_ms,
        context=prepared.context.as_record(),
    )
    account = dict(user_id=prepared.session.user_id, kind=CallKind.REPLY, model=model, usage=usage)
    if not prepared.store:
        fields["metadata"] = fields["metadata"] or {}
        accounting.record_usage(session_id=None, **account)
        return Message(session=prepared.session, **fields)
    if prepared.replaces is not None:
        answer = {name: value for name, value in fields.items() if name != "role"}
        answer["metadata"] = answer["metadata"] or {}
        # replace_answer commits the answer (current, or kept as an earlier version with a
        # Conflict after the commit), so its usage is recorded just after, not in its transaction.
        try:
            message = branching.replace_answer(
                session=prepared.session, seq=prepared.replaces.seq, answer=answer
            )
        except Conflict:
            accounting.record_usage(
                session_id=prepared.session.pk, message_id=prepared.replaces.pk, **account
            )
            raise
        accounting.record_usage(session_id=prepared.session.pk, message_id=message.pk, **account)
        return message
    with transaction.atomic():
        message = services.append_message(session=prepared.session, **fields)
        accounting.record_usage(
            session_id=prepared.session.pk, message_id=message.pk, at=message.created_at, **account
        )
    return message


# --- Whole replies ----------------------------------------------------------------------------
def complete_reply(prepared: PreparedReply) -> ReplyResult:
    """Call the provider (no transaction open) and store its reply."""
    _log_request(prepared)
    started = time.monotonic()
    try:
        completion: Completion = prepared.provider.complete(
            list(prepared.context.messages), **prepared.provider_options()
        )
    except ApplicationError as exc:
        _log_error(prepared, exc, _elapsed_ms(started))
        raise
    latency_ms = _elapsed_ms(started)
    _log_response(
        prepared,
        model=completion.model,
        usage=completion.usage,
        finish_reason=completion.finish_reason,
        latency_ms=latency_ms,
    )
    message = store_reply(
        prepared,
        text=completion.text,
        model=completion.model,
        finish_reason=completion.finish_reason,
        usage=completion.usage,
        latency_ms=latency_ms,
        tool_calls=completion.tool_calls,
    )
    _give_title(prepared)
    return ReplyResult(
        user_message=prepared.user_message, message=message, context=prepared.context
    )


def _give_title(prepared: PreparedReply) -> None:
    """After a stored reply (committed, no transaction open): name the session if nobody has."""
    if not prepared.store:
        return  # no conversation to name
    titles.give_title(session=prepared.session, provider=prepared.provider, model=prepared.model)


def reply(
    *,
    session: ChatSession,
    content: str | None = None,
    model: str | None = None,
    max_output_tokens: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> ReplyResult:
    """Reply to the session (after appending `content` as a user message, if given)."""
    prepared = prepare_reply(
        session=session,
        content=content,
        model=model,
        max_output_tokens=max_output_tokens,
        metadata=metadata,
    )
    return complete_reply(prepared)


# --- Streamed replies ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Completed:
    message: Message


@dataclass(frozen=True)
class Failed:
    error: ApplicationError
    message: Message | None  # the partial reply stored, if anything had arrived


StreamEvent = Delta | Completed | Failed


class _StreamState:
    """What has arrived so far; turns into the stored message however the stream ends."""

    def __init__(self, prepared: PreparedReply) -> None:
        self.prepared = prepared
        self.started = time.monotonic()
        self.parts: list[str] = []
        self.model = prepared.model
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        # Set once finish() starts storing: an error it raises (a Conflict) must not make
        # interrupt() store the same text a second time.
        self.stored = False

    def take(self, chunk) -> str:
        if chunk.model:
            self.model = chunk.model
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.delta:
            self.parts.append(chunk.delta)
        return chunk.delta

    def finish(self) -> Message:
        self.stored = True
        latency_ms = _elapsed_ms(self.started)
        finish_reason = self.finish_reason or "stop"
        _log_response(
            self.prepared,
            model=self.model,
            usage=self.usage,
            finish_reason=finish_reason,
            latency_ms=latency_ms,
        )
        return store_reply(
            self.prepared,
            text="".join(self.parts),
            model=self.model,
            finish_reason=finish_reason,
            usage=self.usage,
            latency_ms=latency_ms,
        )

    def interrupt(self, exc: ApplicationError | None) -> Message | None:
        """The stream broke (upstream error) or the client left: keep what arrived."""
        latency_ms = _elapsed_ms(self.started)
        if exc is not None:
            _log_error(self.prepared, exc, latency_ms)
        else:
            _log_response(
                self.prepared,
                model=self.model,
                usage=self.usage,
                finish_reason=INTERRUPTED,
                latency_ms=latency_ms,
            )
        if not self.parts or self.stored:
            # Nothing arrived (an empty assistant message would only add noise), or finish()
            # already stored it (or refused to).
            return None
        return store_reply(
            self.prepared,
            text="".join(self.parts),
            model=self.model,
            finish_reason=INTERRUPTED,
            usage=self.usage,
            latency_ms=latency_ms,
        )


def stream_reply(prepared: PreparedReply) -> Iterator[StreamEvent]:
    """The reply as events, for WSGI servers: the generator is closed if the client leaves."""
    _log_request(prepared)
    state = _StreamState(prepared)
    finished = False
    chunks = prepared.provider.stream(
        list(prepared.context.messages), **prepared.provider_options()
    )
    try:
        with contextlib.closing(chunks):  # closing it closes the upstream connection
            for chunk in chunks:
                if state.take(chunk):
                    yield Delta(chunk.delta)
        finished = True
        message = state.finish()
    except ApplicationError as exc:
        finished = True
        yield Failed(error=exc, message=state.interrupt(exc))
        return
    finally:
        if not finished:  # GeneratorExit: the server stopped reading (client disconnected)
            state.interrupt(None)
    yield Completed(message)
    _give_title(prepared)  # after the client has the whole reply


async def astream_reply(prepared: PreparedReply) -> AsyncIterator[StreamEvent]:
    """The reply as events, for ASGI servers: no thread is held while the model talks.

    When the client disconnects, Django cancels the response task: the CancelledError
    arrives here mid-await, the partial reply is stored, and the cancellation goes on.
    """
    _log_request(prepared)
    state = _StreamState(prepared)
    chunks = prepared.provider.astream(
        list(prepared.context.messages), **prepared.provider_options()
    )
    try:
        async with contextlib.aclosing(chunks):  # closing it closes the upstream connection
            async for chunk in chunks:
                if state.take(chunk):
                    yield Delta(chunk.delta)
        message = await sync_to_async(state.finish)()
    except ApplicationError as exc:
        stored = await asyncio.shield(sync_to_async(state.interrupt)(exc))
        yield Failed(error=exc, message=stored)
        return
    except (asyncio.CancelledError, GeneratorExit):
        await asyncio.shield(sync_to_async(state.interrupt)(None))
        raise
    yield Completed(message)
    await sync_to_async(_give_title)(prepared)  # after the client has the whole reply
