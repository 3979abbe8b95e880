"""Rolling summaries: a `summary`-strategy session folds what falls out of the window.

When a reply's context (llm/services.build_context) leaves messages out beyond the session's
latest summary (`Context.evicted_to_seq`), they are folded into a new summary before the
context is built again, this time with it:

- Incremental: the summarising call gets the previous summary plus only the messages newly
  evicted (llm.context.summary_request), never the whole history, so it costs O(evicted); a
  long backlog (a session switched to `summary` late) is folded in chunks that fit the model.
- Bounded: the summary is capped at LLM_SUMMARY_MAX_TOKENS (the tokens of the message that
  carries it), and that much of the budget is set aside for it, so folding never changes
  which messages fit.
- Stored as rows of their own (conversations.models.Summary), never by rewriting messages.
- No transaction is open across the provider call: the row is inserted afterwards in its own
  short one. Racing replies cannot store two rows for one range: covers_from_seq is unique
  per session, so the second insert fails and that reply reads the winner's row instead.
- A failed summarising call never fails the reply: it goes out with the context already
  built (the plain window, with the previous summary if there was one), and the log says why.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction

from accounting import services as accounting
from accounting.models import CallKind
from chatengine.events import log_event
from conversations import selectors
from conversations.models import ChatSession, Summary
from llm.context import SUMMARY_INSTRUCTIONS, summary_message, summary_request
from llm.providers.base import LLMProvider
from llm.tokens import TokenCounter
from llm.types import Context, SummaryNote, Usage

logger = logging.getLogger("chatengine.llm")

# Messages read per chunk of a backlog, and chunks per reply: a reply catches up on at most
# this much; the next one goes on from there.
FOLD_BATCH = 200
MAX_FOLDS_PER_REPLY = 4


@dataclass(frozen=True)
class Folded:
    """What a fold ended with: the newest summary, and the tokens its calls cost."""

    summary: SummaryNote | None
    usage: Usage  # summed over the summarising calls made (none: all zero)


def note(summary: Summary) -> SummaryNote:
    """Adapt a stored row to what the pure builder takes."""
    return SummaryNote(
        id=summary.pk,
        covers_to_seq=summary.covers_to_seq,
        text=summary.text,
        token_count=summary.token_count,
    )


def builder_options(*, session: ChatSession) -> dict:
    """The summary arguments of llm.context.select_messages for this session (one indexed
    read of its latest summary under the `summary` strategy, nothing otherwise)."""
    if session.context_strategy != ChatSession.ContextStrategy.SUMMARY or session._state.adding:
        return {}
    latest = selectors.latest_summary(session=session)
    return {
        "strategy": ChatSession.ContextStrategy.SUMMARY.value,
        "summary": note(latest) if latest is not None else None,
        "summary_reserve": settings.LLM_SUMMARY_MAX_TOKENS,
    }


def context_for_reply(
    *,
    session: ChatSession,
    build: Callable[[], Context],
    model: str,
    counter: TokenCounter,
    provider: LLMProvider,
    input_budget: int,
) -> Context:
    """`build()`, and if it left messages out beyond the summary, fold them and build again.

    `input_budget`: the most tokens one summarising call may send (the model's prompt budget).
    """
    context = build()
    if context.evicted_to_seq is None or context.strategy != ChatSession.ContextStrategy.SUMMARY:
        return context
    try:
        fold(
            session=session,
            previous=context.summary,
            to_seq=context.evicted_to_seq,
            model=model,
            counter=counter,
            provider=provider,
            input_budget=input_budget,
        )
    except Exception as exc:  # the reply must never fail because of a summary
        log_event(
            "summary.failed",
            level=logging.WARNING,
            session_id=str(session.pk),
            error_type=getattr(exc, "error_type", type(exc).__name__),
            category=(getattr(exc, "details", None) or {}).get("category"),
        )
        return context
    return build()


def fold(
    *,
    session: ChatSession,
    previous: SummaryNote | None,
    to_seq: int,
    model: str,
    counter: TokenCounter,
    provider: LLMProvider,
    input_budget: int,
    max_folds: int = MAX_FOLDS_PER_REPLY,
) -> Folded:
    """Fold messages (previous.covers_to_seq, to_seq] into summaries; the newest one stored.

    Each round reads the next chunk of evicted messages that fits one call, summarises it
    with the previous summary and stores the row; a row a racing reply stored for the same
    start is taken instead. At most `max_folds` rounds. Raises what the provider raises.
    """
    from llm.services import history_message  # llm.services imports this module

    cap = settings.LLM_SUMMARY_MAX_TOKENS
    spent = Usage(0, 0, 0)
    for _ in range(max_folds):
        from_seq = (previous.covers_to_seq if previous is not None else 0) + 1
        if from_seq > to_seq:
            break
        rows = selectors.list_messages_to_fold(
            session=session, from_seq=from_seq, to_seq=to_seq, limit=FOLD_BATCH
        )
        # Room for the instructions, the previous summary and the reply.
        room = input_budget - 2 * cap - counter.count_text(SUMMARY_INSTRUCTIONS)
        chunk, used = [], 0
        for row in rows:
            if chunk and used + row.token_count > room:
                break
            chunk.append(history_message(row))
            used += row.token_count
        chunk_to = to_seq if len(chunk) == len(rows) < FOLD_BATCH else chunk[-1].seq
        if not chunk:
            # Only system messages in the range: they are sent anyway, nothing to say.
            chunk_to = to_seq
        previous, usage = _summarise_and_store(
            session=session,
            previous=previous,
            evicted=chunk,
            from_seq=from_seq,
            to_seq=chunk_to,
            model=model,
            counter=counter,
            provider=provider,
            cap=cap,
        )
        spent += usage
    return Folded(summary=previous, usage=spent)


@dataclass(frozen=True)
class Written:
    """One summarising call's result: the text cut to the cap, the tokens of the message that
    carries it, the model that wrote it, and what the call cost."""

    text: str
    token_count: int
    model: str
    reported: Usage | None  # as the provider reported it: what accounting records
    usage: Usage  # reported, else chatengine's own count


def summarise(
    *,
    messages: list,
    covers_to_seq: int,
    model: str,
    counter: TokenCounter,
    provider: LLMProvider,
    cap: int,
) -> Written:
    """Send a summary request (llm.context.summary_request) and fit its answer to `cap`.
    Stores nothing; raises what the provider raises."""
    completion = provider.complete(messages, model=model, max_output_tokens=cap)
    text, tokens = fit_to_cap(
        text=completion.text.strip(), covers_to_seq=covers_to_seq, counter=counter, cap=cap
    )
    usage = completion.usage
    if usage is None:
        sent = counter.count_prompt(messages)
        usage = Usage(sent, tokens, sent + tokens)
    return Written(text, tokens, completion.model, completion.usage, usage)


def _summarise_and_store(
    *,
    session: ChatSession,
    previous: SummaryNote | None,
    evicted: list,
    from_seq: int,
    to_seq: int,
    model: str,
    counter: TokenCounter,
    provider: LLMProvider,
    cap: int,
) -> tuple[SummaryNote, Usage]:
    """One summarising call and its row, and what the call cost."""
    started = time.monotonic()
    # No transaction is open here (a reply stores its user message only after this).
    written = summarise(
        messages=summary_request(previous=previous, evicted=evicted, max_tokens=cap),
        covers_to_seq=to_seq,
        model=model,
        counter=counter,
        provider=provider,
        cap=cap,
    )
    account = dict(
        user_id=session.user_id,
        kind=CallKind.SUMMARY,
        model=written.model,
        usage=written.reported,
    )
    try:
        with transaction.atomic():
            row = Summary.objects.create(
                session=session,
                covers_from_seq=from_seq,
                covers_to_seq=to_seq,
                text=written.text,
                token_count=written.token_count,
                model=written.model,
                usage=written.reported.as_dict() if written.reported else None,
            )
            accounting.record_usage(**account, session_id=session.pk)
    except IntegrityError:
        # A racing reply folded this range first: one summary per range, take its row.
        row = selectors.summary_starting_at(session=session, covers_from_seq=from_seq)
        if row is None:  # the session was deleted meanwhile
            raise
        # This call was made all the same: its tokens count, on no summary row.
        accounting.record_usage(**account, session_id=session.pk)
        log_event("summary.raced", session_id=str(session.pk), covers_from_seq=from_seq)
        return note(row), written.usage
    log_event(
        "summary.created",
        session_id=str(session.pk),
        summary_id=row.pk,
        covers_from_seq=from_seq,
        covers_to_seq=to_seq,
        messages=len(evicted),
        token_count=written.token_count,
        latency_ms=int((time.monotonic() - started) * 1000),
    )
    return note(row), written.usage


def fit_to_cap(
    *, text: str, covers_to_seq: int, counter: TokenCounter, cap: int
) -> tuple[str, int]:
    """The summary text cut (by tokens) so that the message carrying it stays within `cap`."""
    for _ in range(4):
        message = summary_message(text=text, covers_to_seq=covers_to_seq)
        tokens = counter.count_chat(message)
        if tokens <= cap:
            return text, tokens
        ids = counter.encoding.encode(text, disallowed_special=())
        text = counter.encoding.decode(ids[: max(0, len(ids) - (tokens - cap) - 1)])
    message = summary_message(text="", covers_to_seq=covers_to_seq)
    return "", counter.count_chat(message)
