"""Writes of chat sessions and messages. Views and commands call these, never the ORM."""

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Field, QuerySet, Sum
from django.utils import timezone

from chatengine.events import log_event
from chatengine.exceptions import Conflict
from chatengine.metrics import MESSAGES_APPENDED
from conversations import cache as history_cache
from conversations.cache_encoding import session_stamp
from conversations.models import ChatSession, Message

# Pure token counting (no models, no I/O beyond loading an encoding file once): counting at
# write time here means every path that appends (API, replies, commands, factories) stores
# the same exact count, computed once.
from llm.tokens import counter_for_model
from llm.types import ToolCall

_SESSION_EDITABLE_FIELDS = (
    "title",
    "system_prompt",
    "model",
    "metadata",
    "archived",
    "context_strategy",
)


def create_session(
    *,
    user: AbstractBaseUser,
    title: str = "",
    system_prompt: str = "",
    model: str = "",
    metadata: dict[str, Any] | None = None,
    context_strategy: str | None = None,
) -> ChatSession:
    """Create an empty chat session owned by `user` (`context_strategy` None: the server's
    LLM_CONTEXT_STRATEGY)."""
    session = ChatSession.objects.create(
        user=user,
        title=title,
        title_source=ChatSession.TitleSource.USER if title else None,
        system_prompt=system_prompt,
        model=model,
        metadata=metadata or {},
        context_strategy=context_strategy or settings.LLM_CONTEXT_STRATEGY,
    )
    transaction.on_commit(
        lambda: log_event(
            "session.created", session_id=str(session.pk), user_id=user.pk, model=model
        )
    )
    return session


def update_session(*, session: ChatSession, **changes: Any) -> ChatSession:
    """Change a session's editable fields (title, system_prompt, model, metadata, archived,
    context_strategy)."""
    unknown = set(changes) - set(_SESSION_EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"update_session() got non-editable fields: {sorted(unknown)}")
    if "title" in changes:
        changes["title_source"] = ChatSession.TitleSource.USER
    for field, value in changes.items():
        setattr(session, field, value)
    session.save(update_fields=[*changes, "updated_at"])
    # The new updated_at already makes the cached tail stale; dropping it just frees it early.
    transaction.on_commit(partial(history_cache.invalidate, session_id=session.pk))
    return session


def set_auto_title(*, session: ChatSession, title: str) -> bool:
    """Give the session an automatic title unless it has one; whether it did.

    One conditional UPDATE: a title the user set meanwhile (even a blank one) is never
    overwritten. Not activity, so updated_at stays.
    """
    changed = ChatSession.objects.filter(pk=session.pk, title="", title_source=None).update(
        title=title, title_source=ChatSession.TitleSource.AUTO
    )
    if changed:
        session.title, session.title_source = title, ChatSession.TitleSource.AUTO
    return bool(changed)


def delete_session(*, session: ChatSession) -> None:
    """Delete a session and, by cascade, its messages and the idempotency keys claimed on it."""
    delete_sessions(sessions=ChatSession.objects.filter(pk=session.pk))


def delete_message(*, message: Message) -> None:
    """Delete one message, in one transaction with its session's counters and stamp.

    message_count and total_tokens drop by it; last_seq stays, so a seq is never handed out
    twice (the history keeps a gap where it was). The session's history stamp moves, so a
    cached tail still holding the message is never served again, even if dropping it from
    Redis fails; it is dropped once committed. updated_at stays: a deletion is not activity
    (the session list order and prune go by it). A message already gone is not an error.
    """
    # Message.objects.delete() does the counters, the stamp and the cache (models.py), the same
    # for every path that deletes messages.
    _, deleted = Message.objects.filter(pk=message.pk).delete()
    if deleted.get(Message._meta.label):
        transaction.on_commit(
            partial(
                log_event,
                "message.deleted",
                session_id=str(message.session_id),
                seq=message.seq,
                role=message.role,
            )
        )


def set_message_pinned(*, message: Message, pinned: bool) -> Message:
    """Pin a message (sent in every context of the session, like a system message) or unpin it.

    A save of an existing row: it moves the session's history stamp in the same transaction
    (models.py), so a cached tail still saying otherwise is never served.
    """
    if message.pinned != pinned:
        message.pinned = pinned
        message.save(update_fields=["pinned"])
        transaction.on_commit(
            partial(
                log_event,
                "message.pinned" if pinned else "message.unpinned",
                session_id=str(message.session_id),
                seq=message.seq,
            )
        )
    return message


