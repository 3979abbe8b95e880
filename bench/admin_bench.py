"""Support admin at scale: 10,000 sessions and 1,000,000 messages in PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chatengine_admin_bench \
        .venv/bin/python bench/admin_bench.py

Always works in its own database (`chatengine_admin_bench` unless --database says otherwise) on
the server DATABASE_URL points at, creating it if missing, so it never fills a real database;
it owns that database (a partial seed is truncated and redone).
Seeding (COPY, secondary indexes dropped during the load and rebuilt after) runs once; later runs
reuse the data. Then it renders admin pages through Django's test client as a superuser and
prints, per page, the number of SQL queries and the median time of a few warm runs. It also
runs the content-search SQL with and without the trigram index, side by side.
"""

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SESSIONS = 10_000
MESSAGES = 1_000_000
BIG_SESSION_MESSAGES = 10_000
USERS = 500
MODELS = ("gpt-4o-mini", "gpt-4o", "llama-3.1-8b")
# Planted phrases a support person might search for; everything else is common vocabulary.
NEEDLE = "blue widget broke"
NEEDLE_EVERY = 50_000
_VOCABULARY = (
    "the a to and of in is it you that for on with as are this be at have or from but not by "
    "order delivery refund account password reset invoice shipping tracking number payment card "
    "help please thanks question answer issue problem update email address customer support "
    "today tomorrow week month time again still never always maybe could would should weather "
    "travel hotel flight booking Lisbon Porto Madrid museum restaurant dinner lunch coffee city"
)
WORDS = _VOCABULARY.split()


def _database_url(name: str) -> str:
    base = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    parts = urlsplit(base)
    if not parts.scheme.startswith("postgres"):
        sys.exit("admin_bench needs PostgreSQL: set DATABASE_URL=postgres://...")
    return urlunsplit(parts._replace(path=f"/{name}"))


def _ensure_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            print(f"creating database {name}")
            conn.execute(f'CREATE DATABASE "{name}"')


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high))).capitalize() + "."


# Indexes rebuilt after the bulk load instead of maintained row by row during it.
_SECONDARY_INDEXES = ("message_content_upper_trgm_idx", "message_session_failed_idx")


