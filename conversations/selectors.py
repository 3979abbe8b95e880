"""Reads of chat sessions and messages, all scoped to the user who owns them."""

import base64
import binascii
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, OuterRef, Q, QuerySet

from chatengine.db import Read, fetch_instance, fetch_instances, fetch_values
from chatengine.exceptions import NotFound, ValidationFailed
from conversations import cache as history_cache
from conversations.cache_encoding import encode_message
from conversations.models import (
    FAILED_FINISH_REASONS,
    ChatSession,
    Message,
    MessageVersion,
    Summary,
)
from llm.types import HistoryMessage, ToolCall

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
    session = fetch_instance(ChatSession, where=("id", "user_id"), params=[pk, user.pk])
    if session is None:
        raise NotFound("Session not found.")
    return session


def _encode_session_cursor(session: ChatSession) -> str:
    raw = f"{session.updated_at.isoformat()}|{session.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_session_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, pk = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
        moment = datetime.fromisoformat(stamp)
        # We only ever issue aware UTC stamps; a crafted naive or out-of-range one must be a
        # 400, not a naive-datetime query or an OverflowError (500) in the database adapter.
        if moment.tzinfo is None:
            raise ValueError("naive cursor timestamp")
        return moment.astimezone(UTC), uuid.UUID(pk)
    except (ValueError, OverflowError, binascii.Error, UnicodeError):
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
    forked_from: ChatSession | None = None,
) -> Page[ChatSession]:
    """The user's sessions, most recent activity first, one keyset page at a time (only the
    forks of `forked_from`, if given)."""
    qs: QuerySet[ChatSession] = ChatSession.objects.filter(user=user)
    if forked_from is not None:
        qs = qs.filter(forked_from=forked_from)
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
    message exactly once even while new ones are appended. Pages that lie inside the session's
    cached tail come from the history cache (conversations/cache.py), the same rows either way.
    """
    return _history_page(
        session=session, limit=limit, after=after, before=before, order=order, rendered=False
    )


def list_messages_rendered(
    *,
    session: ChatSession,
    limit: int,
    after: int | None = None,
    before: int | None = None,
    order: HistoryOrder = "asc",
) -> Page[bytes]:
    """The page `list_messages` returns, each message already as its API JSON (bytes).

    What the history endpoint sends: from the cache, the messages go out as stored, with no
    model instance or serializer in between.
    """
    return _history_page(
        session=session, limit=limit, after=after, before=before, order=order, rendered=True
    )


def _history_page(
    *,
    session: ChatSession,
    limit: int,
    after: int | None,
    before: int | None,
    order: HistoryOrder,
    rendered: bool,
) -> Page:
    cached = history_cache.read_history(
        session=session,
        limit=limit,
        after=after,
        before=before,
        order=order,
        load_tail=lambda n: _newest_messages(session=session, count=n),
        rendered=rendered,
    )
    if cached is not None:
        items, has_more, last_seq = cached.items, cached.has_more, cached.last_seq
    else:
        bounds = {"seq__gt": after, "seq__lt": before}
        where = tuple(lookup for lookup, value in bounds.items() if value is not None)
        rows = fetch_instances(
            Message,
            where=("session_id", *where),
            params=[session.pk, *(bounds[lookup] for lookup in where)],
            order_by=("seq" if order == "asc" else "-seq",),
            limit=limit + 1,
        )
        has_more = len(rows) > limit
        rows = rows[:limit]
        last_seq = rows[-1].seq if rows else None
        items = [encode_message(m) for m in rows] if rendered else rows
    next_params = None
    if has_more:
        key = "after" if order == "asc" else "before"
        next_params = {key: str(last_seq)}
    return Page(items=items, has_more=has_more, next_params=next_params)


def _newest_messages(*, session: ChatSession, count: int) -> list[Message]:
    """The newest `count` messages up to the row's last_seq, newest first (a cache rebuild).

    Bounded by the row the caller holds, so the rebuilt tail is exactly what that row says.
    """
    return fetch_instances(
        Message,
        where=("session_id", "seq__lte"),
        params=[session.pk, session.last_seq],
        order_by=("-seq",),
        limit=count,
    )


def first_user_message(*, session: ChatSession) -> Message | None:
    """The session's oldest user message (what an automatic title is made from)."""
    return Message.objects.filter(session=session, role=Message.Role.USER).order_by("seq").first()