def count_message_tokens(
    *,
    session: ChatSession,
    role: str,
    content: str,
    name: str = "",
    tool_calls: list[dict[str, Any]] | None = None,
    tool_call_id: str = "",
) -> int:
    """A message's token count with its session's model encoding (OpenAI's chat recipe)."""
    counter = counter_for_model(session.model or settings.LLM_MODEL)
    return counter.count_message(
        role=role,
        content=content,
        name=name,
        tool_calls=tuple(ToolCall.from_openai(c) for c in tool_calls or ()),
        tool_call_id=tool_call_id,
    )


def append_message(
    *,
    session: ChatSession,
    role: str,
    content: str,
    name: str = "",
    metadata: dict[str, Any] | None = None,
    token_count: int | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    tool_call_id: str = "",
    pinned: bool = False,
    model: str | None = None,
    usage: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    latency_ms: int | None = None,
    context: dict[str, Any] | None = None,
) -> Message:
    """Append a message at the session's next seq and bump its counters, in one transaction.

    The session row is locked (SELECT ... FOR UPDATE) so concurrent appends to one session
    queue up and get seq n+1, n+2, ... with no gap and no duplicate. Raises `Conflict` on an
    archived session. `tool_calls` and `tool_call_id` are OpenAI's tool calling; `pinned`
    keeps it in every context (llm/context.py); `model`,
    `usage`, `finish_reason`, `latency_ms` and `context` are set only on generated replies.

    `token_count` is counted here, once, unless the caller already counted it (a reply
    counts the new message before storing it, to check that it fits).
    """
    if token_count is None:
        # Counted before the lock is taken: tokenizing a long message takes milliseconds.
        token_count = count_message_tokens(
            session=session,
            role=role,
            content=content,
            name=name,
            tool_calls=tool_calls,
            tool_call_id=tool_call_id,
        )
    fields = {
        "role": role,
        "content": content,
        "name": name,
        "metadata": metadata or {},
        "token_count": token_count,
        "tool_calls": tool_calls,
        "tool_call_id": tool_call_id,
        "pinned": pinned,
        "model": model,
        "usage": usage,
        "finish_reason": finish_reason,
        "latency_ms": latency_ms,
        "context": context,
    }
    append_row = APPEND_ROW_BY_VENDOR.get(connection.vendor, _append_row_portable)
    message, previous, current = append_row(session=session, fields=fields)
    # Write-through only once committed: a rolled-back append must never reach the cache.
    transaction.on_commit(
        partial(
            history_cache.record_append,
            message=message,
            previous_stamp=session_stamp(previous),
            stamp=session_stamp(current),
        )
    )
    # Keep the caller's instance in step with what was committed.
    for field in _STAMP_FIELDS:
        setattr(session, field, getattr(current, field))
    # Counted and logged once committed: a rolled-back append did not happen.
    transaction.on_commit(lambda: _message_appended(message))
    return message


_SESSION_COUNTERS = ("last_seq", "message_count", "total_tokens", "last_message_at", "updated_at")
# What an append reads to build the cache stamps; it writes only the counters.
_STAMP_FIELDS = (*_SESSION_COUNTERS, "history_changed_at")


@dataclass(frozen=True)
class _Counters:
    """A session row's counters around an append: before (the cache stamp it replaces) and
    after (the stamp it writes, and what the caller's instance is set to)."""

    last_seq: int
    message_count: int
    updated_at: datetime
    history_changed_at: datetime | None  # part of the stamp; an append leaves it as it was
    total_tokens: int | None = None
    last_message_at: datetime | None = None

    @classmethod
    def of(cls, session: ChatSession) -> "_Counters":
        return cls(**{field: getattr(session, field) for field in _STAMP_FIELDS})


@transaction.atomic
def _append_row_portable(
    *, session: ChatSession, fields: dict[str, Any]
) -> tuple[Message, _Counters, _Counters]:
    """The append through the ORM: lock the row, insert, bump the counters (any database)."""
    locked = ChatSession.objects.select_for_update().get(pk=session.pk)
    if locked.archived:
        raise _archived()
    previous = _Counters.of(locked)
    seq = locked.last_seq + 1
    message = Message.objects.create(session=locked, seq=seq, **fields)
    locked.last_seq = seq
    locked.message_count += 1
    locked.total_tokens += fields["token_count"]
    locked.last_message_at = message.created_at
    locked.save(update_fields=list(_SESSION_COUNTERS))
    return message, previous, _Counters.of(locked)


