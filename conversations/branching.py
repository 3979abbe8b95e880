"""Branching a conversation without rewriting it: forks, edits (a fork plus a new message) and
the versions a regenerate keeps.

A session's history stays append-only with a gapless seq. Trying another path never changes
what was said: a fork copies messages 1..N into a new session; an edit of message k is a fork
at k-1 plus the edited message; a regenerate replaces the current answer of the last message
and keeps the one it replaced as a MessageVersion.
"""

import functools
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F, Max, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from chatengine.events import log_event
from chatengine.exceptions import Conflict, NotFound
from conversations import services
from conversations.models import VERSIONED_FIELDS, ChatSession, Message, MessageVersion


def fork_session(*, session: ChatSession, at_seq: int, title: str | None = None) -> ChatSession:
    """A new session of the same user holding copies of `session`'s messages 1..at_seq.

    The copies keep roles, contents, token counts and reply fields, get new ids and seq
    1..n (n = at_seq unless messages were deleted from that range: the copy has no gap), and
    only their current version (`versions` is 1: earlier answers stay with the parent). The
    parent is only read: an append to it meanwhile lands after at_seq and is not copied.
    The messages are copied by one INSERT ... SELECT, whatever their number. An archived
    session may be forked (the fork is not archived).
    """
    if at_seq > session.last_seq:
        raise NotFound(f"No message {at_seq} in this session (its last seq is {session.last_seq}).")
    with transaction.atomic():
        fork = ChatSession.objects.create(
            user_id=session.user_id,
            title=session.title if title is None else title,
            system_prompt=session.system_prompt,
            model=session.model,
            metadata=session.metadata,
            context_strategy=session.context_strategy,
            forked_from=session,
            forked_at_seq=at_seq,
        )
        if at_seq > 0:
            _copy_messages(source_id=session.pk, target_id=fork.pk, at_seq=at_seq)
            _count_messages(fork)
    transaction.on_commit(
        lambda: log_event(
            "session.forked",
            session_id=str(fork.pk),
            forked_from=str(session.pk),
            forked_at_seq=at_seq,
            messages=fork.message_count,
        )
    )
    return fork


def _copy_messages(*, source_id: Any, target_id: Any, at_seq: int) -> None:
    pk = ChatSession._meta.pk
    ids = [pk.get_db_prep_value(value, connection) for value in (target_id, source_id)]
    with connection.cursor() as cursor:
        cursor.execute(_copy_sql(), [*ids, at_seq])


@functools.cache
def _copy_sql() -> str:
    """INSERT ... SELECT of every Message column (so a new column is copied too): new ids, the
    fork's session, seq renumbered 1..n, versions back to 1."""
    copied = [
        f
        for f in Message._meta.concrete_fields
        if f.attname not in ("id", "session_id", "seq", "versions")
    ]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in copied)
    table = quote(Message._meta.db_table)
    return f"""
        INSERT INTO {table} ({quote("session_id")}, {quote("seq")}, {quote("versions")}, {columns})
        SELECT %s, ROW_NUMBER() OVER (ORDER BY {quote("seq")}), 1, {columns}
        FROM {table} WHERE {quote("session_id")} = %s AND {quote("seq")} <= %s
    """


def _count_messages(fork: ChatSession) -> None:
    """Set the fork's counters from the rows just copied (one UPDATE)."""
    rows = Message.objects.filter(session_id=OuterRef("pk")).order_by().values("session_id")
    ChatSession.objects.filter(pk=fork.pk).update(
        message_count=Coalesce(Subquery(rows.annotate(n=Count("pk")).values("n")), Value(0)),
        last_seq=Coalesce(Subquery(rows.annotate(n=Count("pk")).values("n")), Value(0)),
        total_tokens=Coalesce(Subquery(rows.annotate(n=Sum("token_count")).values("n")), Value(0)),
        last_message_at=Subquery(rows.annotate(at=Max("created_at")).values("at")),
    )
    fork.refresh_from_db(
        fields=["message_count", "last_seq", "total_tokens", "last_message_at", "updated_at"]
    )


def edit_message(
    *,
    session: ChatSession,
    message: Message,
    content: str,
    metadata: dict[str, Any] | None = None,
) -> tuple[ChatSession, Message]:
    """Edit user message `message` of `session`: a fork before it (at its seq - 1) with the
    edited message appended, in one transaction. The session itself is not changed. Returns
    (the fork, its new message).

    `metadata` defaults to the original message's. Conflict on an archived session or a
    message that is not the user's.
    """
    if session.archived:
        raise Conflict("The session is archived; unarchive it to edit its messages.")
    if message.role != Message.Role.USER:
        raise Conflict(
            f"Only user messages can be edited; message {message.seq} is a {message.role} message."
        )
    with transaction.atomic():
        fork = fork_session(session=session, at_seq=message.seq - 1)
        edited = services.append_message(
            session=fork,
            role=Message.Role.USER,
            content=content,
            name=message.name,
            metadata=message.metadata if metadata is None else metadata,
        )
    return fork, edited


# --- Versions of a regenerated answer ---------------------------------------------------------
def replace_answer(*, session: ChatSession, seq: int, answer: dict[str, Any]) -> Message:
    """Store a regenerated answer of message `seq` as its current one; the message as stored.

    Under the session row lock (concurrent regenerates queue here, the last one to arrive
    becomes current): while the message is still the session's last and the session not
    archived, the answer it had becomes a MessageVersion and the new one takes its place,
    moving the session's total_tokens by the difference. Otherwise (the conversation moved on
    while the model talked) the new answer is kept as an earlier version, so nothing generated
    is lost and nothing later is contradicted, and Conflict says so once committed. `answer`
    holds VERSIONED_FIELDS but created_at.
    """
    now = timezone.now()
    with transaction.atomic():
        locked = ChatSession.objects.select_for_update().get(pk=session.pk)
        message = Message.objects.filter(session=locked, seq=seq).first()
        if message is None:
            raise NotFound(f"Message {seq} was deleted while its answer was generated.")
        later = Message.objects.filter(session=locked, seq__gt=seq).exists()
        current = not (later or locked.archived)
        number = message.versions
        if current:
            kept = {name: getattr(message, name) for name in VERSIONED_FIELDS}
            MessageVersion.objects.create(message=message, session=locked, number=number, **kept)
            Message.objects.filter(pk=message.pk).update(
                versions=number + 1, created_at=now, **answer
            )
            ChatSession.objects.filter(pk=locked.pk).update(
                total_tokens=F("total_tokens") + answer["token_count"] - message.token_count,
                last_message_at=now,
                updated_at=now,
            )
        else:
            MessageVersion.objects.create(
                message=message, session=locked, number=number, created_at=now, **answer
            )
            Message.objects.filter(pk=message.pk).update(versions=number + 1)
        message.refresh_from_db()
    # Keep the caller's instance in step with what was committed.
    session.refresh_from_db(
        fields=["total_tokens", "last_message_at", "updated_at", "history_changed_at"]
    )
    transaction.on_commit(
        lambda: log_event(
            "message.regenerated",
            session_id=str(session.pk),
            seq=seq,
            versions=message.versions,
            current=current,
        )
    )
    if not current:
        raise Conflict(
            f"Message {seq} is no longer the session's last (or the session was archived) "
            f"while its answer was generated: the answer is kept as version {number} of it, "
            "not as the current one.",
            details={"seq": seq, "version": number},
        )
    return message
