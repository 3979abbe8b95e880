"""Session transcripts as JSON or Markdown, produced piece by piece for streaming responses.

Each function yields strings; messages are read in chunks (`selectors.iter_transcript`), so
exporting a million-message selection keeps memory bounded by one chunk.
"""

import json
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


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in `text`, so content cannot break out of it."""
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def _md_block(text: str, lang: str = "") -> str:
    fence = _fence(text)
    return f"{fence}{lang}\n{text}\n{fence}\n"


def _reply_line(message: Message) -> str:
    parts = []
    if message.model:
        parts.append(f"model `{message.model}`")
    if message.usage:
        usage = message.usage
        parts.append(
            "usage {p} prompt + {c} completion = {t} tokens".format(
                p=usage.get("prompt_tokens", "?"),
                c=usage.get("completion_tokens", "?"),
                t=usage.get("total_tokens", "?"),
            )
        )
    if message.latency_ms is not None:
        parts.append(f"{message.latency_ms} ms")
    if message.finish_reason:
        parts.append(f"finish `{message.finish_reason}`")
    return "; ".join(parts)


def iter_markdown(sessions: Iterable[ChatSession]) -> Iterator[str]:
    """A Markdown document: one section per session, one sub-section per message.

    Content goes in fenced blocks verbatim, so user text is shown as written and cannot turn
    into headings or links of the export itself.
    """
    for i, session in enumerate(sessions):
        if i:
            yield "\n---\n\n"
        yield f"# {session.title or 'Untitled session'}\n\n"
        yield f"- session: `{session.pk}`\n- user: {session.user.get_username()}\n"
        yield f"- model: {session.model or '(default)'}\n- archived: {session.archived}\n"
        yield f"- messages: {session.message_count}, tokens: {session.total_tokens}\n"
        yield f"- last activity: {iso(session.last_message_at) or '-'}\n\n"
        if session.system_prompt:
            yield "## System prompt\n\n" + _md_block(session.system_prompt) + "\n"
        if session.metadata:
            yield "## Metadata\n\n" + _md_block(json.dumps(session.metadata, indent=2), "json")
            yield "\n"
        for message in selectors.iter_transcript(session=session):
            name = f" ({message.name})" if message.name else ""
            yield (
                f"## #{message.seq} {message.role}{name} · {iso(message.created_at)}"
                f" · {message.token_count} tokens\n\n"
            )
            reply = _reply_line(message)
            if reply:
                yield f"_{reply}_\n\n"
            if message.tool_call_id:
                yield f"Answers tool call `{message.tool_call_id}`.\n\n"
            yield _md_block(message.content)
            if message.tool_calls:
                calls = json.dumps(message.tool_calls, indent=2)
                yield "\nTool calls:\n\n" + _md_block(calls, "json")
            yield "\n"
