"""The history cache: each session's newest messages in Redis, the database as the authority.

Per session, under `chatengine:v2:session:<id>:`:
  `tail`  a sorted set, score = seq, member = one message as its API JSON (see below);
  `meta`  a hash: `row` (the stamp of the session row the tail reflects), `last` (its last_seq),
          `floor` (the tail holds every message with floor < seq <= last; 0 = the whole history).
`chatengine:v2:stats` counts hits, misses, rebuilds and errors across processes.

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

Without Redis (local development) the same code runs over any Django cache (local memory),
with a process-local lock standing in for the Lua scripts' atomicity.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from django.conf import settings
from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS
from django_redis import get_redis_connection
from django_redis.cache import RedisCache

from chatengine.backoff import Backoff
from chatengine.events import log_event
from chatengine.metrics import CACHE_EVENTS
from chatengine.renderers import dumps
from conversations.models import ChatSession, Message
from conversations.serializers import message_representation

logger = logging.getLogger(__name__)

KEY_PREFIX = "chatengine:v3"  # v3: messages gained `versions`
STATS_KEY = f"{KEY_PREFIX}:stats"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Each message is stored as its API JSON (serializers.message_representation, written as the
# renderer writes it), so a history page served from the cache goes out without being parsed
# or serialized again (chatengine/renderers.py). Readers that need model instances (the context
# builder) parse it back; created_at round-trips exactly (ISO 8601 with microseconds). A change
# to the representation must bump KEY_PREFIX; the key check in decode_message catches a miss.
_FIELDS = [f.attname for f in Message._meta.concrete_fields]
_API_NAMES = {"session_id": "session"}
_API_KEYS = [_API_NAMES.get(name, name) for name in _FIELDS]
_SESSION_INDEX = _FIELDS.index("session_id")
_CREATED_INDEX = _FIELDS.index("created_at")
_RENDERED_START = b'{"id":'


# --- configuration ----------------------------------------------------------------------
def enabled() -> bool:
    return settings.CHATENGINE_CACHE_ENABLED


def tail_size() -> int:
    return settings.CHATENGINE_CACHE_TAIL


def _ttl_ms() -> int:
    return settings.CHATENGINE_CACHE_TTL_S * 1000


def session_key(session_id: uuid.UUID | str, part: str) -> str:
    return f"{KEY_PREFIX}:session:{session_id}:{part}"


# --- encoding ---------------------------------------------------------------------------
def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


class SessionVersion(Protocol):
    """What a stamp is made of: a ChatSession row, or an append's before/after counters."""

    last_seq: int
    message_count: int
    updated_at: datetime
    history_changed_at: datetime | None


def session_stamp(session: SessionVersion) -> str:
    """The version of a session row that a cached tail must match to be trusted."""
    changed = _micros(session.history_changed_at) if session.history_changed_at else 0
    return f"{session.last_seq}:{session.message_count}:{_micros(session.updated_at)}:{changed}"


def encode_message(message: Message) -> bytes:
    """The message's API JSON, as stored in the tail and sent in history pages."""
    return dumps(message_representation(message))


def decode_message(raw: bytes, *, session_id: uuid.UUID) -> Message:
    data = json.loads(raw)
    if not isinstance(data, dict) or list(data) != _API_KEYS:
        raise ValueError("cached message has a different field layout")
    values = list(data.values())  # in _API_KEYS order, as just checked
    values[_SESSION_INDEX] = session_id
    values[_CREATED_INDEX] = datetime.fromisoformat(values[_CREATED_INDEX])
    # from_db builds the instance exactly as a queryset would (saved state, no defaults run).
    return Message.from_db(DEFAULT_DB_ALIAS, _FIELDS, values)


def _looks_rendered(raw: bytes) -> bool:
    # What a page served as stored relies on: every entry is one of our JSON objects. A full
    # parse would cost what serving them as stored saves; the shape check catches the real
    # risk, entries written in another layout.
    return raw.startswith(_RENDERED_START) and raw.endswith(b"}")


# --- counters and the failure policy ----------------------------------------------------
class _ProcessState:
    """Per-process counters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.counts = {"hit": 0, "miss": 0, "error": 0, "rebuild": 0}
        self.unreported_errors = 0


_state = _ProcessState()
# The retry back-off and the once-a-minute warning clock (shared mechanism: chatengine.backoff).
_backoff = Backoff()


def _count(event: str, n: int = 1) -> None:
    CACHE_EVENTS.labels(event=event).inc(n)
    with _state.lock:
        _state.counts[event] += n


def local_stats() -> dict[str, int]:
    """This process's counters (hit, miss, error, rebuild)."""
    with _state.lock:
        return dict(_state.counts)


