"""Cache events as the cache counts them: chatengine_cache_events_total, read since a reset."""

from prometheus_client import REGISTRY

from conversations import cache as history_cache

EVENTS = ("hit", "miss", "error", "rebuild")


def _now() -> dict[str, float]:
    return {
        event: REGISTRY.get_sample_value("chatengine_cache_events_total", {"event": event}) or 0.0
        for event in EVENTS
    }


class CacheEvents:
    def __init__(self) -> None:
        self._base = _now()

    def reset(self) -> None:
        """Count from here, and forget any back-off (so the next call tries Redis)."""
        history_cache.reset_backoff()
        self._base = _now()

    def __call__(self) -> dict[str, int]:
        now = _now()
        return {event: int(now[event] - self._base[event]) for event in EVENTS}


events = CacheEvents()