def get_message(*, session: ChatSession, seq: int) -> Message:
    """The message at `seq` of a session the caller already holds (get_session_for_user
    checked its owner); NotFound when there is none."""
    message = Message.objects.filter(session=session, seq=seq).first()
    if message is None:
        raise NotFound(f"No message {seq} in this session.")
    return message


def has_message_after(*, session: ChatSession, seq: int) -> bool:
    return Message.objects.filter(session=session, seq__gt=seq).exists()


@dataclass(frozen=True)
class Version:
    """One answer that stood at a message's seq: an earlier one (a MessageVersion) or the
    message's current one."""

    number: int
    current: bool
    answer: Message | MessageVersion


def list_message_versions(*, message: Message, limit: int, after: int | None = None) -> Page:
    """The answers of `message`, oldest first: its earlier versions by number, then its
    current one (number `message.versions`), one keyset page at a time."""
    rows = MessageVersion.objects.filter(message=message).order_by("number")
    if after is not None:
        rows = rows.filter(number__gt=after)
    items = [Version(number=v.number, current=False, answer=v) for v in rows[: limit + 1]]
    if len(items) <= limit and (after is None or after < message.versions):
        items.append(Version(number=message.versions, current=True, answer=message))
    has_more = len(items) > limit
    items = items[:limit]
    next_params = {"after": str(items[-1].number)} if has_more else None
    return Page(items=items, has_more=has_more, next_params=next_params)


# --- Support admin reads ------------------------------------------------------------------
# Not scoped to a user: only the admin (staff, checked by Django's admin) calls these.

TRANSCRIPT_PAGE_SIZE = 100


def session_has_failed_reply() -> Exists:
    """EXISTS(an assistant reply of the outer session that ended in error or was interrupted).

    Answered by the partial index `message_session_failed_idx`, so it costs one index probe per
    listed session whatever the length of its history.
    """
    return Exists(
        Message.objects.filter(
            session=OuterRef("pk"),
            role=Message.Role.ASSISTANT,
            finish_reason__in=FAILED_FINISH_REASONS,
        )
    )


def session_ids_with_content(*, phrase: str) -> QuerySet:
    """Ids of the sessions with a message containing `phrase` (case-insensitive), as a subquery.

    On PostgreSQL `icontains` compiles to UPPER(content) LIKE UPPER('%phrase%'), which the
    trigram index `message_content_upper_trgm_idx` serves (migration 0002); elsewhere it scans.
    """
    return Message.objects.filter(content__icontains=phrase).values("session_id")


@dataclass(frozen=True)
class TranscriptPage:
    """One page of a session's transcript: messages oldest first within the page.

    Page 1 is the newest; `number` grows towards the start of the conversation.
    """

    messages: list[Message]
    number: int
    num_pages: int

    @property
    def has_older(self) -> bool:
        return self.number < self.num_pages

    @property
    def has_newer(self) -> bool:
        return self.number > 1