def reset_local_state() -> None:
    """Forget counters and back-off (tests, and a fresh start after reconfiguring)."""
    with _state.lock:
        _state.reset()
    _backoff.reset()


def _available() -> bool:
    return _backoff.available()


def _failed(op: str, exc: BaseException, session_id: Any = None, *, backoff: bool = True) -> None:
    """Count the error, back off briefly, and warn at most once a minute per process.

    The back-off matters when Redis is slow rather than down: without it, every request
    would wait a full socket timeout before reaching the database.
    """
    _count("error")
    with _state.lock:
        _state.unreported_errors += 1
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
    if _state.unreported_errors:
        _flush_error_count()
    return True, result


def _flush_error_count() -> None:
    """After an outage, add the errors this process counted to the shared Redis figure."""
    with _state.lock:
        n, _state.unreported_errors = _state.unreported_errors, 0
    try:
        _store().add_errors(n)
    except Exception:
        with _state.lock:
            _state.unreported_errors += n


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
    if not all(_looks_rendered(raw) for raw in items):
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


def shared_stats() -> dict[str, int] | None:
    """Counters summed over every process sharing this Redis; None without Redis."""
    store = _store()
    return store.stats() if isinstance(store, _RedisStore) else None


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

    Returns (has_more, items), or None when part of the answer lies below the tail. The Lua
    read script applies the same rule; keep them in step.
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


# --- stores -----------------------------------------------------------------------------
def _store() -> _RedisStore | _DjangoCacheStore:
    alias = settings.CHATENGINE_CACHE_ALIAS
    backend = caches[alias]
    if isinstance(backend, RedisCache):
        return _RedisStore(get_redis_connection(alias))
    return _DjangoCacheStore(backend)


_READ = """
local function miss(why)
  redis.call('HINCRBY', KEYS[3], 'miss', 1)
  return {why}
end
local row = redis.call('HMGET', KEYS[1], 'row', 'floor')
if not row[1] then return miss('absent') end
if row[1] ~= ARGV[1] then return miss('stale') end
local floor = tonumber(row[2])
local lo, hi = '-inf', '+inf'
if ARGV[2] ~= '' then lo = '(' .. ARGV[2] end
if ARGV[3] ~= '' then hi = '(' .. ARGV[3] end
local limit = tonumber(ARGV[5])
local rows
if ARGV[4] == 'asc' then
  rows = redis.call('ZRANGEBYSCORE', KEYS[2], lo, hi, 'WITHSCORES', 'LIMIT', 0, limit + 1)
else
  rows = redis.call('ZREVRANGEBYSCORE', KEYS[2], hi, lo, 'WITHSCORES', 'LIMIT', 0, limit + 1)
end
-- member, score, member, score, ...
local n = #rows / 2
local lower = tonumber(ARGV[2]) or 0
local more
if ARGV[4] == 'asc' then
  if lower < floor then return miss('outside') end
  more = n > limit
elseif n > limit then more = true
elseif lower >= floor then more = false
elseif n == limit then more = true
else return miss('outside') end
if n > limit then
  rows[2 * n] = nil
  rows[2 * n - 1] = nil
end
redis.call('HINCRBY', KEYS[3], 'hit', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
if more then table.insert(rows, 1, 1) else table.insert(rows, 1, 0) end
table.insert(rows, 1, 'hit')
return rows
"""

_WRITE_TAIL = """
local last = redis.call('HGET', KEYS[1], 'last')
-- A reader holding an older row must not replace a newer tail.
if last and tonumber(last) > tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[2])
for i = 5, #ARGV, 2 do redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'row', ARGV[1], 'last', ARGV[2], 'floor', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('HINCRBY', KEYS[3], 'rebuild', 1)
return 1
"""

_APPEND = """
local row = redis.call('HGET', KEYS[1], 'row')
if not row then return 0 end
if row ~= ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return -1
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
local n = redis.call('ZCARD', KEYS[2])
local size = tonumber(ARGV[5])
if n > size then
  local cut = redis.call('ZRANGE', KEYS[2], n - size - 1, n - size - 1, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - size - 1)
  redis.call('HSET', KEYS[1], 'floor', cut[2])
end
redis.call('HSET', KEYS[1], 'row', ARGV[2], 'last', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 1
"""

