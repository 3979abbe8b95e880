"""Reads of chat sessions and messages, all scoped to the user who owns them."""

import base64
import binascii
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from chatengine.exceptions import NotFound, ValidationFailed
from conversations.models import ChatSession, Message

T = TypeVar("T")

HistoryOrder = Literal["asc", "desc"]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One keyset page: its rows, whether more follow, and the cursor values for the next one."""

    items: list[T]
    has_more: bool
    next_params: dict[str, str] | None


def get_session_for_user(*, user: AbstractBaseUser, session_id: str | uuid.UUID) -> ChatSession:
    """The user's session with this id; `NotFound` for a missing id, a bad id or another's."""
    try:
        pk = session_id if isinstance(session_id, uuid.UUID) else uuid.UUID(str(session_id))
    except ValueError:
        raise NotFound("Session not found.") from None
    try:
        return ChatSession.objects.get(pk=pk, user=user)
    except ChatSession.DoesNotExist:
        raise NotFound("Session not found.") from None


def _encode_session_cursor(session: ChatSession) -> str:
    raw = f"{session.updated_at.isoformat()}|{session.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_session_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, pk = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:  # ours always carry their offset; a naive one is forged
            raise ValueError("naive cursor timestamp")
        # In UTC, as the database compares it: a forged year-1 stamp overflows here, not there.
        return moment.astimezone(UTC), uuid.UUID(pk)
    except (ValueError, binascii.Error, UnicodeError, OverflowError):
        raise ValidationFailed(
            "cursor: not a cursor this API returned.", details={"cursor": ["Invalid cursor."]}
        ) from None


def list_sessions(
    *,
    user: AbstractBaseUser,
    limit: int,
    cursor: str | None = None,
    archived: bool | None = None,
    search: str | None = None,
) -> Page[ChatSession]:
    """The user's sessions, most recent activity first, one keyset page at a time."""
    qs: QuerySet[ChatSession] = ChatSession.objects.filter(user=user)
    if archived is not None:
        qs = qs.filter(archived=archived)
    if search:
        qs = qs.filter(title__icontains=search)
    if cursor:
        stamp, pk = _decode_session_cursor(cursor)
        qs = qs.filter(Q(updated_at__lt=stamp) | Q(updated_at=stamp, pk__lt=pk))
    rows = list(qs.order_by("-updated_at", "-pk")[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_params = {"cursor": _encode_session_cursor(rows[-1])} if has_more else None
    return Page(items=rows, has_more=has_more, next_params=next_params)


def list_messages(
    *,
    session: ChatSession,
    limit: int,
    after: int | None = None,
    before: int | None = None,
    order: HistoryOrder = "asc",
) -> Page[Message]:
    """A keyset page of the session's history by seq, read through the (session, seq) index.

    `after`/`before` bound the seq range (exclusive). Ascending pages continue with
    `after=<last seq>`, descending ones with `before=<last seq>`, so a walk visits every
    message exactly once even while new ones are appended.
    """
    qs = Message.objects.filter(session=session)
    if after is not None:
        qs = qs.filter(seq__gt=after)
    if before is not None:
        qs = qs.filter(seq__lt=before)
    qs = qs.order_by("seq" if order == "asc" else "-seq")
    rows = list(qs[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_params = None
    if has_more:
        key = "after" if order == "asc" else "before"
        next_params = {key: str(rows[-1].seq)}
    return Page(items=rows, has_more=has_more, next_params=next_params)


def iter_messages_newest_first(*, session: ChatSession, batch_size: int = 100) -> Iterator[Message]:
    """The session's messages from the newest back, read lazily in keyset batches.

    Stop iterating and nothing older is read: the context builder takes only what fits.
    """
    before = None
    while True:
        page = list_messages(session=session, limit=batch_size, before=before, order="desc")
        yield from page.items
        if not page.has_more:
            return
        before = page.items[-1].seq
