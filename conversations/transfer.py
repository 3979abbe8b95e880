"""The JSON Lines session format: export (a streaming read) and import (validated writes).

One line is one session with all its columns and its messages inside, in seq order. Field
names are the model's column names (docs/commands.md); `user` is the owner's username.
Timestamps are ISO 8601 with offset and microseconds, so export -> import is lossless.

Memory stays flat whatever the volume: sessions are read with a chunked iterator, each
session's messages in keyset batches by seq, and every message is written as soon as it is
read — a line is never assembled in memory.
"""

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from django.contrib.auth import get_user_model
from django.core.management.color import no_style
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, transaction
from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError

from chatengine.events import log_event
from conversations import fields as message_fields
from conversations.models import VERSIONED_FIELDS, ChatSession, Message, MessageVersion
from conversations.serializers import AwareDateTimeField, MessageRecordSerializer, error_lines

SESSION_FIELDS = (
    "id",
    "user",
    "title",
    "system_prompt",
    "model",
    "metadata",
    "archived",
    "forked_from",
    "forked_at_seq",
    "message_count",
    "total_tokens",
    "last_message_at",
    "last_seq",
    "created_at",
    "updated_at",
)
# Declared in conversations/fields.py with the API and admin lists.
MESSAGE_FIELDS = message_fields.export_names()
# A regenerated message (versions > 1) also carries the answers it replaced, oldest first:
# "earlier_versions": [{"number": 1, <VERSIONED_FIELDS>}, ...].
EARLIER_VERSIONS = "earlier_versions"
VERSION_FIELDS = ("number", *VERSIONED_FIELDS)

EXPORT_SESSION_CHUNK = 200
EXPORT_MESSAGE_BATCH = 1000


# --- Export ------------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def session_to_record(session: ChatSession) -> dict[str, Any]:
    """The session's line without its messages (`user` as username, UUID and dates as text)."""
    return {
        "id": str(session.pk),
        "user": session.user.get_username(),
        "title": session.title,
        "system_prompt": session.system_prompt,
        "model": session.model,
        "metadata": session.metadata,
        "archived": session.archived,
        "forked_from": str(session.forked_from_id) if session.forked_from_id else None,
        "forked_at_seq": session.forked_at_seq,
        "message_count": session.message_count,
        "total_tokens": session.total_tokens,
        "last_message_at": iso(session.last_message_at),
        "last_seq": session.last_seq,
        "created_at": iso(session.created_at),
        "updated_at": iso(session.updated_at),
    }


_EXPORTED = [f for f in message_fields.MESSAGE_FIELDS if f.export]


def message_to_record(message: Message) -> dict[str, Any]:
    record = {}
    for f in _EXPORTED:
        value = getattr(message, f.attr)
        if f.kind == "datetime":
            value = iso(value)
        elif f.kind == "uuid":
            value = str(value)
        record[f.name] = value
    if message.versions > 1:
        # A query per regenerated message only: most messages never were.
        record[EARLIER_VERSIONS] = [
            {name: getattr(version, name) for name in VERSION_FIELDS}
            | {"created_at": iso(version.created_at)}
            # From the database the message came from (a replica, for an export), so the
            # versions match its count.
            for version in MessageVersion.objects.using(message._state.db or DEFAULT_DB_ALIAS)
            .filter(message=message)
            .order_by("number")
        ]
    return record