def get_transcript_page(
    *, session: ChatSession, page: int = 1, per_page: int = TRANSCRIPT_PAGE_SIZE
) -> TranscriptPage:
    """The `page`-th newest slice of `per_page` messages, read by seq range on the unique index.

    Pages are cut by seq (1..last_seq), not by OFFSET: one index range scan per page, the same
    cost for page 1 and page 100. Out-of-range page numbers are clamped.
    """
    num_pages = max(1, -(-session.last_seq // per_page))
    number = min(max(1, page), num_pages)
    high = session.last_seq - (number - 1) * per_page
    low = high - per_page
    messages = list(
        Message.objects.filter(session=session, seq__gt=low, seq__lte=high).order_by("seq")
    )
    return TranscriptPage(messages=messages, number=number, num_pages=num_pages)


def iter_transcript(*, session: ChatSession, chunk_size: int = 1000) -> Iterator[Message]:
    """Every message of the session in seq order, fetched in chunks (bounded memory)."""
    return Message.objects.filter(session=session).order_by("seq").iterator(chunk_size=chunk_size)


# --- Rolling summaries (llm/summaries.py) ---------------------------------------------------
def latest_summary(*, session: ChatSession) -> Summary | None:
    """The session's summary covering the most messages (one probe of its unique index).

    Without the ORM's query building: every reply of a `summary`-strategy session reads it.
    """
    rows = fetch_instances(
        Summary, where=("session_id",), params=[session.pk], order_by=("-covers_to_seq",), limit=1
    )
    return rows[0] if rows else None


def summary_starting_at(*, session: ChatSession, covers_from_seq: int) -> Summary | None:
    return Summary.objects.filter(session=session, covers_from_seq=covers_from_seq).first()


def list_summaries(*, session: ChatSession, limit: int, after: int | None = None) -> Page[Summary]:
    """A keyset page of the session's summaries, oldest range first (`after`: a covers_to_seq)."""
    rows = Summary.objects.filter(session=session)
    if after is not None:
        rows = rows.filter(covers_to_seq__gt=after)
    items = list(rows.order_by("covers_to_seq")[: limit + 1])
    has_more = len(items) > limit
    items = items[:limit]
    next_params = {"after": str(items[-1].covers_to_seq)} if has_more else None
    return Page(items=items, has_more=has_more, next_params=next_params)


def summaries_ending_between(
    *, session: ChatSession, first_seq: int, last_seq: int
) -> list[Summary]:
    """The session's summaries whose range ends at a seq in first_seq..last_seq (the admin
    transcript marks where each cut in)."""
    return list(
        Summary.objects.filter(
            session=session, covers_to_seq__gte=first_seq, covers_to_seq__lte=last_seq
        ).order_by("covers_to_seq")
    )


def list_messages_to_fold(
    *, session: ChatSession, from_seq: int, to_seq: int, limit: int
) -> list[Message]:
    """Messages from_seq..to_seq in seq order (at most `limit`), minus the pinned and system
    ones, which every context sends anyway: what one summary folds, read by the seq index."""
    return list(
        Message.objects.filter(session=session, seq__gte=from_seq, seq__lte=to_seq)
        .exclude(Q(role=Message.Role.SYSTEM) | Q(pinned=True))
        .order_by("seq")[:limit]
    )


# --- The context a reply sends ---------------------------------------------------------------
# HistoryMessage's fields, in its order: all the context builder reads of a stored message.
CONTEXT_COLUMNS = ("seq", "role", "content", "token_count", "name", "tool_calls", "tool_call_id")


@dataclass(frozen=True)
class ContextRows:
    """One batch of history for the context builder, newest first, and whether older rows
    remain; with the first batch, the session's `system` and pinned messages (oldest first,
    some perhaps also in `newest`; the builder skips those there)."""

    newest: list[HistoryMessage]
    has_more: bool
    system: list[HistoryMessage]


def list_context_messages(
    *,
    session: ChatSession,
    limit: int,
    before: int | None = None,
    always_sent: bool | None = None,
) -> ContextRows:
    """The newest `limit` messages (below seq `before`, if given) as the context builder takes
    them; with `always_sent` (the first batch; by default when there is no `before`), also the
    session's system and pinned messages (below `before` too: a regenerated answer's context
    ends before it).

    Read from PostgreSQL, not the history cache: the seven columns the context needs, by the
    (session, seq) index, and the system and pinned ones by their partial index, in one round trip
    and with no model instance, cost less than the cache's round trip and decoding each cached
    message's full JSON into a Message (docs/performance.md, "Context build"). The database
    is the authority, so no freshness check is needed either.
    """
    window = Read(
        where=("session_id",) if before is None else ("session_id", "seq__lt"),
        params=[session.pk] if before is None else [session.pk, before],
        order_by=("-seq",),
        limit=limit + 1,
    )
    if always_sent is None:
        always_sent = before is None
    if always_sent:
        # The condition of the partial index message_session_pinned_idx, which serves it.
        system = Read(
            where=("session_id", ("role", "pinned"))
            if before is None
            else ("session_id", "seq__lt", ("role", "pinned")),
            params=[session.pk, Message.Role.SYSTEM.value, True]
            if before is None
            else [session.pk, before, Message.Role.SYSTEM.value, True],
            order_by=("seq",),
        )
        newest, system_rows = fetch_values(Message, columns=CONTEXT_COLUMNS, reads=[window, system])
    else:
        (newest,) = fetch_values(Message, columns=CONTEXT_COLUMNS, reads=[window])
        system_rows = []
    return ContextRows(
        newest=_history_messages(newest[:limit]),
        has_more=len(newest) > limit,
        system=_history_messages(system_rows),
    )


def _history_messages(rows: list[tuple]) -> list[HistoryMessage]:
    return [
        HistoryMessage(
            seq,
            role,
            content,
            token_count,
            name,
            tuple(ToolCall.from_openai(c) for c in calls) if calls else (),
            tool_call_id,
        )
        for seq, role, content, token_count, name, calls, tool_call_id in rows
    ]
