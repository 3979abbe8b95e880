"""Section 7 of `make bench`: message search over 1,000,000 messages of one user.

Each message is 30 words drawn uniformly from a 50,000-word filler vocabulary (every filler word
is in about 600 messages); the common word is in 10% of the messages, the rare one in 10.
Messages are seeded once and kept between runs (with the search indexes built after the COPY,
which is much faster than maintaining them row by row). The figures: requests/s and p50/p99 of
`GET /api/v1/search/?q=<word>` under wrk, and the query plan of the hit query
(EXPLAIN ANALYZE), which must show the GIN index.
"""

import os
import random
import time
import uuid

SEARCH_USER = "bench-search"
MESSAGES = int(os.environ.get("BENCH_SEARCH_MESSAGES", "1000000"))
PER_SESSION = 10_000
COMMON_WORD = "harbour"  # in 10% of the messages
COMMON_EVERY = 10
RARE_WORD = "zeppelin"  # in RARE_COUNT messages
RARE_COUNT = 10
FILLER_WORDS = 50_000
WORDS_PER_MESSAGE = 30
DISTINCT_TEXTS = 20_000  # cycled: the index and the ranking do not care that texts repeat


def _texts() -> list[str]:
    rng = random.Random(19)
    vocabulary = [f"f{n:05d}" for n in range(FILLER_WORDS)]
    return [" ".join(rng.choices(vocabulary, k=WORDS_PER_MESSAGE)) for _ in range(DISTINCT_TEXTS)]


def ensure_search_data(user_id: int) -> float | None:
    """MESSAGES messages for the search user; seeded only when the count differs. Returns the
    seconds spent seeding, or None when the data was already there."""
    from django.db import connection
    from django.db.models import Sum

    from bench.seed import SYSTEM_PROMPT, connect
    from conversations import services
    from conversations.models import ChatSession
    from conversations.search import SEARCH_INDEXES, tsvector_sql

    sessions = ChatSession.objects.filter(user_id=user_id)
    if (sessions.aggregate(n=Sum("message_count"))["n"] or 0) == MESSAGES:
        return None
    started = time.monotonic()
    services.delete_sessions(sessions=sessions)
    texts = _texts()
    rare_positions = set(range(7, MESSAGES, max(1, MESSAGES // RARE_COUNT)))
    # The message indexes are dropped for the load and built once after it.
    trgm = ("message_content_upper_trgm_idx", "UPPER(content) gin_trgm_ops")
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP INDEX IF EXISTS {trgm[0]}")
        cur.execute("DROP INDEX IF EXISTS message_content_search_idx")
        conn.commit()
        n = 0
        for first in range(0, MESSAGES, PER_SESSION):
            count = min(PER_SESSION, MESSAGES - first)
            session_id = str(uuid.uuid4())
            cur.execute(
                "INSERT INTO conversations_chatsession (id, user_id, title, system_prompt, "
                "model, metadata, archived, message_count, total_tokens, last_message_at, "
                "last_seq, created_at, updated_at) VALUES (%s, %s, %s, %s, '', '{}', false, "
                "%s, %s, now(), %s, now(), now())",
                [session_id, user_id, f"bench-search-{first}", SYSTEM_PROMPT, count, 0, count],
            )
            with cur.copy(
                "COPY conversations_message (session_id, seq, role, content, name, metadata, "
                "token_count, tool_call_id, created_at) FROM STDIN"
            ) as copy:
                for seq in range(1, count + 1):
                    text = texts[n % DISTINCT_TEXTS]
                    if n % COMMON_EVERY == 0:
                        text = f"{text} {COMMON_WORD}"
                    if n in rare_positions:
                        text = f"{RARE_WORD} {text}"
                    role = "user" if seq % 2 else "assistant"
                    copy.write_row((session_id, seq, role, text, "", "{}", 0, "", "now"))
                    n += 1
            conn.commit()
        table, column = SEARCH_INDEXES["message_content_search_idx"]
        cur.execute(
            f"CREATE INDEX message_content_search_idx ON {table} USING gin ({tsvector_sql(column)})"
        )
        cur.execute(
            f"CREATE INDEX IF NOT EXISTS {trgm[0]} ON conversations_message USING gin ({trgm[1]})"
        )
        cur.execute("ANALYZE conversations_message")
        conn.commit()
    connection.close()
    return time.monotonic() - started


def search_plan(user, word: str) -> str:
    """EXPLAIN ANALYZE of the hit query the API runs for `q=word` (first page)."""
    from django.db import connection

    from conversations import search

    captured: list[tuple[str, list]] = []

    def capture(execute, sql, params, many, context):
        if "UNION ALL" in sql:
            captured.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        search.search(user=user, q=word, limit=20)
    sql, params = captured[0]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def bench_search(results: dict, servers: list[str], *, measure, log) -> None:
    from django.contrib.auth import get_user_model

    from accounts import services as accounts
    from bench.lib import running_server

    user, _ = get_user_model().objects.get_or_create(username=SEARCH_USER)
    accounts.revoke_tokens_named(user=user, name="bench")
    _, token = accounts.create_token(user=user, name="bench")
    seeded = ensure_search_data(user.pk)
    if seeded is not None:
        log(f"  seeded {MESSAGES:,} messages and built the indexes in {seeded:.0f} s")
    kind = servers[0]
    section: dict = {
        "server": kind,
        "messages": MESSAGES,
        "words": {},
        "seeded_seconds": seeded,
    }
    with running_server(kind) as (base, _proc):
        for label, word, matches in (
            ("common", COMMON_WORD, MESSAGES // COMMON_EVERY),
            ("rare", RARE_WORD, RARE_COUNT),
        ):
            figures = measure(
                f"{base}/api/v1/search/?q={word}&limit=20", connections=4, token=token
            )
            plan = search_plan(user, word)
            figures.update(
                word=word,
                matches=matches,
                plan=plan,
                uses_index="message_content_search_idx" in plan,
            )
            section["words"][label] = figures
            log(
                f"  {label} ({word}, {matches:,} hits): {figures['rps']:.1f}/s, "
                f"p50 {figures['p50_ms']:.1f} ms, index used: {figures['uses_index']}"
            )
    results["search"] = section


def render(search: dict) -> list[str]:
    lines = [
        f"## 7. Search (GET /api/v1/search/?q=…&limit=20), {search['messages']:,} messages of "
        f"one user, {search['server']}, conc 4",
        "",
        "| word | messages matching | req/s | p50 ms | p99 ms | errors | GIN index in the plan |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, f in search["words"].items():
        lines.append(
            f"| {label} (`{f['word']}`) | {f['matches']:,} | {f['rps']:.1f} | "
            f"{f['p50_ms']:.1f} | {f['p99_ms']:.1f} | {f['errors']} | "
            f"{'yes' if f['uses_index'] else 'NO'} |"
        )
    lines += [
        "",
        "The matches come from one GIN index scan; a common word then visits each matching "
        "row once (to keep the user's), and only the newest `CHATENGINE_SEARCH_MAX_RANKED` "
        "(1,000) are ranked; a rare word is a few index and heap pages. Plans (EXPLAIN ANALYZE "
        "of the hit query):",
        "",
    ]
    for label, f in search["words"].items():
        lines += [f"{label}:", "", "```", f["plan"], "```", ""]
    return lines