def sessions_for_export(
    *,
    usernames: Iterable[str] = (),
    session_ids: Iterable[uuid.UUID] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> QuerySet[ChatSession]:
    """Sessions matching the export filters, oldest first, read from the database `using`
    (export_sessions passes the replica's alias when one is usable: chatengine/replica.py).

    `since`/`until` bound the last activity (`updated_at`: bumped by every message and every
    edit), `since` inclusive and `until` exclusive, so consecutive windows never overlap.
    """
    qs = ChatSession.objects.using(using).select_related("user")
    usernames = list(usernames)
    if usernames:
        qs = qs.filter(**{f"user__{get_user_model().USERNAME_FIELD}__in": usernames})
    session_ids = list(session_ids)
    if session_ids:
        qs = qs.filter(pk__in=session_ids)
    if since is not None:
        qs = qs.filter(updated_at__gte=since)
    if until is not None:
        qs = qs.filter(updated_at__lt=until)
    return qs.order_by("created_at", "pk")


def iter_session_messages(
    *, session_id: uuid.UUID, batch_size: int = EXPORT_MESSAGE_BATCH, using: str = DEFAULT_DB_ALIAS
) -> Iterator[Message]:
    """A session's messages by seq, read in keyset batches of `batch_size` (never OFFSET)."""
    after = 0
    messages = Message.objects.using(using)
    while True:
        batch = list(
            messages.filter(session_id=session_id, seq__gt=after).order_by("seq")[:batch_size]
        )
        yield from batch
        if len(batch) < batch_size:
            return
        after = batch[-1].seq


@dataclass
class ExportResult:
    sessions: int = 0
    messages: int = 0


def export_sessions(
    *,
    sessions: QuerySet[ChatSession],
    out: IO[str],
    message_batch_size: int = EXPORT_MESSAGE_BATCH,
    session_chunk_size: int = EXPORT_SESSION_CHUNK,
    on_session: Callable[[ExportResult], None] | None = None,
) -> ExportResult:
    """Write `sessions` to `out` as JSON Lines, one session per line, messages inside."""
    result = ExportResult()
    for session in sessions.iterator(chunk_size=session_chunk_size):
        head = json.dumps(session_to_record(session), ensure_ascii=False)
        # The record is a non-empty object: reopen it to stream "messages" in as the last key.
        out.write(head[:-1] + ', "messages": [')
        for index, message in enumerate(
            iter_session_messages(
                session_id=session.pk, batch_size=message_batch_size, using=sessions.db
            )
        ):
            if index:
                out.write(", ")
            out.write(json.dumps(message_to_record(message), ensure_ascii=False))
            result.messages += 1
        out.write("]}\n")
        result.sessions += 1
        if on_session is not None:
            on_session(result)
    return result


# --- Import: validation ------------------------------------------------------------------


class RecordError(ValueError):
    """A line that is not a valid session record; the message names the offending field."""


_MISSING = object()


def _column_default(name: str) -> Any:
    return Message._meta.get_field(name).get_default()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    """Reads typed fields out of one JSON object, collecting every problem it finds."""

    def __init__(self, data: dict[str, Any], path: str, errors: list[str]):
        self.data, self.path, self.errors = data, path, errors

    def fail(self, name: str, problem: str) -> None:
        self.errors.append(f"{self.path}{name}: {problem}")

    def get(self, name: str, kind: str, *, required: bool = False, default: Any = None, **rule):
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            if required:
                self.fail(name, "missing")
            return default
        if value is None and rule.get("nullable"):
            return None
        ok = {
            "str": lambda v: isinstance(v, str),
            "int": _is_int,
            "bool": lambda v: isinstance(v, bool),
            "object": lambda v: isinstance(v, dict),
            "list": lambda v: isinstance(v, list),
            "json": lambda v: isinstance(v, dict | list),
            "datetime": lambda v: isinstance(v, str),
        }[kind](value)
        if not ok:
            self.fail(name, f"expected {_EXPECTED[kind]}, got {_kind(value)}")
            return default
        if kind == "str" and "max_length" in rule and len(value) > rule["max_length"]:
            self.fail(name, f"longer than {rule['max_length']} characters")
            return default
        if kind == "int" and value < rule.get("minimum", 0):
            self.fail(name, f"must be >= {rule.get('minimum', 0)}")
            return default
        if kind == "datetime":
            try:
                return AwareDateTimeField().run_validation(value)
            except ValidationError as exc:
                self.fail(name, "; ".join(error_lines(exc.detail)))
                return default
        return value

    def reject_unknown(self, known: Iterable[str]) -> None:
        for name in sorted(set(self.data) - set(known)):
            self.fail(name, "unknown field")


_EXPECTED = {
    "str": "a string",
    "int": "an integer",
    "bool": "a boolean",
    "object": "an object",
    "list": "a list",
    "json": "an object or a list",
    "datetime": "an ISO 8601 string",
}


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


@dataclass
class SessionRecord:
    """One validated line: the session's columns, its owner's username and its messages."""

    id: uuid.UUID
    username: str
    columns: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)