def _append_row_single_statement(
    *, session: ChatSession, fields: dict[str, Any]
) -> tuple[Message, _Counters, _Counters]:
    """The same append as one PostgreSQL statement: one round trip, no BEGIN/COMMIT of its own.

    `locked` takes the row lock (concurrent appends to the session queue here) and reads the
    row as it is once locked; `bumped` moves the counters from those values; `inserted` takes
    the seq `bumped` returned. One statement is one transaction (or part of the caller's), so
    seq stays gapless and unique exactly as with the ORM path; what it saves is five round
    trips and the ORM's query building (bench/: about half of an append's time).

    The message's time is taken once the lock is held (as the ORM path's auto_now_add is),
    and never before the session's last activity: a time taken before waiting for the lock
    would let a later seq carry an earlier created_at and move last_message_at backwards.
    """
    sql, params = _single_statement_sql(session_id=session.pk, fields=fields)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        raise ChatSession.DoesNotExist("ChatSession matching query does not exist.")
    archived, old_seq, old_count, old_updated_at, changed_at, new_tokens, message_id, now = row
    if archived:
        raise _archived()
    previous = _Counters(
        last_seq=old_seq,
        message_count=old_count,
        updated_at=old_updated_at,
        history_changed_at=changed_at,
    )
    current = _Counters(
        last_seq=old_seq + 1,
        message_count=old_count + 1,
        total_tokens=new_tokens,
        last_message_at=now,
        updated_at=now,
        history_changed_at=changed_at,
    )
    message = Message(id=message_id, session=session, seq=old_seq + 1, created_at=now, **fields)
    message._state.adding = False
    message._state.db = connection.alias
    return message, previous, current


def _single_statement_sql(
    *, session_id: uuid.UUID, fields: dict[str, Any]
) -> tuple[str, list[Any]]:
    sql, inserted = _single_statement_template()
    values = [
        field.get_db_prep_save(
            fields[field.attname] if field.attname in fields else field.get_default(), connection
        )
        for field in inserted
    ]
    return sql, [session_id, fields["token_count"], session_id, *values]


@functools.cache
def _single_statement_template() -> tuple[str, list[Field]]:
    inserted = [
        f
        for f in Message._meta.concrete_fields
        if f.attname not in ("id", "session_id", "seq", "created_at")
    ]
    quote = connection.ops.quote_name
    message_table = quote(Message._meta.db_table)
    session_table = quote(ChatSession._meta.db_table)
    columns = ", ".join(quote(f.column) for f in inserted)
    placeholders = ", ".join(["%s"] * len(inserted))
    sql = f"""
        WITH locked AS (
            SELECT id, archived, last_seq, message_count, total_tokens, updated_at,
                   last_message_at, history_changed_at
            FROM {session_table} WHERE id = %s FOR UPDATE
        ), bumped AS (
            UPDATE {session_table} AS s
            SET last_seq = locked.last_seq + 1,
                message_count = locked.message_count + 1,
                total_tokens = locked.total_tokens + %s,
                last_message_at = moment.at,
                updated_at = moment.at
            FROM locked,
                 LATERAL (SELECT GREATEST(clock_timestamp(), locked.last_message_at,
                                          locked.updated_at) AS at) AS moment
            WHERE s.id = locked.id AND NOT locked.archived
            RETURNING s.last_seq, s.total_tokens, moment.at
        ), inserted AS (
            INSERT INTO {message_table} (session_id, seq, created_at, {columns})
            SELECT %s, bumped.last_seq, bumped.at, {placeholders} FROM bumped
            RETURNING id
        )
        SELECT locked.archived, locked.last_seq, locked.message_count, locked.updated_at,
               locked.history_changed_at, bumped.total_tokens, inserted.id, bumped.at
        FROM locked LEFT JOIN bumped ON true LEFT JOIN inserted ON true
    """
    return sql, inserted


# How each database appends a row; any other runs the portable ORM path.
APPEND_ROW_BY_VENDOR = {"postgresql": _append_row_single_statement}


def _archived() -> Conflict:
    return Conflict("The session is archived; unarchive it to add messages.")


def _message_appended(message: Message) -> None:
    MESSAGES_APPENDED.labels(role=message.role).inc()
    # Never the content: only what an operator needs to follow the conversation's shape.
    log_event(
        "message.appended",
        session_id=str(message.session_id),
        seq=message.seq,
        role=message.role,
        token_count=message.token_count,
    )


def set_sessions_archived(*, sessions: QuerySet[ChatSession], archived: bool) -> int:
    """Archive (or unarchive) many sessions in one UPDATE; returns how many changed.

    Archiving only stops new messages (append_message raises Conflict); history stays readable.
    """
    return sessions.exclude(archived=archived).update(archived=archived, updated_at=timezone.now())


