"""Reading the JSON Lines session format (conversations/transfer.py writes and imports it).

This is the import's parse layer, what a view is to the API: it validates each line with the
API's own serializers (SessionRecordSerializer for the session's columns, MessageRecordSerializer
for each message), so a rule is written once, and hands the transfer service validated records.
The service knows no serializer (docs/development.md, "Layout").
"""

import json
from collections.abc import Iterable, Iterator
from typing import Any

from conversations.models import ChatSession, Message
from conversations.serializers import (
    MessageRecordSerializer,
    MessageVersionRecordSerializer,
    SessionRecordSerializer,
    error_lines,
)
from conversations.transfer import (
    EARLIER_VERSIONS,
    MESSAGE_FIELDS,
    SESSION_FIELDS,
    VERSION_FIELDS,
    ParsedLine,
    SessionRecord,
)


class RecordError(ValueError):
    """A line that is not a valid session record; the message names the offending field."""


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _default(model, name: str) -> Any:
    # What the line leaves out gets the column's default, as a row made by the API would.
    return model._meta.get_field(name).get_default()


def parse_record(line: str) -> SessionRecord:
    """Parse and validate one line; `RecordError` lists every problem found."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(data, dict):
        raise RecordError(f"expected a JSON object, got {_kind(data)}")

    errors: list[str] = []
    session = SessionRecordSerializer(data={k: v for k, v in data.items() if k != "messages"})
    values = session.validated_data if session.is_valid() else {}
    errors.extend(error_lines(session.errors))
    raw_messages = data.get("messages")
    if raw_messages is None:
        errors.append("messages: missing")
        raw_messages = []
    elif not isinstance(raw_messages, list):
        errors.append(f"messages: expected a list, got {_kind(raw_messages)}")
        raw_messages = []

    messages: list[dict[str, Any]] = []
    seen_seqs: set[int] = set()
    seen_ids: set[int] = set()
    previous_seq = 0
    for index, raw in enumerate(raw_messages):
        path = f"messages[{index}]."
        if not isinstance(raw, dict):
            errors.append(f"messages[{index}]: expected an object, got {_kind(raw)}")
            continue
        errors.extend(
            f"{path}{name}: Unknown field."
            for name in sorted(set(raw) - {*MESSAGE_FIELDS, EARLIER_VERSIONS})
        )
        record = MessageRecordSerializer(data=raw)
        if not record.is_valid():
            errors.extend(f"{path}{line}" for line in error_lines(record.errors))
            continue
        message = record.validated_data
        seq, message_id = message["seq"], message["id"]
        if seq in seen_seqs:
            errors.append(f"{path}seq: duplicate seq {seq}")
        elif seq < previous_seq:
            errors.append(
                f"{path}seq: seq {seq} after {previous_seq}: messages must be in seq order"
            )
        seen_seqs.add(seq)
        previous_seq = max(previous_seq, seq)
        if message_id is not None:
            if message_id in seen_ids:
                errors.append(f"{path}id: duplicate message id {message_id}")
            seen_ids.add(message_id)
        raw_versions = raw.get(EARLIER_VERSIONS, [])
        earlier = _parse_versions(raw_versions, f"{path}{EARLIER_VERSIONS}", errors)
        given = len(raw_versions) if isinstance(raw_versions, list) else 0
        if given != message["versions"] - 1:
            errors.append(
                f"{path}{EARLIER_VERSIONS}: versions is {message['versions']}, so "
                f"{message['versions'] - 1} earlier versions are due, not {given}"
            )
        messages.append(
            {
                name: message[name] if name in message else _default(Message, name)
                for name in MESSAGE_FIELDS
            }
            | {EARLIER_VERSIONS: earlier}
        )
    if errors:
        raise RecordError("; ".join(errors))

    columns = {
        name: values[name] if name in values else _default(ChatSession, name)
        for name in SESSION_FIELDS
        if name not in ("id", "user")
    }
    columns["forked_from_id"] = columns.pop("forked_from")
    # The session's own counters prove its message list complete: a line cut short or edited
    # by hand shows up here. A seq gap is accepted when the counters agree (a message deleted
    # at the source leaves one; the API itself never does).
    count, tokens = len(messages), sum(msg["token_count"] for msg in messages)
    if values["message_count"] is not None and values["message_count"] != count:
        errors.append(
            f"message_count: {values['message_count']}, but the line has {count} messages"
        )
    if values["total_tokens"] is not None and values["total_tokens"] != tokens:
        errors.append(
            f"total_tokens: {values['total_tokens']}, but the messages add up to {tokens}"
        )
    if values["last_seq"] is not None and values["last_seq"] < previous_seq:
        errors.append(f"last_seq: {values['last_seq']}, but a message has seq {previous_seq}")
    if errors:
        raise RecordError("; ".join(errors))
    columns["message_count"] = count
    columns["total_tokens"] = tokens
    columns["last_seq"] = previous_seq if values["last_seq"] is None else values["last_seq"]
    if columns["last_message_at"] is None and messages:
        columns["last_message_at"] = max(msg["created_at"] for msg in messages)
    return SessionRecord(
        id=values["id"], username=values["user"], columns=columns, messages=messages
    )


def _parse_versions(raw: Any, where: str, errors: list[str]) -> list[dict[str, Any]]:
    """A message's earlier versions, numbered 1, 2, ... in order."""
    if not isinstance(raw, list):
        errors.append(f"{where}: expected a list, got {_kind(raw)}")
        return []
    parsed = []
    for index, item in enumerate(raw):
        path = f"{where}[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{path}: expected an object, got {_kind(item)}")
            continue
        errors.extend(
            f"{path}.{name}: Unknown field." for name in sorted(set(item) - set(VERSION_FIELDS))
        )
        # The numbering is checked whatever else is wrong with the version.
        number = item.get("number")
        if type(number) is int and number != index + 1:
            errors.append(f"{path}.number: {number}, but it is version {index + 1} of the list")
        version = MessageVersionRecordSerializer(data=item)
        if not version.is_valid():
            errors.extend(f"{path}.{line}" for line in error_lines(version.errors))
            continue
        values = dict(version.validated_data)
        parsed.append({name: values[name] for name in VERSION_FIELDS})
    return parsed


def parse_lines(lines: Iterable[bytes]) -> Iterator[ParsedLine]:
    """Each non-blank line (numbered from 1) as a validated record or the reason it is not one."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            yield ParsedLine(number=number, record=parse_record(raw.decode("utf-8")))
        except UnicodeDecodeError:
            yield ParsedLine(number=number, error="not UTF-8")
        except RecordError as exc:
            yield ParsedLine(number=number, error=str(exc))
