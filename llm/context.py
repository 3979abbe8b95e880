"""The context builder: which messages of a session go to the model. Pure: no database.

Policy, in order:
1. The session's system prompt and every `system` message handed in are always sent.
2. History is walked from the newest message back, one *unit* at a time, and each unit is
   added while it fits the budget; the walk stops at the first unit that does not fit. A unit
   is one message, except that an assistant message carrying `tool_calls` and the `tool`
   messages answering it form one unit, so a tool result never travels without the call that
   asked for it (nor a call without its results). Orphaned or unanswered tool messages are
   left out: the chat API rejects them.
3. Everything from the newest `user` message to the end must fit; if it does not, the request
   fails with `context_overflow`, saying by how many tokens.
4. The result is in chronological order.

Cost follows the window: the walk pulls history lazily and stops pulling when full.
"""

from collections.abc import Iterable, Iterator

from chatengine.exceptions import ContextOverflow
from llm.tokens import REPLY_PRIMING_TOKENS
from llm.types import ChatMessage, Context, HistoryMessage


def compute_budget(*, context_window: int, max_output_tokens: int, safety_margin: int) -> int:
    """Tokens the prompt may use: the window minus the reserved output and a safety margin."""
    budget = context_window - max_output_tokens - safety_margin
    if budget <= 0:
        raise ContextOverflow(
            f"max_output_tokens ({max_output_tokens}) leaves no room for the prompt in this "
            f"model's context window ({context_window} tokens).",
            details={"context_window": context_window, "max_output_tokens": max_output_tokens},
        )
    return budget


def _units(history: Iterable[HistoryMessage]) -> Iterator[tuple[list[HistoryMessage], bool]]:
    """Group newest-first history into units; yields (messages newest-first, sendable)."""
    pending_tools: list[HistoryMessage] = []
    for message in history:
        if message.role == "tool":
            pending_tools.append(message)
            continue
        if pending_tools:
            if message.role == "assistant" and message.tool_calls:
                answered = {t.tool_call_id for t in pending_tools}
                called = {c.id for c in message.tool_calls}
                yield [*pending_tools, message], answered == called
                pending_tools = []
                continue
            # Tool results with no calling assistant message right before them.
            yield pending_tools, False
            pending_tools = []
        if message.role == "assistant" and message.tool_calls:
            yield [message], False  # a call nobody answered (yet)
        else:
            yield [message], True
    if pending_tools:
        yield pending_tools, False


def select_messages(
    *,
    system_prompt: str,
    system_prompt_tokens: int,
    pinned: Iterable[HistoryMessage],
    history_newest_first: Iterable[HistoryMessage],
    total_messages: int,
    budget: int,
    encoding: str,
) -> Context:
    """Choose the messages to send (see the module docstring for the policy).

    `pinned` are the session's `system` messages (always sent); `history_newest_first` may
    contain them again, they are skipped there. `total_messages` is the history size
    (including a not-yet-stored new message) and only feeds the dropped count.
    """
    pinned = list(pinned)
    pinned_seqs = {m.seq for m in pinned}
    used = REPLY_PRIMING_TOKENS + sum(m.token_count for m in pinned)
    if system_prompt:
        used += system_prompt_tokens

    chosen: list[HistoryMessage] = []
    seen_user = False
    for unit, sendable in _units(history_newest_first):
        unit = [m for m in unit if not (m.role == "system" and m.seq in pinned_seqs)]
        if not unit or not sendable:
            continue
        cost = sum(m.token_count for m in unit)
        if used + cost <= budget:
            chosen.extend(unit)
            used += cost
            seen_user = seen_user or any(m.role == "user" for m in unit)
            continue
        if not seen_user:
            # The newest user message (and what follows it) must be sent; it cannot be.
            over_by = used + cost - budget
            raise ContextOverflow(
                f"The newest message does not fit in the model's context: it is {over_by} "
                f"tokens over the budget of {budget}.",
                details={"tokens": used + cost, "budget": budget, "over_by": over_by},
            )
        break

    # `chosen` is newest first: reversed, messages not stored yet (seq None, last) keep their
    # chronological order through the stable sort.
    included = sorted([*pinned, *reversed(chosen)], key=lambda m: (m.seq is None, m.seq or 0))
    messages = [m.to_chat() for m in included]
    if system_prompt:
        messages.insert(0, ChatMessage(role="system", content=system_prompt))
    seqs = tuple(m.seq for m in included)
    known = [s for s in seqs if s is not None]
    return Context(
        messages=tuple(messages),
        tokens=used,
        budget=budget,
        messages_included=len(included),
        messages_dropped=max(total_messages - len(included), 0),
        first_seq=min(known) if known else None,
        last_seq=max(known) if known else None,
        encoding=encoding,
        seqs=seqs,
    )