def parse_record(line: str) -> SessionRecord:
    """Parse and validate one line; `RecordError` lists every problem found."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(data, dict):
        raise RecordError(f"expected a JSON object, got {_kind(data)}")

    errors: list[str] = []
    c = _Checker(data, "", errors)
    c.reject_unknown((*SESSION_FIELDS, "messages"))
    raw_id = c.get("id", "str", required=True)
    session_id = None
    if raw_id is not None:
        try:
            session_id = uuid.UUID(raw_id)
        except ValueError:
            c.fail("id", f"not a UUID: {raw_id[:40]!r}")
    username = c.get("user", "str", required=True, max_length=150)
    if username == "":
        c.fail("user", "empty")
    raw_parent = c.get("forked_from", "str", nullable=True)
    forked_from = None
    if raw_parent is not None:
        try:
            forked_from = uuid.UUID(raw_parent)
        except ValueError:
            c.fail("forked_from", f"not a UUID: {raw_parent[:40]!r}")
    columns = {
        "title": c.get("title", "str", default="", max_length=255),
        "system_prompt": c.get("system_prompt", "str", default=""),
        "model": c.get("model", "str", default="", max_length=128),
        "metadata": c.get("metadata", "object", default={}),
        "archived": c.get("archived", "bool", default=False),
        "forked_from_id": forked_from,
        "forked_at_seq": c.get("forked_at_seq", "int", nullable=True),
        "last_message_at": c.get("last_message_at", "datetime", nullable=True),
        "created_at": c.get("created_at", "datetime", required=True),
        "updated_at": c.get("updated_at", "datetime", required=True),
    }
    message_count = c.get("message_count", "int")
    total_tokens = c.get("total_tokens", "int")
    last_seq = c.get("last_seq", "int")
    raw_messages = c.get("messages", "list", required=True, default=[])

    messages: list[dict[str, Any]] = []
    seen_seqs: set[int] = set()
    seen_ids: set[int] = set()
    previous_seq = 0
    for index, raw in enumerate(raw_messages):
        path = f"messages[{index}]."
        if not isinstance(raw, dict):
            errors.append(f"messages[{index}]: expected an object, got {_kind(raw)}")
            continue
        m = _Checker(raw, path, errors)
        m.reject_unknown((*MESSAGE_FIELDS, EARLIER_VERSIONS))
        record = MessageRecordSerializer(data=raw)
        if not record.is_valid():
            errors.extend(f"{path}{line}" for line in error_lines(record.errors))
            continue
        values = record.validated_data
        seq, message_id = values["seq"], values["id"]
        if seq in seen_seqs:
            m.fail("seq", f"duplicate seq {seq}")
        elif seq < previous_seq:
            m.fail("seq", f"seq {seq} after {previous_seq}: messages must be in seq order")
        seen_seqs.add(seq)
        previous_seq = max(previous_seq, seq)
        if message_id is not None:
            if message_id in seen_ids:
                m.fail("id", f"duplicate message id {message_id}")
            seen_ids.add(message_id)
        # What the line leaves out gets the column's default, as an appended message would.
        messages.append(
            {
                name: values[name] if name in values else _column_default(name)
                for name in MESSAGE_FIELDS
            }
            | {EARLIER_VERSIONS: _parse_versions(m, path, errors)}
        )
        versions = messages[-1]["versions"] or 1
        if len(messages[-1][EARLIER_VERSIONS]) != versions - 1:
            m.fail(
                EARLIER_VERSIONS,
                f"versions is {versions}, so {versions - 1} earlier versions are due, "
                f"not {len(messages[-1][EARLIER_VERSIONS])}",
            )

    # The session's own counters prove its message list complete: a line cut short or edited
    # by hand shows up here. A seq gap is accepted when the counters agree (a message deleted
    # at the source leaves one; the API itself never does).
    if not errors:
        count, tokens = len(messages), sum(msg["token_count"] for msg in messages)
        if message_count is not None and message_count != count:
            errors.append(f"message_count: {message_count}, but the line has {count} messages")
        if total_tokens is not None and total_tokens != tokens:
            errors.append(f"total_tokens: {total_tokens}, but the messages add up to {tokens}")
        if last_seq is not None and last_seq < previous_seq:
            errors.append(f"last_seq: {last_seq}, but a message has seq {previous_seq}")
        columns["message_count"] = count
        columns["total_tokens"] = tokens
        columns["last_seq"] = previous_seq if last_seq is None else last_seq
        if columns["last_message_at"] is None and messages:
            columns["last_message_at"] = max(msg["created_at"] for msg in messages)

    if errors:
        raise RecordError("; ".join(errors))
    return SessionRecord(id=session_id, username=username, columns=columns, messages=messages)


def _parse_versions(m: _Checker, path: str, errors: list[str]) -> list[dict[str, Any]]:
    """A message's earlier versions, numbered 1, 2, ... in order."""
    parsed = []
    for index, raw in enumerate(m.get(EARLIER_VERSIONS, "list", default=[])):
        where = f"{path}{EARLIER_VERSIONS}[{index}]"
        if not isinstance(raw, dict):
            errors.append(f"{where}: expected an object, got {_kind(raw)}")
            continue
        v = _Checker(raw, f"{where}.", errors)
        v.reject_unknown(VERSION_FIELDS)
        number = v.get("number", "int", required=True, minimum=1)
        if number is not None and number != index + 1:
            v.fail("number", f"{number}, but it is version {index + 1} of the list")
        parsed.append(
            {
                "number": number,
                "content": v.get("content", "str", required=True),
                "metadata": v.get("metadata", "object", default={}),
                "token_count": v.get("token_count", "int", default=0),
                "tool_calls": v.get("tool_calls", "list", nullable=True),
                "model": v.get("model", "str", nullable=True, max_length=128),
                "usage": v.get("usage", "object", nullable=True),
                "finish_reason": v.get("finish_reason", "str", nullable=True, max_length=32),
                "latency_ms": v.get("latency_ms", "int", nullable=True),
                "context": v.get("context", "json", nullable=True),
                "created_at": v.get("created_at", "datetime", required=True),
            }
        )
    return parsed


