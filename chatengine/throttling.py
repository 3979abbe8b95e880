"""Per-user rate limits, counted in the default cache (Redis in production) so every worker
shares one count.

Scopes: `reads` (GET/HEAD/OPTIONS), `writes` (everything else), or the view's own
`throttle_scope` (the reply view sets "replies", so LLM calls have their own, smaller budget).
Rates are CHATENGINE_THROTTLE_* in settings; over the limit the throttle refuses, and DRF's
`Throttled` becomes 429 `rate_limited` with `Retry-After` in the envelope.

The count is a fixed window per user and scope: one key, `throttle:<scope>:user:<id>`, that the
window's first request creates with the window's length as its expiry, and every request
increments. On Redis that is one script call, so one round trip whatever the rate (DRF's
SimpleRateThrottle read and rewrote a pickled list of every request time in the window, a cost
that grew with the rate, and two workers could each append to the list they had read and lose
a request). The limit is exact: the script runs atomically, so of N concurrent requests over the
budget exactly the budget gets through. A fixed window lets a client spend up to twice its rate
across a window boundary; the window starts at the client's first request, not on the clock.

When the cache cannot count (Redis down or slow) the limits fail open: requests go through
unthrottled. Like the history cache (chatengine.backoff), the throttle then leaves the cache
alone for CHATENGINE_CACHE_RETRY_S seconds, so requests do not each wait a socket timeout, and
logs `throttle.unavailable` at WARNING at most once a minute per process (DEBUG otherwise).
"""

import logging
import threading
import time

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from rest_framework.permissions import SAFE_METHODS
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from chatengine import redis
from chatengine.backoff import Backoff
from chatengine.events import log_event

CACHE_ALIAS = "default"
KEY_FORMAT = "throttle:{scope}:{ident}"

# One per process, for every throttle instance (DRF makes one per request).
backoff = Backoff()

# The count after this request and the window's milliseconds left. A key without an expiry is
# a window's first request (INCR created it): the window starts now.
_HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {count, left}
"""
_script = None
_script_lock = threading.Lock()


def throttle_scope(request, view) -> str:
    scope = getattr(view, "throttle_scope", None)
    if scope:
        return scope
    return "reads" if request.method in SAFE_METHODS else "writes"


def parse_rate(rate: str) -> tuple[int, int]:
    """`"600/min"` → (600, 60): requests allowed, and the window in seconds."""
    return SimpleRateThrottle.parse_rate(None, rate)


def hit(*, key: str, window_s: int) -> tuple[int, float]:
    """Count one request against `key`: the window's count so far, and its seconds left."""
    client = redis.client()  # a RedisCluster with REDIS_CLUSTER=1: the key is one slot
    if client is not None:
        count, left_ms = _hit_script(client)(
            keys=[caches[CACHE_ALIAS].make_key(key)], args=[window_s * 1000], client=client
        )
        return int(count), int(left_ms) / 1000
    return _hit_django_cache(caches[CACHE_ALIAS], key=key, window_s=window_s)


def _hit_script(client):
    # A Script object uses its first client only to compute the SHA; each call passes the
    # client to run on. EVALSHA is one round trip; the first call after Redis lost its script
    # cache costs one more (EVAL).
    global _script
    if _script is None:
        with _script_lock:
            if _script is None:
                _script = client.register_script(_HIT_SCRIPT)
    return _script


def _hit_django_cache(backend, *, key: str, window_s: int) -> tuple[int, float]:
    # Without Redis (`make run`, locmem): the same window, in the cache's own operations. Not
    # atomic across processes, which a per-process cache does not need.
    now = time.time()
    ends_key = f"{key}:ends"
    if backend.add(key, 1, window_s):
        backend.set(ends_key, now + window_s, window_s)
        return 1, float(window_s)
    try:
        count = backend.incr(key)
    except ValueError:  # the window ended between add() and incr(): this request opens one
        backend.set(key, 1, window_s)
        backend.set(ends_key, now + window_s, window_s)
        return 1, float(window_s)
    return count, max(backend.get(ends_key, now + window_s) - now, 0.0)


class UserScopedRateThrottle(BaseThrottle):
    def __init__(self):
        self.scope = "reads"
        self.wait_s: float | None = None

    def get_rate(self) -> str | None:
        # Read at request time (not at import, as DRF's class attribute does) so a settings
        # change, e.g. in a test, takes effect.
        rates = api_settings.DEFAULT_THROTTLE_RATES
        if self.scope not in rates:
            raise ImproperlyConfigured(f"No throttle rate for scope {self.scope!r}.")
        return rates[self.scope]

    def allow_request(self, request, view) -> bool:
        self.scope = throttle_scope(request, view)
        rate = self.get_rate()
        if rate is None:
            return True
        limit, window_s = parse_rate(rate)
        # A limiter that cannot count must not take the API down with the cache: let the
        # request through (fail open), and say so once a minute.
        if not backoff.available():
            return True
        try:
            count, left_s = hit(key=self.get_cache_key(request, view), window_s=window_s)
        except Exception as exc:
            warn = backoff.failed(retry_s=settings.CHATENGINE_CACHE_RETRY_S)
            log_event(
                "throttle.unavailable",
                level=logging.WARNING if warn else logging.DEBUG,
                scope=self.scope,
                error=type(exc).__name__,
            )
            return True
        if count <= limit:
            return True
        self.wait_s = left_s
        return False

    def wait(self) -> float | None:
        return self.wait_s

    def get_cache_key(self, request, view) -> str:
        user = request.user
        if user is not None and user.is_authenticated:
            ident = f"user:{user.pk}"
        else:  # only views open to anonymous callers get here
            ident = f"ip:{self.get_ident(request)}"
        return KEY_FORMAT.format(scope=self.scope, ident=ident)
