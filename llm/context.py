"""The context builder: which messages of a session go to the model. Pure: no database.

Policy, in order:
1. The session's system prompt and every pinned message handed in (the session's `system`
   messages and those marked `pinned`) are always sent, and counted first: if they alone do
   not fit, the request fails with `context_overflow` saying so.
2. History is walked from the newest message back, one *unit* at a time, and each unit is
   added while it fits the budget; the walk stops at the first unit that does not fit. A unit
   is one message, except that an assistant message carrying `tool_calls` and the `tool`
   messages answering it form one unit, so a tool result never travels without the call that
   asked for it (nor a call without its results). Orphaned or unanswered tool messages are
   left out: the chat API rejects them.
3. Everything from the newest `user` message to the end must fit; if it does not, the request
   fails with `context_overflow`, saying by how many tokens.
4. The result is in chronological order.
5. With a summary (the `summary` strategy, llm/summaries.py), `summary_reserve` tokens are set
   aside for it, the walk stops at the messages it covers (1..N), and it is sent as one
   system message where those messages were: after the pinned messages it covers, before
   the newest messages. The newest seq the walk left out beyond the summary is reported
   (`evicted_to_seq`): what the next summary folds.

Cost follows the window: the walk pulls history lazily and stops pulling when full.
"""

from collections.abc import Iterable, Iterator

from chatengine.exceptions import ContextOverflow
from llm.tokens import REPLY_PRIMING_TOKENS
from llm.types import ChatMessage, Context, HistoryMessage, SummaryNote

# The summarising call's instructions; the echo provider recognises them (llm/providers/echo.py).
SUMMARY_INSTRUCTIONS = (
    "You maintain the running summary of a conversation. You are given the summary so far (if "
    "any) and the messages that follow it. Write the updated summary: keep every fact, name, "
    "number, decision and open question the conversation may need later; drop pleasantries. "
    "Write plain prose, no preamble."
)


def summary_message(*, text: str, covers_to_seq: int) -> ChatMessage:
    """The system message that carries a summary of messages 1..covers_to_seq into a context."""
    return ChatMessage(
        role="system",
        content=f"Summary of messages 1-{covers_to_seq} of this conversation (they are not "
        f"shown):\n{text}",
    )


def summary_request(
    *, previous: SummaryNote | None, evicted: Iterable[HistoryMessage], max_tokens: int
) -> list[ChatMessage]:
    """What the summarising call sends: the instructions, the previous summary, and only the
    messages newly folded (each as a labelled user message, so tool calls need no pairing)."""
    messages = [
        ChatMessage(
            role="system", content=f"{SUMMARY_INSTRUCTIONS} Stay under {max_tokens} tokens."
        )
    ]
    if previous is not None:
        messages.append(summary_message(text=previous.text, covers_to_seq=previous.covers_to_seq))
    for m in evicted:
        content = m.content
        if m.tool_calls:
            calls = ", ".join(f"{c.name}({c.arguments})" for c in m.tool_calls)
            content = f"{content} [calls {calls}]".strip()
        messages.append(ChatMessage(role="user", content=f"[#{m.seq} {m.role}] {content}"))
    return messages


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
    strategy: str = "window",
    summary: SummaryNote | None = None,
    summary_reserve: int = 0,
) -> Context:
    """Choose the messages to send (see the module docstring for the policy).

    `pinned` are the session's `system` and pinned messages (always sent);
    `history_newest_first` may contain them again, they are skipped there. `total_messages`
    is the history size (including a not-yet-stored new message) and only feeds the dropped
    count. `summary_reserve` (the summary cap) is set aside whether or not a summary exists
    yet, so folding one in never changes which messages fit.
    """
    pinned = list(pinned)
    pinned_seqs = {m.seq for m in pinned}
    used = REPLY_PRIMING_TOKENS + sum(m.token_count for m in pinned)
    if system_prompt:
        used += system_prompt_tokens
    if pinned and used + summary_reserve > budget:
        over_by = used + summary_reserve - budget
        raise ContextOverflow(
            f"The pinned messages do not fit in the model's context: with the system prompt "
            f"they are {over_by} tokens over the budget of {budget}. Unpin some.",
            details={
                "tokens": used + summary_reserve,
                "budget": budget,
                "over_by": over_by,
                "pinned_messages": len(pinned),
            },
        )
    walk_budget = budget - summary_reserve
    covered = summary.covers_to_seq if summary is not None else 0

    chosen: list[HistoryMessage] = []
    seen_user = False
    evicted_to: int | None = None
    for unit, sendable in _units(history_newest_first):
        if covered and all(m.seq is not None and m.seq <= covered for m in unit):
            break  # the summary stands for this and everything older
        if pinned_seqs:
            unit = [m for m in unit if m.seq is None or m.seq not in pinned_seqs]
        if not unit or not sendable:
            continue
        # (Most units are one message: no generator for them, this runs per message.)
        cost = unit[0].token_count if len(unit) == 1 else sum(m.token_count for m in unit)
        if used + cost <= walk_budget:
            chosen.extend(unit)
            used += cost
            if not seen_user:
                seen_user = any(m.role == "user" for m in unit)
            continue
        if not seen_user:
            # The newest user message (and what follows it) must be sent; it cannot be.
            over_by = used + cost - budget
            raise ContextOverflow(
                f"The newest message does not fit in the model's context: it is {over_by} "
                f"tokens over the budget of {budget}.",
                details={"tokens": used + cost, "budget": budget, "over_by": over_by},
            )
        evicted_to = max((m.seq for m in unit if m.seq is not None), default=None)
        break

    # `chosen` is newest first, the messages not stored yet (seq None) at its start: reversed,
    # it is in chronological order. Pinned messages are merged in by seq (the sort is stable,
    # so the messages not stored yet, last, keep their order).
    included = chosen[::-1]
    if pinned:
        included = sorted([*pinned, *included], key=lambda m: (m.seq is None, m.seq or 0))
    messages = [m.to_chat() for m in included]
    if summary is not None:
        # Where the messages it stands for were: after the pinned ones it covers.
        at = sum(1 for m in included if m.seq is not None and m.seq <= summary.covers_to_seq)
        messages.insert(at, summary_message(text=summary.text, covers_to_seq=summary.covers_to_seq))
        used += summary.token_count
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
        strategy=strategy,
        summary=summary,
        evicted_to_seq=evicted_to if evicted_to is not None and evicted_to > covered else None,
    )