def _seed(connection) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import transaction

    from conversations import bulk
    from conversations.models import ChatSession, Message

    if ChatSession.objects.count() >= SESSIONS and Message.objects.count() >= MESSAGES:
        print("data already seeded; reusing it")
        return
    started = time.perf_counter()
    rng = random.Random(7)
    User = get_user_model()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE conversations_message, conversations_chatsession")
    User.objects.filter(username__startswith="bench").delete()
    users = User.objects.bulk_create(
        User(username=f"bench{i:04d}", email=f"bench{i:04d}@example.com", password="!")
        for i in range(USERS)
    )
    User.objects.create(
        username="bench-admin",
        email="bench-admin@example.com",
        password=make_password(None),
        is_staff=True,
        is_superuser=True,
    )

    with connection.cursor() as cursor:
        index_defs = []
        for name in _SECONDARY_INDEXES:
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [name])
            row = cursor.fetchone()
            if row:
                index_defs.append(row[0])
                cursor.execute(f"DROP INDEX {name}")

    # Per-session message counts: one 10,000-message session, the rest share what is left.
    rest = MESSAGES - BIG_SESSION_MESSAGES
    per_session = [BIG_SESSION_MESSAGES] + [rest // (SESSIONS - 1)] * (SESSIONS - 1)
    per_session[1] += rest - sum(per_session[1:])
    now = datetime.now(UTC)
    connection.ensure_connection()
    raw = connection.connection  # the psycopg 3 connection under Django's wrapper
    # One transaction: the foreign keys (DEFERRABLE INITIALLY DEFERRED) are checked at commit,
    # after the sessions are loaded too.
    with transaction.atomic():
        session_rows = []
        message_count = 0
        for index, count in enumerate(per_session):
            session_id = uuid.uuid4()
            model = MODELS[index % len(MODELS)]
            last = now - timedelta(minutes=rng.randint(0, 90 * 24 * 60))
            start = last - timedelta(seconds=30 * count)
            total_tokens = 0
            rows = []
            for seq in range(1, count + 1):
                message_count += 1
                created = start + timedelta(seconds=30 * seq)
                if seq % 2:
                    content = _sentence(rng, 6, 30)
                    if message_count % NEEDLE_EVERY == 0:
                        content += f" My {NEEDLE} again."
                    tokens = len(content) // 4
                    row = Message(role="user", content=content)
                else:
                    content = " ".join(_sentence(rng, 8, 25) for _ in range(rng.randint(1, 3)))
                    tokens = len(content) // 4
                    failed = message_count % 997 == 0
                    row = Message(
                        role="assistant",
                        content=content,
                        model=model,
                        usage={
                            "prompt_tokens": total_tokens,
                            "completion_tokens": tokens,
                            "total_tokens": total_tokens + tokens,
                        },
                        finish_reason="error" if failed else "stop",
                        latency_ms=rng.randint(200, 4000),
                    )
                row.session_id, row.seq, row.token_count, row.created_at = (
                    session_id,
                    seq,
                    tokens,
                    created,
                )
                rows.append(row)
                total_tokens += tokens
            # The columns as the model declares them (conversations.bulk), one session a COPY.
            bulk.copy_messages(rows)
            session_rows.append(
                (
                    session_id,
                    users[index % USERS].pk,
                    f"Conversation {index}: " + " ".join(rng.choices(WORDS, k=3)),
                    "You are a helpful assistant.",
                    model,
                    '{"source": "bench"}',
                    index % 10 == 0,
                    count,
                    total_tokens,
                    last,
                    count,
                    start,
                    last,
                )
            )
        with (
            raw.cursor() as cur,
            cur.copy(
                "COPY conversations_chatsession (id, user_id, title, system_prompt, model, "
                "metadata, archived, message_count, total_tokens, last_message_at, last_seq, "
                "created_at, updated_at) FROM STDIN"
            ) as copy,
        ):
            for row in session_rows:
                copy.write_row(row)
    loaded = time.perf_counter()
    print(
        f"loaded {len(session_rows)} sessions, {message_count} messages in {loaded - started:.0f}s"
    )

    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '256MB'")
        for definition in index_defs:
            cursor.execute(definition)
        cursor.execute("ANALYZE conversations_chatsession")
        cursor.execute("ANALYZE conversations_message")
        cursor.execute("ANALYZE auth_user")
    print(f"rebuilt indexes and analyzed in {time.perf_counter() - loaded:.0f}s")


def _measure(client, url: str, runs: int):
    """(queries, median wall ms, median SQL ms, response) over `runs` warm requests."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm-up: caches, connection, plan
    walls, sqls, queries = [], [], 0
    for _ in range(runs):
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            response = client.get(url)
            walls.append((time.perf_counter() - started) * 1000)
        queries = len(ctx.captured_queries)
        sqls.append(sum(float(q["time"]) for q in ctx.captured_queries) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
    return queries, statistics.median(walls), statistics.median(sqls), response


def _sql_ms(connection, sql: str, params, *, index: bool) -> float:
    from django.db import transaction

    with transaction.atomic(), connection.cursor() as cursor:
        if not index:
            cursor.execute("SET LOCAL enable_bitmapscan = off")
            cursor.execute("SET LOCAL enable_indexscan = off")
        started = time.perf_counter()
        cursor.execute(sql, params)
        cursor.fetchall()
        return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="chatengine_admin_bench")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    url = _database_url(args.database)
    _ensure_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatengine.settings")
    os.environ.setdefault("DB_CONN_MAX_AGE", "600")
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "admin-bench-only")
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.urls import reverse

    from conversations import selectors
    from conversations.models import ChatSession, Message

    call_command("migrate", verbosity=0)
    _seed(connection)
    setup_test_environment(debug=False)  # records response.context, to count listed rows

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench-admin"))
    sessions = reverse("admin:conversations_chatsession_changelist")
    messages = reverse("admin:conversations_message_changelist")
    big = ChatSession.objects.order_by("-message_count").first()
    some_user = ChatSession.objects.select_related("user").order_by("pk").first().user
    transcript = reverse("admin:conversations_chatsession_change", args=[big.pk])
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    cases = [
        ("session list (50 a page)", sessions),
        ("filtered: has errors, not archived", f"{sessions}?has_errors=yes&archived__exact=0"),
        (
            "filtered: model + past 7 days",
            f"{sessions}?model=gpt-4o&last_message_at__gte="
            f"{(midnight - timedelta(days=7)).date()}+00:00:00%2B00:00",
        ),
        ("search: username", f"{sessions}?q={some_user.username}"),
        ("search: session id", f"{sessions}?q={big.pk}"),
        ("search: content phrase (sessions)", f"{sessions}?q={NEEDLE.replace(' ', '+')}"),
        ("search: content phrase (messages)", f"{messages}?q={NEEDLE.replace(' ', '+')}"),
        ("message list, unfiltered", messages),
        (f"transcript page 1 of {big.message_count}-msg session", transcript),
        ("transcript oldest page", f"{transcript}?transcript_page=100"),
    ]
    print(
        f"\n{ChatSession.objects.count()} sessions, "
        f"{Message.objects.count()} messages, PostgreSQL; median of {args.runs} warm runs\n"
    )
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print(f"| {'page':<45} | queries | median ms | of which SQL ms | rows |")
    print(f"|{'-' * 47}|---------|-----------|-----------------|------|")
    for label, case_url in cases:
        queries, ms, sql_ms, response = _measure(client, case_url, args.runs)
        context = response.context
        rows = "-"
        if context is not None and "cl" in context:
            rows = str(len(context["cl"].result_list))
        elif context is not None and "transcript" in context:
            rows = str(len(context["transcript"].messages))
        print(f"| {label:<45} | {queries:>7} | {ms:>9.1f} | {sql_ms:>15.1f} | {rows:>4} |")

    sql, params = selectors.session_ids_with_content(phrase=NEEDLE).query.sql_with_params()
    with_index = statistics.median(
        _sql_ms(connection, sql, params, index=True) for _ in range(args.runs)
    )
    without = statistics.median(_sql_ms(connection, sql, params, index=False) for _ in range(3))
    print(
        f"\ncontent-search SQL alone: trigram index {with_index:.1f} ms, "
        f"sequential scan {without:.1f} ms (x{without / with_index:.0f})"
    )


if __name__ == "__main__":
    main()
