"""What a process does when a service it can live without (Redis) fails: skip it for a
moment, and say so at most once a minute.

One `Backoff` per use of the service (the history cache, the throttles). After a failure,
`available()` is False for the retry delay, so requests go straight to their fallback instead
of each waiting a full socket timeout on a service that is slow or down; `failed()` says
whether this failure is the one of the minute to log at WARNING (the others go to DEBUG).
"""

import threading
import time

WARN_EVERY_S = 60.0


class Backoff:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._down_until = 0.0
            self._last_warning = -WARN_EVERY_S

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def failed(self, *, retry_s: float | None) -> bool:
        """Record a failure; skip the service for `retry_s` seconds (None: do not back off,
        e.g. bad data rather than an unavailable service). True if this one should warn."""
        now = time.monotonic()
        with self._lock:
            if retry_s is not None:
                self._down_until = now + retry_s
            warn = now - self._last_warning >= WARN_EVERY_S
            if warn:
                self._last_warning = now
        return warn
