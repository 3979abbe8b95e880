"""Print the history cache's hit, miss, error and rebuild counts."""

from django.core.management.base import BaseCommand, CommandError

from conversations import cache as history_cache


class Command(BaseCommand):
    help = "Show the history cache counters (hits, misses, errors, rebuilds)."

    def handle(self, *args, **options) -> None:
        # Counted inside Redis by the cache's own scripts, so the figure covers every worker
        # process; this command's own in-process counters would always read zero.
        try:
            shared = history_cache.shared_stats()
        except Exception as exc:
            raise CommandError(f"Redis is unreachable ({type(exc).__name__}): {exc}") from exc
        if shared is None:
            self.stdout.write(
                "No Redis configured: the local-memory cache counts per server process; "
                "see chatengine_cache_events_total in that process's metrics."
            )
            return
        total = shared["hit"] + shared["miss"]
        ratio = f"{shared['hit'] / total:.1%}" if total else "n/a"
        labels = {"hit": "hits", "miss": "misses", "error": "errors", "rebuild": "rebuilds"}
        for name, label in labels.items():
            self.stdout.write(f"{label:<9}{shared[name]}")
        self.stdout.write(f"{'hit rate':<9}{ratio}")
