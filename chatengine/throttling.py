"""Per-user rate limits, counted in the default cache (Redis in production) so every worker
shares one count.

Scopes: `reads` (GET/HEAD/OPTIONS), `writes` (everything else), or the view's own
`throttle_scope` (the reply view sets "replies", so LLM calls have their own, smaller budget).
Rates are CHATENGINE_THROTTLE_* in settings; over the limit DRF raises `Throttled`, which the
envelope handler renders as 429 `rate_limited` with `Retry-After`.

When the cache cannot count (Redis down or slow) the limits fail open: requests go through
unthrottled. Like the history cache (chatengine.backoff), the throttle then leaves the cache
alone for CHATENGINE_CACHE_RETRY_S seconds, so requests do not each wait a socket timeout, and
logs `throttle.unavailable` at WARNING at most once a minute per process (DEBUG otherwise).
"""

import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from rest_framework.permissions import SAFE_METHODS
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from chatengine.backoff import Backoff
from chatengine.events import log_event

# One per process, for every throttle instance (DRF makes one per request).
backoff = Backoff()


def throttle_scope(request, view) -> str:
    scope = getattr(view, "throttle_scope", None)
    if scope:
        return scope
    return "reads" if request.method in SAFE_METHODS else "writes"


class UserScopedRateThrottle(SimpleRateThrottle):
    scope = "reads"

    def __init__(self):
        # The scope, hence the rate, depends on the request: resolved in allow_request().
        pass

    def get_rate(self) -> str | None:
        # Read at request time (not at import, as DRF's class attribute does) so a settings
        # change, e.g. in a test, takes effect.
        rates = api_settings.DEFAULT_THROTTLE_RATES
        if self.scope not in rates:
            raise ImproperlyConfigured(f"No throttle rate for scope {self.scope!r}.")
        return rates[self.scope]

    def allow_request(self, request, view) -> bool:
        self.scope = throttle_scope(request, view)
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        # A limiter that cannot count must not take the API down with the cache: let the
        # request through (fail open), and say so once a minute.
        if not backoff.available():
            return True
        try:
            return super().allow_request(request, view)
        except Exception as exc:
            warn = backoff.failed(retry_s=settings.CHATENGINE_CACHE_RETRY_S)
            log_event(
                "throttle.unavailable",
                level=logging.WARNING if warn else logging.DEBUG,
                scope=self.scope,
                error=type(exc).__name__,
            )
            return True

    def get_cache_key(self, request, view) -> str:
        user = request.user
        if user is not None and user.is_authenticated:
            ident = f"user:{user.pk}"
        else:  # only views open to anonymous callers get here
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
