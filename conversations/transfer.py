"""The JSON Lines session format: export (a streaming read) and import (the writes of lines
that conversations/import_format.py validated).

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

from chatengine.events import log_event
from conversations import fields as message_fields
from conversations.models import VERSIONED_FIELDS, ChatSession, Message, MessageVersion

# Both declared in conversations/fields.py with the API and admin lists.
SESSION_FIELDS = message_fields.session_export_names()
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
    record = {}
    for name in SESSION_FIELDS:
        if name == "user":
            value = session.user.get_username()
        elif name == "forked_from":
            value = session.forked_from_id
        else:
            value = getattr(session, name)
        if isinstance(value, datetime):
            value = iso(value)
        elif isinstance(value, uuid.UUID):
            value = str(value)
        record[name] = value
    return record


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


# --- Import ------------------------------------------------------------------------------


@dataclass
class SessionRecord:
    """One validated line: the session's columns, its owner's username and its messages."""

    id: uuid.UUID
    username: str
    columns: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ParsedLine:
    """One line of an import file, read by conversations/import_format.py: its 1-based number
    and either the validated record or why it is not one."""

    number: int
    record: SessionRecord | None = None
    error: str = ""


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
    lines: Iterable[ParsedLine],
    create_users: bool = True,
    dry_run: bool = False,
    on_line: Callable[[LineOutcome], None] | None = None,
) -> ImportResult:
    """Import every valid line; report every bad one (by its line number) and go on.

    Each session commits on its own, so a bad line costs only that line, never half a session.
    """
    result = ImportResult()
    seen: set[uuid.UUID] = set()
    try:
        for line in lines:
            record = line.record
            if record is None:
                outcome = LineOutcome(line=line.number, status="error", detail=line.error)
            else:
                if dry_run and record.id in seen:
                    outcome = LineOutcome(line=line.number, status="skipped", session_id=record.id)
                else:
                    try:
                        outcome = import_session(
                            record=record, create_users=create_users, dry_run=dry_run
                        )
                    except DatabaseError as exc:
                        outcome = LineOutcome(
                            line=line.number,
                            status="error",
                            session_id=record.id,
                            detail=f"database refused the session: {exc}".strip(),
                        )
                    outcome.line = line.number
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
