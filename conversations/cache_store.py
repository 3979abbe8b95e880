"""The history cache's store: per session, a tail and its meta in Redis, changed only by Lua.

Keys, per session (the `{...}` is a Redis Cluster hash tag, so both keys of a session live in
one slot and every script touches that slot only; no script touches a key of another session
or a global one):
  `chatengine:v3:{<session id>}:tail`  a sorted set, score = seq, member = one message as its
                                       API JSON (cache_encoding.py);
  `chatengine:v3:{<session id>}:meta`  a hash: `row` (the stamp of the session row the tail
                                       reflects), `last` (its last_seq), `floor` (the tail holds
                                       every message with floor < seq <= last; 0 = all history).

The rules (a stale stamp is a miss; a rebuild never replaces a newer tail; an append extends
the tail only from exactly the previous stamp, else drops it; a page reaching below the floor
is `outside`) live in these scripts alone, and run atomically in Redis, so concurrent
processes cannot interleave them. cache.py decides when to call them and what a failure means.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from django.conf import settings
from redis.cluster import RedisCluster

KEY_PREFIX = "chatengine:v3"


def session_key(session_id: uuid.UUID | str, part: str) -> str:
    return f"{KEY_PREFIX}:{{{session_id}}}:{part}"


def _ttl_ms() -> int:
    return settings.CHATENGINE_CACHE_TTL_S * 1000


# The paging rule below has a Python twin, cache.slice_tail (its docstring says why there are
# two; a test in test_cache.py runs both over the same cases).
_READ = """
local function miss(why) return {why} end
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


class RedisStore:
    def __init__(self, client: Any) -> None:
        self.client = client

    def _keys(self, session_id: Any) -> list[str]:
        return [session_key(session_id, "meta"), session_key(session_id, "tail")]

    def read(self, session_id, stamp, *, after, before, order, limit):
        reply = _script(self.client, "read", _READ)(
            keys=self._keys(session_id),
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
            keys=self._keys(session_id), args=args, client=self.client
        )

    def append(self, session_id, previous_stamp, stamp, seq, raw, size):
        return _script(self.client, "append", _APPEND)(
            keys=self._keys(session_id),
            args=[previous_stamp, stamp, seq, raw, size, _ttl_ms()],
            client=self.client,
        )

    def invalidate(self, session_id):
        self.client.delete(*self._keys(session_id))

    def cached_sessions(self) -> int:
        """How many sessions have a cached tail (a SCAN: an operator's question, not a hot path)."""
        pattern = session_key("*", "meta")
        return sum(1 for _ in self.client.scan_iter(match=pattern, count=1000))

    def used_memory(self) -> int:
        """Bytes Redis uses in all (the tails share it with throttles and anything else)."""
        if isinstance(self.client, RedisCluster):
            # Summed over the masters (their replicas hold as much again).
            per_node = self.client.info("memory", target_nodes=RedisCluster.PRIMARIES)
            return sum(int(info["used_memory"]) for info in per_node.values())
        return int(self.client.info("memory")["used_memory"])
