"""Print what the history cache holds in Redis: cached sessions and Redis's memory."""

from django.core.management.base import BaseCommand, CommandError

from conversations import cache as history_cache


class Command(BaseCommand):
    help = "Show how many sessions have a cached history tail, and the memory Redis uses."

    def handle(self, *args, **options) -> None:
        # Hits, misses, errors and rebuilds are counted once, per server process, in
        # chatengine_cache_events_total (its /metrics): this command's own process has none.
        if not history_cache.enabled():
            self.stdout.write(
                "The history cache is off (no Redis configured, or CHATENGINE_CACHE_ENABLED=0): "
                "history is read from the database."
            )
            return
        try:
            sessions, memory = history_cache.store_facts()
        except Exception as exc:
            raise CommandError(f"Redis is unreachable ({type(exc).__name__}): {exc}") from exc
        self.stdout.write(f"{'cached sessions':<17}{sessions}")
        self.stdout.write(f"{'redis memory':<17}{memory / 2**20:.1f} MiB")
        self.stdout.write(
            "hits, misses, errors, rebuilds: chatengine_cache_events_total on each server "
            "process's /metrics"
        )