_scripts: dict[str, Any] = {}
_scripts_lock = threading.Lock()


def _script(client: Any, name: str, source: str) -> Any:
    # A Script object only uses its first client to compute the SHA; every call passes the
    # client to run on, so one object per process serves every connection pool.
    with _scripts_lock:
        if name not in _scripts:
            _scripts[name] = client.register_script(source)
        return _scripts[name]


class _RedisStore:
    def __init__(self, client: Any) -> None:
        self.client = client

    def _keys(self, session_id: Any) -> list[str]:
        return [session_key(session_id, "meta"), session_key(session_id, "tail")]

    def read(self, session_id, stamp, *, after, before, order, limit):
        reply = _script(self.client, "read", _READ)(
            keys=[*self._keys(session_id), STATS_KEY],
            args=[
                stamp,
                "" if after is None else after,
                "" if before is None else before,
                order,
                limit,
                _ttl_ms(),
            ],
            client=self.client,
        )
        status = reply[0].decode()
        if status != "hit":
            return status, False, []
        rows = reply[2:]
        return status, bool(reply[1]), [(int(rows[i + 1]), rows[i]) for i in range(0, len(rows), 2)]

    def write_tail(self, session_id, stamp, last, floor, entries):
        args: list[Any] = [stamp, last, floor, _ttl_ms()]
        for seq, raw in entries:
            args += [seq, raw]
        return _script(self.client, "write_tail", _WRITE_TAIL)(
            keys=[*self._keys(session_id), STATS_KEY], args=args, client=self.client
        )

    def append(self, session_id, previous_stamp, stamp, seq, raw, size):
        return _script(self.client, "append", _APPEND)(
            keys=self._keys(session_id),
            args=[previous_stamp, stamp, seq, raw, size, _ttl_ms()],
            client=self.client,
        )

    def invalidate(self, session_id):
        self.client.delete(*self._keys(session_id))

    def add_errors(self, n: int) -> None:
        self.client.hincrby(STATS_KEY, "error", n)

    def stats(self) -> dict[str, int]:
        raw = self.client.hgetall(STATS_KEY)
        found = {k.decode(): int(v) for k, v in raw.items()}
        return {name: found.get(name, 0) for name in ("hit", "miss", "error", "rebuild")}


# One lock per process: the local-memory cache is per process, so this makes each
# read-modify-write below as atomic as the Lua scripts are in Redis.
_local_lock = threading.Lock()


class _DjangoCacheStore:
    """The same operations over any Django cache (local memory in development)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def _key(self, session_id: Any) -> str:
        return session_key(session_id, "tail")

    def read(self, session_id, stamp, *, after, before, order, limit):
        with _local_lock:
            snapshot = self.backend.get(self._key(session_id))
        if snapshot is None:
            return "absent", False, []
        if snapshot["row"] != stamp:
            return "stale", False, []
        cut = slice_tail(
            [(seq, (seq, raw)) for seq, raw in snapshot["entries"]],
            snapshot["floor"],
            after=after,
            before=before,
            order=order,
            limit=limit,
        )
        if cut is None:
            return "outside", False, []
        self.backend.touch(self._key(session_id), settings.CHATENGINE_CACHE_TTL_S)
        return "hit", cut[0], cut[1]

    def write_tail(self, session_id, stamp, last, floor, entries):
        with _local_lock:
            current = self.backend.get(self._key(session_id))
            if current is not None and current["last"] > last:
                return 0
            snapshot = {"row": stamp, "last": last, "floor": floor, "entries": list(entries)}
            self.backend.set(self._key(session_id), snapshot, settings.CHATENGINE_CACHE_TTL_S)
            return 1

    def append(self, session_id, previous_stamp, stamp, seq, raw, size):
        with _local_lock:
            snapshot = self.backend.get(self._key(session_id))
            if snapshot is None:
                return 0
            if snapshot["row"] != previous_stamp:
                self.backend.delete(self._key(session_id))
                return -1
            entries = [*snapshot["entries"], (seq, raw)]
            if len(entries) > size:
                snapshot["floor"] = entries[-size - 1][0]
                entries = entries[-size:]
            snapshot.update(row=stamp, last=seq, entries=entries)
            self.backend.set(self._key(session_id), snapshot, settings.CHATENGINE_CACHE_TTL_S)
            return 1

    def invalidate(self, session_id):
        self.backend.delete(self._key(session_id))

    def add_errors(self, n: int) -> None:
        return None