# --- Import: writes ----------------------------------------------------------------------


def keep_updated_at(sessions: QuerySet[ChatSession], value: Any) -> None:
    """Give freshly inserted sessions the `updated_at` they were given, not the insert time.

    `auto_now` stamps every insert with now (created_at is a plain default and keeps its
    value); an UPDATE through the queryset does not run it, so this one statement restores
    the given value. `value` may be an expression (`Coalesce(...)`) for many rows at once.
    """
    sessions.update(updated_at=value)


def reset_message_id_sequence() -> None:
    """Move the message id sequence past imported ids, so the next append gets a free id.

    PostgreSQL's identity sequence does not advance on explicit ids; SQLite needs nothing.
    """
    statements = connection.ops.sequence_reset_sql(no_style(), [Message])
    if statements:
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)


@dataclass
class LineOutcome:
    line: int
    status: str  # "created", "skipped", "error"
    session_id: uuid.UUID | None = None
    messages: int = 0
    detail: str = ""
    created_user: str | None = None
    reassigned_ids: bool = False


@dataclass
class ImportResult:
    created: int = 0
    skipped: int = 0
    messages: int = 0
    errors: list[LineOutcome] = field(default_factory=list)
    created_users: list[str] = field(default_factory=list)
    reassigned: int = 0


