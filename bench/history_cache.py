"""History page latency and throughput: cached tail (Redis) vs PostgreSQL, on the same data.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/history_cache.py

Creates one session of 100,000 messages and one of 100 (COPY), then times
`selectors.list_messages` for the newest page (desc, limit 50: what "open conversation" and
the context builder read) and an older page inside the tail (desc, before=newest-100), once
served by the cache and once with the cache switched off. The session row is held, as in a
request after its ownership check, so only the history read differs. Deletes its data after.
"""

import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatengine.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402

from conversations import bulk, selectors, services  # noqa: E402
from conversations import cache as history_cache  # noqa: E402
from conversations.models import ChatSession, Message  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "500"))
SIZES = (100_000, 100)


def fill(session: ChatSession, n: int) -> None:
    now = datetime.now(UTC)
    bulk.copy_messages(
        Message(
            session_id=session.pk,
            seq=seq,
            role="user" if seq % 2 else "assistant",
            content=f"message {seq}: " + "lorem ipsum dolor sit amet " * 8,
            token_count=60,
            created_at=now,
        )
        for seq in range(1, n + 1)
    )
    ChatSession.objects.filter(pk=session.pk).update(
        last_seq=n, message_count=n, total_tokens=60 * n, last_message_at=now
    )
    session.refresh_from_db()


def cache_hits() -> float:
    """This process's chatengine_cache_events_total{event="hit"}."""
    return REGISTRY.get_sample_value("chatengine_cache_events_total", {"event": "hit"}) or 0.0


def timed(fn) -> list[float]:
    fn()  # warm: connection, tail rebuild
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def describe(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[int(len(ordered) * 0.95)] * 1000
    return p50, p95, len(samples) / sum(samples)


def main() -> None:
    if (
        connection.vendor != "postgresql"
        or "django_redis" not in settings.CACHES["default"]["BACKEND"]
    ):
        sys.exit("set DATABASE_URL to PostgreSQL and REDIS_URL to Redis")
    call_command("migrate", verbosity=0)
    drop(ChatSession.objects.filter(user__username__startswith="bench-"))  # an interrupted run
    get_user_model().objects.filter(username__startswith="bench-").delete()
    user = get_user_model().objects.create(username=f"bench-{uuid.uuid4().hex[:8]}")
    sessions = []
    try:
        for n in SIZES:
            session = services.create_session(user=user, title=f"bench {n}")
            sessions.append(session)
            start = time.perf_counter()
            fill(session, n)
            print(f"inserted {n:>7,} messages in {time.perf_counter() - start:.1f}s")
        print(
            f"\n{ROUNDS} calls each; tail {settings.CHATENGINE_CACHE_TAIL}, page 50, "
            f"Redis {settings.REDIS_URL}\n"
        )
        header = f"{'session':>9} {'page':<14}{'path':<7}{'p50 ms':>8}{'p95 ms':>8}{'pages/s':>9}"
        print(header + f"{'p50 ratio':>11}")
        print("-" * (len(header) + 11))
        for n, session in zip(SIZES, sessions, strict=True):
            pages = {
                "newest": {"order": "desc"},
                # Still inside the tail: the second page of a context walk.
                "older in tail": {"order": "desc", "before": session.last_seq - min(100, n // 2)},
            }
            for label, query in pages.items():

                def read(session=session, query=query):
                    return selectors.list_messages(session=session, limit=50, **query)

                with override_settings(CHATENGINE_CACHE_ENABLED=False):
                    db_page = read()
                    db = describe(timed(read))
                history_cache.reset_backoff()
                hits_before = cache_hits()
                cached = describe(timed(read))
                hits = cache_hits() - hits_before
                assert hits >= ROUNDS, f"the cache did not serve: {hits} hits"
                cache_page = read()
                same = [(m.pk, m.seq, m.content) for m in cache_page.items] == [
                    (m.pk, m.seq, m.content) for m in db_page.items
                ]
                assert same, "the two paths returned different pages"
                assert cache_page.has_more == db_page.has_more
                for path, (p50, p95, rate) in (("redis", cached), ("pg", db)):
                    ratio = f"{db[0] / cached[0]:>10.2f}x" if path == "redis" else ""
                    print(f"{n:>9,} {label:<14}{path:<7}{p50:>8.3f}{p95:>8.3f}{rate:>9.0f}{ratio}")
        print("\nratio = PostgreSQL p50 / Redis p50 (higher: the cache is faster)")
    finally:
        drop(ChatSession.objects.filter(pk__in=[s.pk for s in sessions]))
        user.delete()


def drop(sessions) -> None:
    """Delete bench sessions; messages by one SQL statement, not 100,000 delete signals."""
    ids = [s.pk for s in sessions]
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM conversations_message WHERE session_id = ANY(%s)", [ids])
    ChatSession.objects.filter(pk__in=ids).delete()
    for session_id in ids:
        history_cache.invalidate(session_id=session_id)


if __name__ == "__main__":
    main()
