"""The history cache: each session's newest messages in Redis, the database as the authority.

This module decides when the cache is used and what a failure means; cache_store.py holds the
Redis keys and the Lua scripts that change them, cache_encoding.py how a message and a stamp
are written.

Why it stays correct: a reader trusts the tail only when its `row` stamp equals the stamp of
the session row the request has just read from the database for the ownership check (last_seq,
message_count, updated_at, history_changed_at). Every change to a session's messages also
writes its row in the same transaction (append bumps the counters; any other write of stored
messages, whatever its path, moves history_changed_at: see MessageQuerySet in models.py), so a
tail that missed a write (Redis down, a lost on_commit, a write-through skipped) simply no
longer matches and is rebuilt from the database. Cache writes are therefore only ever an
optimisation: skipping one can cost a miss, never a wrong answer. Write-through appends are
seq-checked in one Lua script (the tail must be at exactly the previous row stamp), so
concurrent appends from several processes either extend the tail in order or drop it.

Without Redis the cache is off and every read comes from the database. Until issue 15 a
stand-in store ran the same rules over any Django cache (local memory), restated in Python
under a process lock: a second implementation of every rule, tested instead of the real one,
and of no use where it ran (one development process, whose database answers in well under a
millisecond). The database is the authority either way, so "off" loses nothing but speed.

Events (hit, miss, error, rebuild) are counted once, in the Prometheus counter
chatengine_cache_events_total of each process.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from chatengine import redis as chatengine_redis
from chatengine.backoff import Backoff
from chatengine.events import log_event
from chatengine.metrics import CACHE_EVENTS
from conversations.cache_encoding import (
    decode_message,
    encode_message,
    looks_rendered,
    session_stamp,
)
from conversations.cache_store import RedisStore
from conversations.models import ChatSession, Message

logger = logging.getLogger(__name__)


# --- configuration ----------------------------------------------------------------------
def enabled() -> bool:
    """On when configured and there is Redis, one server or a cluster (without: off, see above)."""
    return settings.CHATENGINE_CACHE_ENABLED and chatengine_redis.client() is not None


def tail_size() -> int:
    return settings.CHATENGINE_CACHE_TAIL


# --- counters and the failure policy ----------------------------------------------------
# The retry back-off and the once-a-minute warning clock (shared mechanism: chatengine.backoff).
_backoff = Backoff()
_EVENTS = {event: CACHE_EVENTS.labels(event=event) for event in ("hit", "miss", "error", "rebuild")}


def _count(event: str) -> None:
    _EVENTS[event].inc()


def reset_backoff() -> None:
    """Forget a back-off (tests, and a fresh start after reconfiguring)."""
    _backoff.reset()


def _available() -> bool:
    return _backoff.available()


def _failed(op: str, exc: BaseException, session_id: Any = None, *, backoff: bool = True) -> None:
    """Count the error, back off briefly, and warn at most once a minute per process.

    The back-off matters when Redis is slow rather than down: without it, every request
    would wait a full socket timeout before reaching the database.
    """
    _count("error")
    warn = _backoff.failed(retry_s=settings.CHATENGINE_CACHE_RETRY_S if backoff else None)
    log_event(
        "cache.fallback",
        level=logging.WARNING if warn else logging.DEBUG,
        op=op,
        error=type(exc).__name__,
        session_id=str(session_id) if session_id else None,
    )


def _guarded(op: str, session_id: Any, fn: Callable[[], Any]) -> tuple[bool, Any]:
    """Run one cache operation; (False, None) if it failed or the cache is backing off."""
    if not _available():
        return False, None
    try:
        result = fn()
    except Exception as exc:  # any cache failure must fall back to the database, never 5xx
        _failed(op, exc, session_id)
        return False, None
    return True, result


# --- what the readers and writers call --------------------------------------------------
@dataclass(frozen=True)
class CachedPage:
    """A page cut from the tail: model instances, or the stored API JSON when `rendered`."""

    items: list[Message] | list[bytes]
    has_more: bool
    last_seq: int | None  # the seq of the page's last item (the next page's cursor)


def read_history(
    *,
    session: ChatSession,
    limit: int,
    after: int | None,
    before: int | None,
    order: str,
    load_tail: Callable[[int], list[Message]],
    rendered: bool = False,
) -> CachedPage | None:
    """The page from the cached tail, or None when the database must answer.

    With `rendered`, items are each message's API JSON (bytes), as stored; otherwise
    Message instances.

    `session` is the row the caller read from the database; the tail is used only if it was
    built for exactly that row. On a missing or stale tail, `load_tail(n)` (the newest n
    messages, newest first, up to session.last_seq) rebuilds it, and the page is cut from
    what was loaded when it lies inside.
    """
    if not enabled():
        return None
    stamp = session_stamp(session)
    ok, found = _guarded(
        "read",
        session.pk,
        lambda: _store().read(
            session.pk, stamp, after=after, before=before, order=order, limit=limit
        ),
    )
    if ok and found is not None:
        status, has_more, entries = found
        if status == "hit":
            try:
                items = _page_items(entries, session_id=session.pk, rendered=rendered)
            except (ValueError, TypeError, KeyError) as exc:
                # Bad data, not an unavailable Redis: no back-off, drop it so it is rebuilt.
                _failed("decode", exc, session.pk, backoff=False)
                invalidate(session_id=session.pk)
                return None
            _count("hit")
            return CachedPage(items=items, has_more=has_more, last_seq=_last_seq(entries))
        _count("miss")
        logger.debug("history cache miss (%s) for session %s", status, session.pk)
        if status == "outside":
            return None
    else:
        _count("miss")
        logger.debug("history cache unavailable for session %s", session.pk)
        return None

    # Missing or stale: rebuild from the database, then serve from what was loaded. Inside a
    # transaction the rows may be uncommitted; if it rolls back, the tail's stamp (its times
    # to the microsecond) matches no committed row, so nobody is ever served from it.
    size = tail_size()
    newest = load_tail(size + 1)
    tail = list(reversed(newest[:size]))
    floor = newest[size].seq if len(newest) > size else 0
    entries = [(m.seq, encode_message(m)) for m in tail]
    done, written = _guarded(
        "rebuild",
        session.pk,
        lambda: _store().write_tail(session.pk, stamp, session.last_seq, floor, entries),
    )
    if done and written == 1:  # 0: a newer tail is already there, left alone
        _count("rebuild")
    by_seq = {m.seq: m for m in tail}
    cut = slice_tail(
        [(seq, (seq, raw)) for seq, raw in entries],
        floor,
        after=after,
        before=before,
        order=order,
        limit=limit,
    )
    if cut is None:
        return None
    has_more, page = cut
    items = [raw for _, raw in page] if rendered else [by_seq[seq] for seq, _ in page]
    return CachedPage(items=items, has_more=has_more, last_seq=_last_seq(page))


def _page_items(
    entries: list[tuple[int, bytes]], *, session_id: uuid.UUID, rendered: bool
) -> list[Message] | list[bytes]:
    if not rendered:
        return [decode_message(raw, session_id=session_id) for _, raw in entries]
    items = [raw for _, raw in entries]
    if not all(looks_rendered(raw) for raw in items):
        raise ValueError("cached message is not rendered JSON")
    return items


def _last_seq(entries: Sequence[tuple[int, Any]]) -> int | None:
    return entries[-1][0] if entries else None


def record_append(*, message: Message, previous_stamp: str, stamp: str) -> None:
    """Write-through after an append committed: extend the tail if it is at previous_stamp.

    Otherwise (a concurrent append got there first, or the tail is stale) the tail is
    dropped and the next reader rebuilds it.
    """
    if not enabled():
        return
    raw = encode_message(message)
    _guarded(
        "append",
        message.session_id,
        lambda: _store().append(
            message.session_id, previous_stamp, stamp, message.seq, raw, tail_size()
        ),
    )


def invalidate(*, session_id: uuid.UUID | str) -> None:
    """Drop the session's cached tail and row (after an edit, a delete or a session change)."""
    if not enabled():
        return
    _guarded("invalidate", session_id, lambda: _store().invalidate(session_id))


