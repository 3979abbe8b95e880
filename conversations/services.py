"""Writes of chat sessions and messages. Views and commands call these, never the ORM."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet

from chatengine.exceptions import Conflict
from conversations.models import ChatSession, Message

_SESSION_EDITABLE_FIELDS = ("title", "system_prompt", "model", "metadata", "archived")


def create_session(
    *,
    user: AbstractBaseUser,
    title: str = "",
    system_prompt: str = "",
    model: str = "",
    metadata: dict[str, Any] | None = None,
) -> ChatSession:
    """Create an empty chat session owned by `user`."""
    return ChatSession.objects.create(
        user=user,
        title=title,
        system_prompt=system_prompt,
        model=model,
        metadata=metadata or {},
    )


def update_session(*, session: ChatSession, **changes: Any) -> ChatSession:
    """Change a session's editable fields (title, system_prompt, model, metadata, archived)."""
    unknown = set(changes) - set(_SESSION_EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"update_session() got non-editable fields: {sorted(unknown)}")
    for field, value in changes.items():
        setattr(session, field, value)
    session.save(update_fields=[*changes, "updated_at"])
    return session


def delete_session(*, session: ChatSession) -> None:
    """Delete a session and, by cascade, its messages."""
    session.delete()


@transaction.atomic
def append_message(
    *,
    session: ChatSession,
    role: str,
    content: str,
    name: str = "",
    metadata: dict[str, Any] | None = None,
    token_count: int = 0,
    **reply_fields: Any,
) -> Message:
    """Append a message at the session's next seq and bump its counters, in one transaction.

    The session row is locked (SELECT ... FOR UPDATE) so concurrent appends to one session
    queue up and get seq n+1, n+2, ... with no gap and no duplicate. Raises `Conflict` on an
    archived session. `reply_fields` are the optional Message columns (tool_calls,
    tool_call_id, model, usage, finish_reason, latency_ms, context).
    """
    locked = ChatSession.objects.select_for_update().get(pk=session.pk)
    if locked.archived:
        raise Conflict("The session is archived; unarchive it to add messages.")

    seq = locked.last_seq + 1
    message = Message.objects.create(
        session=locked,
        seq=seq,
        role=role,
        content=content,
        name=name,
        metadata=metadata or {},
        token_count=token_count,
        **reply_fields,
    )
    locked.last_seq = seq
    locked.message_count += 1
    locked.total_tokens += token_count
    locked.last_message_at = message.created_at
    locked.save(
        update_fields=["last_seq", "message_count", "total_tokens", "last_message_at", "updated_at"]
    )
    # Keep the caller's instance in step with what was committed.
    for field in ("last_seq", "message_count", "total_tokens", "last_message_at", "updated_at"):
        setattr(session, field, getattr(locked, field))
    return message


def delete_sessions(*, sessions: QuerySet[ChatSession]) -> tuple[int, int]:
    """Delete these sessions and their messages in one transaction; (sessions, messages) gone.

    The one place bulk deletion goes through (prune_sessions calls it per batch), so cache
    invalidation for deleted sessions has a single hook. The rows are locked first: an append
    racing the delete waits for it and then finds no session.
    """
    with transaction.atomic():
        ids = list(sessions.select_for_update().values_list("pk", flat=True))
        if not ids:
            return 0, 0
        _, per_model = ChatSession.objects.filter(pk__in=ids).delete()
    return per_model.get(ChatSession._meta.label, 0), per_model.get(Message._meta.label, 0)