def delete_sessions(*, sessions: QuerySet[ChatSession]) -> tuple[int, int]:
    """Delete these sessions and their messages in one transaction; (sessions, messages) gone.

    The one place session deletion goes through (the API's delete and prune_sessions too), so
    cache invalidation for deleted sessions has a single hook. The rows are locked first: an
    append racing the delete waits for it and then finds no session. The idempotency keys
    claimed on these sessions go with them (their stored responses hold the content).
    """
    with transaction.atomic():
        ids = list(sessions.select_for_update().values_list("pk", flat=True))
        if not ids:
            return 0, 0
        # Messages and idempotency keys have no delete receivers and nothing pointing at them,
        # so the cascade is one DELETE per table: no message is loaded.
        _, deleted = ChatSession.objects.filter(pk__in=ids).delete()
        for pk in ids:
            transaction.on_commit(partial(history_cache.invalidate, session_id=pk))
    return deleted.get(ChatSession._meta.label, 0), deleted.get(Message._meta.label, 0)


# --- Recounting stored token counts (count_tokens) ----------------------------------------
RECOUNT_BATCH = 500


@dataclass(frozen=True)
class RecountResult:
    scanned: int = 0
    changed: int = 0
    sessions: int = 0  # sessions whose messages or total_tokens changed (or would change)


def recount_tokens(
    *,
    session_ids: Sequence[uuid.UUID | str] | None = None,
    batch_size: int = RECOUNT_BATCH,
    dry_run: bool = False,
    on_batch: Callable[[RecountResult], None] | None = None,
) -> RecountResult:
    """Recount every message's token_count with its session's current model encoding.

    Walks sessions by id and each session's messages by seq in keyset batches; each batch is
    one short transaction holding the session row lock (appends queue behind it), updates only
    the rows whose count changed and moves total_tokens by the same difference. The last batch
    of a session also sets total_tokens to the exact sum, repairing any earlier drift.
    updated_at is left alone (a recount is not activity: prune and the session list order by
    it); the bulk update of the counts moves the session's history stamp instead (models.py),
    so a cached tail with the old counts is never served, even if dropping it fails.
    """
    sessions = ChatSession.objects.order_by("pk")
    if session_ids is not None:
        sessions = sessions.filter(pk__in=list(session_ids))
    totals = RecountResult()
    after_pk = None
    while True:
        page = sessions if after_pk is None else sessions.filter(pk__gt=after_pk)
        ids = list(page.values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        after_pk = ids[-1]
        for session_id in ids:
            totals = _recount_session(
                session_id=session_id,
                totals=totals,
                batch_size=batch_size,
                dry_run=dry_run,
                on_batch=on_batch,
            )
    return totals


def _recount_session(
    *,
    session_id: uuid.UUID,
    totals: RecountResult,
    batch_size: int,
    dry_run: bool,
    on_batch: Callable[[RecountResult], None] | None,
) -> RecountResult:
    scanned, changed = totals.scanned, totals.changed
    after_seq = 0
    pending_delta = 0  # dry run: the differences not written, carried to the final sum
    session_changed = False
    while True:
        with transaction.atomic():
            locked = ChatSession.objects.select_for_update().filter(pk=session_id).first()
            if locked is None:  # deleted meanwhile
                break
            rows = list(
                Message.objects.filter(session_id=session_id, seq__gt=after_seq)
                .order_by("seq")
                .only(
                    "seq", "role", "content", "name", "tool_calls", "tool_call_id", "token_count"
                )[:batch_size]
            )
            updates = []
            batch_delta = 0
            for row in rows:
                count = count_message_tokens(
                    session=locked,
                    role=row.role,
                    content=row.content,
                    name=row.name,
                    tool_calls=row.tool_calls,
                    tool_call_id=row.tool_call_id,
                )
                if count != row.token_count:
                    batch_delta += count - row.token_count
                    row.token_count = count
                    updates.append(row)
            scanned += len(rows)
            changed += len(updates)
            last = len(rows) < batch_size
            if dry_run:
                pending_delta += batch_delta
            elif updates:
                Message.objects.bulk_update(updates, ["token_count"])
            # Between batches total_tokens moves by the batch's difference; after the last
            # one it is the exact sum, which also repairs a total that had drifted.
            if last:
                total = _stored_token_sum(session_id) + pending_delta
            else:
                total = locked.total_tokens + (0 if dry_run else batch_delta)
            if updates or total != locked.total_tokens:
                session_changed = True
                if not dry_run:
                    # update(): a plain UPDATE, so auto_now leaves updated_at alone.
                    ChatSession.objects.filter(pk=session_id).update(total_tokens=total)
        if rows:
            after_seq = rows[-1].seq
        if on_batch is not None:
            on_batch(RecountResult(scanned=scanned, changed=changed, sessions=totals.sessions))
        if last:
            break
    return RecountResult(
        scanned=scanned, changed=changed, sessions=totals.sessions + session_changed
    )


def _stored_token_sum(session_id: uuid.UUID) -> int:
    return (
        Message.objects.filter(session_id=session_id).aggregate(total=Sum("token_count"))["total"]
        or 0
    )