def slice_tail(
    entries: Sequence[tuple[int, Any]],
    floor: int,
    *,
    after: int | None,
    before: int | None,
    order: str,
    limit: int,
) -> tuple[bool, list[Any]] | None:
    """Cut a history page from a tail holding every message with floor < seq (ascending).

    Returns (has_more, items), or None when part of the answer lies below the tail.

    The rule is written twice on purpose: the Lua read script (cache_store.py) must decide
    hit or miss and cut the page inside Redis, atomically with an append that trims the tail
    and in one round trip; a rebuild cuts its page here from the rows it just loaded, rather
    than reading back what it wrote. test_cache.py's
    test_the_lua_read_and_slice_tail_cut_the_same_page_from_the_same_tail runs both over the
    same tails and bounds.
    """
    rows = [
        value
        for seq, value in entries
        if (after is None or seq > after) and (before is None or seq < before)
    ]
    if order == "desc":
        rows.reverse()
    n = len(rows)
    lower = after or 0
    if order == "asc":
        if lower < floor:
            return None
        return n > limit, rows[:limit]
    if n > limit:
        return True, rows[:limit]
    if lower >= floor:
        return False, rows
    if n == limit:
        # Everything down to the floor is here, and the floor is a real older message.
        return True, rows
    return None


def _store() -> RedisStore:
    # A redis-py Redis or, with REDIS_CLUSTER=1, a RedisCluster: each script names the two keys
    # of one session, which share a slot (cache_store.py), so both run them the same way.
    return RedisStore(chatengine_redis.client())


def store_facts() -> tuple[int, int]:
    """(sessions with a cached tail, bytes Redis uses): for `manage.py cache_stats`."""
    store = _store()
    return store.cached_sessions(), store.used_memory()
