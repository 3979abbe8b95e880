"""Session transcripts as JSON or Markdown, produced piece by piece for streaming responses.

Each function yields strings; messages are read in chunks (`selectors.iter_transcript`), so
exporting a million-message selection keeps memory bounded by one chunk.
"""

import json
import re
from collections.abc import Iterable, Iterator

from conversations import selectors
from conversations.models import ChatSession, Message
from conversations.transfer import iso, message_to_record, session_to_record


def iter_json(sessions: Iterable[ChatSession]) -> Iterator[str]:
    """A JSON array of sessions, each with its "messages" in seq order."""
    yield "["
    for i, session in enumerate(sessions):
        # The same record as export_sessions' JSON Lines, so both exports read alike.
        header = json.dumps(session_to_record(session), ensure_ascii=False)
        # Open the header object and splice the messages array in before its closing brace.
        yield ("," if i else "") + header[:-1] + ', "messages": ['
        for j, message in enumerate(selectors.iter_transcript(session=session)):
            yield ("," if j else "") + json.dumps(message_to_record(message), ensure_ascii=False)
        yield "]}"
    yield "]\n"


# Line breaks as CommonMark and common renderers see them, and the other control characters.
_BREAKS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# CommonMark lets a backslash escape any ASCII punctuation, and an escaped one is only text.
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def _text(value: object) -> str:
    """A user-controlled value as inline Markdown text: one line, every ASCII punctuation
    escaped, so it cannot open a heading, a list, a link, emphasis or raw HTML."""
    return _PUNCTUATION.sub(r"\\\1", _BREAKS.sub(" ", str(value)))


def _code(value: object) -> str:
    """A user-controlled value as an inline code span: one line, delimited by a backtick run
    longer than any inside it (code spans interpret nothing else, HTML included)."""
    text = _BREAKS.sub(" ", str(value))
    ticks = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _longest_backtick_run(text: str) -> int:
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return longest


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in `text`, so content cannot break out of it."""
    return "`" * max(3, _longest_backtick_run(text) + 1)


def _md_block(text: str, lang: str = "") -> str:
    fence = _fence(text)
    return f"{fence}{lang}\n{text}\n{fence}\n"


def _reply_line(message: Message) -> str:
    parts = []
    if message.model:
        parts.append(f"model {_code(message.model)}")
    if message.usage:
        usage = message.usage
        parts.append(
            "usage {p} prompt + {c} completion = {t} tokens".format(
                p=_text(usage.get("prompt_tokens", "?")),
                c=_text(usage.get("completion_tokens", "?")),
                t=_text(usage.get("total_tokens", "?")),
            )
        )
    if message.latency_ms is not None:
        parts.append(f"{message.latency_ms} ms")
    if message.finish_reason:
        parts.append(f"finish {_code(message.finish_reason)}")
    return "; ".join(parts)


def iter_markdown(sessions: Iterable[ChatSession]) -> Iterator[str]:
    """A Markdown document: one section per session, one sub-section per message.

    Content goes in fenced blocks verbatim, names and titles are escaped inline text, ids
    and model names code spans: whatever a user wrote is shown as written and cannot turn
    into headings, links or HTML of the export itself.
    """
    for i, session in enumerate(sessions):
        if i:
            yield "\n---\n\n"
        yield f"# {_text(session.title) if session.title else 'Untitled session'}\n\n"
        yield f"- session: `{session.pk}`\n- user: {_text(session.user.get_username())}\n"
        model = _code(session.model) if session.model else "(default)"
        yield f"- model: {model}\n- archived: {session.archived}\n"
        yield f"- messages: {session.message_count}, tokens: {session.total_tokens}\n"
        if session.forked_at_seq is not None:
            parent = (
                f"`{session.forked_from_id}`" if session.forked_from_id else "a deleted session"
            )
            yield f"- forked from: {parent}, after its message #{session.forked_at_seq}\n"
        yield f"- last activity: {iso(session.last_message_at) or '-'}\n\n"
        if session.system_prompt:
            yield "## System prompt\n\n" + _md_block(session.system_prompt) + "\n"
        if session.metadata:
            yield "## Metadata\n\n" + _md_block(json.dumps(session.metadata, indent=2), "json")
            yield "\n"
        for message in selectors.iter_transcript(session=session):
            name = f" ({_text(message.name)})" if message.name else ""
            yield (
                f"## #{message.seq} {message.role}{name} · {iso(message.created_at)}"
                f" · {message.token_count} tokens\n\n"
            )
            reply = _reply_line(message)
            if message.versions > 1:
                times = message.versions - 1
                regenerated = f"regenerated {times} time{'s' if times > 1 else ''}"
                reply = f"{reply}; {regenerated}" if reply else regenerated
            if reply:
                yield f"_{reply}_\n\n"
            if message.tool_call_id:
                yield f"Answers tool call {_code(message.tool_call_id)}.\n\n"
            yield _md_block(message.content)
            if message.tool_calls:
                calls = json.dumps(message.tool_calls, indent=2)
                yield "\nTool calls:\n\n" + _md_block(calls, "json")
            yield "\n"