def import_session(
    *, record: SessionRecord, create_users: bool = True, dry_run: bool = False
) -> LineOutcome:
    """Create one validated session and its messages in one transaction.

    Idempotent: a session whose id exists is skipped, whatever its content. An unknown owner
    is created without a usable password (`create_users`) or is an error. Message ids are
    kept unless one is taken in this database; then the session's messages get new ids.
    Nothing is written with `dry_run`; the outcome says what would have been.
    """
    User = get_user_model()
    outcome = LineOutcome(line=0, status="created", session_id=record.id)
    with transaction.atomic():
        if ChatSession.objects.filter(pk=record.id).exists():
            outcome.status = "skipped"
            return outcome
        user = User.objects.filter(**{User.USERNAME_FIELD: record.username}).first()
        if user is None:
            if not create_users:
                outcome.status = "error"
                outcome.detail = f"user: no user named {record.username!r}"
                return outcome
            outcome.created_user = record.username
            if not dry_run:
                user = User.objects.create_user(**{User.USERNAME_FIELD: record.username})
        ids = [m["id"] for m in record.messages if m["id"] is not None]
        keep_ids = not ids or not Message.objects.filter(pk__in=ids).exists()
        outcome.reassigned_ids = not keep_ids
        outcome.messages = len(record.messages)
        if dry_run:
            return outcome
        columns = dict(record.columns)
        parent = columns["forked_from_id"]
        if parent is not None and not ChatSession.objects.filter(pk=parent).exists():
            # Its parent is not here (not imported, or deleted): the fork stands alone, as a
            # fork whose parent was deleted does; forked_at_seq still says where it began.
            columns["forked_from_id"] = None
        session = ChatSession.objects.create(id=record.id, user=user, **columns)
        keep_updated_at(ChatSession.objects.filter(pk=session.pk), record.columns["updated_at"])
        rows = Message.objects.bulk_create(
            [
                Message(
                    session=session,
                    **{
                        name: (value if keep_ids or name != "id" else None)
                        for name, value in m.items()
                        if name != EARLIER_VERSIONS
                    },
                )
                for m in record.messages
            ],
            batch_size=1000,
        )
        MessageVersion.objects.bulk_create(
            [
                MessageVersion(message=row, session=session, **version)
                for row, m in zip(rows, record.messages, strict=True)
                for version in m[EARLIER_VERSIONS]
            ],
            batch_size=1000,
        )
    return outcome


def import_sessions(
    *,
    lines: Iterable[bytes],
    create_users: bool = True,
    dry_run: bool = False,
    on_line: Callable[[LineOutcome], None] | None = None,
) -> ImportResult:
    """Import every valid line; report every bad one (1-based line numbers) and go on.

    Each session commits on its own, so a bad line costs only that line, never half a session.
    """
    result = ImportResult()
    seen: set[uuid.UUID] = set()
    try:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = parse_record(raw.decode("utf-8"))
            except UnicodeDecodeError:
                outcome = LineOutcome(line=number, status="error", detail="not UTF-8")
            except RecordError as exc:
                outcome = LineOutcome(line=number, status="error", detail=str(exc))
            else:
                if dry_run and record.id in seen:
                    outcome = LineOutcome(line=number, status="skipped", session_id=record.id)
                else:
                    try:
                        outcome = import_session(
                            record=record, create_users=create_users, dry_run=dry_run
                        )
                    except DatabaseError as exc:
                        outcome = LineOutcome(
                            line=number,
                            status="error",
                            session_id=record.id,
                            detail=f"database refused the session: {exc}".strip(),
                        )
                    outcome.line = number
                seen.add(record.id)
            _tally(result, outcome)
            if on_line is not None:
                on_line(outcome)
    finally:
        if result.created and not dry_run:
            reset_message_id_sequence()
    log_event(
        "sessions.imported",
        sessions_created=result.created,
        sessions_skipped=result.skipped,
        messages=result.messages,
        bad_lines=len(result.errors),
        dry_run=dry_run,
    )
    return result


def _tally(result: ImportResult, outcome: LineOutcome) -> None:
    if outcome.status == "error":
        result.errors.append(outcome)
        return
    if outcome.status == "skipped":
        result.skipped += 1
        return
    result.created += 1
    result.messages += outcome.messages
    result.reassigned += outcome.reassigned_ids
    if outcome.created_user and outcome.created_user not in result.created_users:
        result.created_users.append(outcome.created_user)
