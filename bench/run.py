"""`make bench`: chatengine against the floors set by its own parts, a plain DRF peer and
LangChain, side by side, in one run.

Every figure is the median of at least 3 runs after a warm-up. Load comes from wrk in a
separate process, on the same 2 cores as the server: absolute numbers are this machine's,
ratios are what to compare. Results: bench/results/latest.json and latest.md, and the
pictures endpoints.png and context.png beside them.
"""

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.lib import SERVERS, median_of, plain_ratios, running_server, wrk

SERVERS_DESCRIPTION = {kind: desc for kind, (desc, _argv) in SERVERS.items()}

RESULTS = Path(__file__).resolve().parent / "results"
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "2"))
WARMUP_SECONDS = float(os.environ.get("BENCH_WARMUP_SECONDS", "1"))
SPREAD_SESSIONS = 64
STREAM_SERVER = os.environ.get("BENCH_STREAM_SERVER", "uvicorn-pool")


def log(msg: str) -> None:
    print(msg, flush=True)


# --- set-up -------------------------------------------------------------------------------
def ensure_database() -> None:
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        sys.exit("bench needs PostgreSQL: set DATABASE_URL=postgres://...")
    admin = psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname="postgres",
        autocommit=True,
    )  # fmt: skip
    exists = admin.execute("SELECT 1 FROM pg_database WHERE datname=%s", [db["NAME"]]).fetchone()
    if not exists:
        admin.execute(f'CREATE DATABASE "{db["NAME"]}"')
    admin.close()


def setup_django() -> None:
    import django

    # Here, not at import: the tests import this module for its report and must keep their env.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chatengine_bench")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
    ensure_database_url_only = os.environ["DATABASE_URL"]
    assert ensure_database_url_only.startswith("postgres")
    django.setup()
    ensure_database()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def bench_user():
    from django.contrib.auth import get_user_model

    from accounts import services

    user, _ = get_user_model().objects.get_or_create(username="bench")
    # A key is shown only when made: each run replaces the previous run's token.
    services.revoke_tokens_named(user=user, name="bench")
    _, key = services.create_token(user=user, name="bench")
    return user, key


def fresh_sessions(user, count: int, prefix: str) -> list[str]:
    from conversations.models import ChatSession

    ChatSession.objects.filter(user=user, title__startswith=prefix).delete()
    sessions = [ChatSession(user=user, title=f"{prefix}{i}") for i in range(count)]
    ChatSession.objects.bulk_create(sessions)
    return [str(s.pk) for s in sessions]


# --- wrk scripts --------------------------------------------------------------------------
def lua_post_spread(session_ids: list[str]) -> str:
    paths = ",".join(f'"/api/v1/sessions/{sid}/messages/"' for sid in session_ids)
    return f"""
local paths = {{{paths}}}
local n = 0
wrk.method = "POST"
wrk.body = '{{"role": "user", "content": "How long does the ferry to Cacilhas take?"}}'
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  return wrk.format(nil, paths[(n % #paths) + 1])
end
"""


def measure(url: str, *, connections: int, token: str, lua: str = "") -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    # Warm-up: every worker imports lazily and opens its connections on first use.
    wrk(url, connections=connections, seconds=WARMUP_SECONDS, lua_request=lua, headers=headers)
    runs = [
        wrk(url, connections=connections, seconds=SECONDS, lua_request=lua, headers=headers)
        for _ in range(REPEATS)
    ]
    return median_of(runs)


# --- 1. append ----------------------------------------------------------------------------
def raw_sql_append(session_ids: list[str], *, connections: int, seconds: float) -> dict:
    """The append transaction, run directly with psycopg: lock row, insert, update counters."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(idx: int) -> None:
        conn = psycopg.connect(
            host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"]
        )
        mine, n = [], idx
        while time.monotonic() < stop_at:
            sid = session_ids[n % len(session_ids)]
            n += connections
            start = time.perf_counter()
            with conn.transaction():
                row = conn.execute(
                    "SELECT last_seq, archived FROM conversations_chatsession "
                    "WHERE id = %s FOR UPDATE",
                    [sid],
                ).fetchone()
                seq = row[0] + 1
                conn.execute(
                    "INSERT INTO conversations_message (session_id, seq, role, content, name, "
                    "metadata, token_count, tool_call_id, created_at) "
                    "VALUES (%s, %s, 'user', %s, '', '{}', 12, '', now()) RETURNING id",
                    [sid, seq, "How long does the ferry to Cacilhas take?"],
                ).fetchone()
                conn.execute(
                    "UPDATE conversations_chatsession SET last_seq = %s, "
                    "message_count = message_count + 1, total_tokens = total_tokens + 12, "
                    "last_message_at = now(), updated_at = now() WHERE id = %s",
                    [seq, sid],
                )
            mine.append(time.perf_counter() - start)
        conn.close()
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1000,
        "errors": 0,
        "requests": len(latencies),
    }


def bench_append(results: dict, servers: list[str]) -> None:
    user, token = bench_user()
    spread = fresh_sessions(user, SPREAD_SESSIONS, "bench-append-spread-")
    hot = fresh_sessions(user, 1, "bench-append-hot-")
    shapes = {"spread": spread, "hot": hot}
    section = results.setdefault("append", {"servers": {}, "raw_sql": {}})

    for shape, ids in shapes.items():
        for conns in (1, 16):
            raw_sql_append(ids, connections=conns, seconds=1)  # warm-up
            runs = [raw_sql_append(ids, connections=conns, seconds=SECONDS) for _ in range(REPEATS)]
            section["raw_sql"][f"{shape}-c{conns}"] = median_of(runs)
            log(
                f"  raw SQL {shape} c{conns}: {section['raw_sql'][f'{shape}-c{conns}']['rps']:.0f}/s"
            )

    for kind in servers:
        figures: dict = {}
        with running_server(kind) as (base, _proc):
            for conns in (1, 16):
                figures[f"floor-c{conns}"] = measure(
                    f"{base}/bench/floor/constant/", connections=conns, token=token
                )
                for shape, ids in shapes.items():
                    figures[f"{shape}-c{conns}"] = measure(
                        f"{base}/", connections=conns, token=token, lua=lua_post_spread(ids)
                    )
        section["servers"][kind] = figures
        log(
            f"  {kind}: floor c16 {figures['floor-c16']['rps']:.0f}/s, "
            f"append spread c16 {figures['spread-c16']['rps']:.0f}/s"
        )


# --- 2. history page ----------------------------------------------------------------------
def bench_history(results: dict, servers: list[str]) -> None:
    from bench.seed import seed_session

    user, token = bench_user()
    from conversations.models import ChatSession

    ChatSession.objects.filter(user=user, title__startswith="bench-history-").delete()
    sessions = {
        "100": seed_session(user_id=user.pk, title="bench-history-100", messages=100),
        "100000": seed_session(user_id=user.pk, title="bench-history-100000", messages=100_000),
    }
    settle_database()
    kind = servers[0]
    section: dict = {"server": kind, "paths": {}}
    page_file = RESULTS / ".floor-page.json"
    RESULTS.mkdir(exist_ok=True)
    for label, env in (
        ("redis", {"CHATENGINE_CACHE_ENABLED": "1"}),
        ("postgres", {"CHATENGINE_CACHE_ENABLED": "0"}),
    ):
        with running_server(kind, env_extra={**env, "BENCH_FLOOR_PAGE": str(page_file)}) as (
            base,
            _proc,
        ):
            figures: dict = {}
            for size, sid in sessions.items():
                url = f"{base}/api/v1/sessions/{sid}/messages/?limit=50&order=desc"
                if label == "redis" and size == "100000":
                    page_file.write_bytes(_fetch_bytes(url, token))
                figures[size] = measure(url, connections=16, token=token)
            if label == "redis":
                figures["floor-page"] = measure(
                    f"{base}/bench/floor/page/", connections=16, token=token
                )
                figures["floor-constant"] = measure(
                    f"{base}/bench/floor/constant/", connections=16, token=token
                )
            section["paths"][label] = figures
            log(f"  {label}: " + ", ".join(f"{k} {v['rps']:.0f}/s" for k, v in figures.items()))
    results["history"] = section


def _fetch_bytes(url: str, token: str, *, scheme: str = "Bearer") -> bytes:
    """GET `url` (raises on any answer but 2xx)."""
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"{scheme} {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


# --- 4. context build and its raw-read floor ----------------------------------------------
CONTEXT_SIZES = (100, 10_000, 100_000)
CONTEXT_MODEL = "bench-8k-window"
# The summary strategy (issue 17) is measured at the two ends: its build must follow the
# window too (one more indexed read: the latest summary).
SUMMARY_CONTEXT_SIZES = (100, 100_000)


def settle_database() -> None:
    """Write out now what seeding left dirty (CHECKPOINT), so that the timings that follow do
    not share the disk with it: seeding 110,000 messages, then timing millisecond builds
    while the checkpointer flushed them, gave 50 % I/O wait and medians 3-8x apart."""
    import psycopg

    from bench.seed import connect

    try:
        with connect() as conn:
            conn.autocommit = True
            conn.execute("CHECKPOINT")
    except psycopg.Error as exc:  # not a superuser (or pg_checkpoint): time what is there
        log(f"  CHECKPOINT refused ({exc}); timings may share the disk with seeding")


def bench_context(results: dict, servers: list[str]) -> None:
    from bench.seed import seed_session
    from conversations.models import ChatSession
    from llm.services import build_context

    user, _token = bench_user()
    ChatSession.objects.filter(user=user, title__startswith="bench-context-").delete()
    figures, summary_figures = {}, {}
    seeded = {
        size: seed_session(user_id=user.pk, title=f"bench-context-{size}", messages=size)
        for size in CONTEXT_SIZES
    }
    settle_database()
    for size, sid in seeded.items():
        # An unlisted model gets LLM_DEFAULT_CONTEXT_TOKENS (8192): a window of ~100 turns,
        # so the 100-message session fills it too and the sizes compare like for like.
        ChatSession.objects.filter(pk=sid).update(model=CONTEXT_MODEL)
        session = ChatSession.objects.get(pk=sid)
        ctx = build_context(session)  # warm-up: fills the cache tail, loads the encoding
        floor = RawWindowRead(sid, ctx.messages_included)
        build_ms, floor_ms = _alternated_median_ms(
            [lambda s=session: build_context(s), floor], turns=CONTEXT_TURNS
        )
        figures[str(size)] = {
            "median_ms": build_ms,
            "raw_floor_ms": floor_ms,
            "messages_included": ctx.messages_included,
            "tokens": ctx.tokens,
            "budget": ctx.budget,
        }
        floor.close()
        f = figures[str(size)]
        log(f"  {size}: {f['median_ms']:.2f} ms (raw read floor {f['raw_floor_ms']:.2f} ms)")
        if size in SUMMARY_CONTEXT_SIZES:
            summary_figures[str(size)] = _bench_summary_context(session)
            f = summary_figures[str(size)]
            log(f"  {size}, summary strategy: {f['median_ms']:.2f} ms")
    results["context"] = figures
    results["context_summary"] = summary_figures


def _bench_summary_context(session) -> dict:
    """The same session under the summary strategy, with a stored summary (of the cap's size)
    of everything older than the window: what every later turn builds."""
    from django.conf import settings

    from conversations.models import ChatSession, Summary
    from llm.services import build_context

    ChatSession.objects.filter(pk=session.pk).update(context_strategy="summary")
    session.refresh_from_db()
    evicted_to = build_context(session).evicted_to_seq
    if evicted_to is not None:
        Summary.objects.create(
            session=session,
            covers_from_seq=1,
            covers_to_seq=evicted_to,
            text="word " * (settings.LLM_SUMMARY_MAX_TOKENS - 40),
            token_count=settings.LLM_SUMMARY_MAX_TOKENS,
            model="bench",
        )
    ctx = build_context(session)
    return {
        "median_ms": _median_ms(lambda s=session: build_context(s), turns=CONTEXT_TURNS)[0],
        "messages_included": ctx.messages_included,
        "tokens": ctx.tokens,
        "budget": ctx.budget,
        "summary_covers_to": ctx.summary.covers_to_seq if ctx.summary else None,
    }


# Builds timed per run: one takes about a millisecond, so the machine's noise, not the cost,
# decides a median of a few; 200 of each cost well under a second.
CONTEXT_TURNS = 200


def _alternated_median_ms(calls: list, *, turns: int) -> list[float]:
    """For each call, the median over REPEATS rounds of its median time of `turns` runs; the
    calls take turns within each round, so a change in the machine's load falls on all."""
    runs: list[list[float]] = [[] for _ in calls]
    for _ in range(REPEATS):
        for timings_of, call in zip(runs, calls, strict=True):
            timings = []
            for _ in range(turns):
                start = time.perf_counter()
                call()
                timings.append(time.perf_counter() - start)
            timings_of.append(statistics.median(timings) * 1000)
    return [statistics.median(r) for r in runs]


def _median_ms(call, *, turns: int, min_seconds: float = 0.0) -> tuple[float, object]:
    """Median over REPEATS runs of the median time of `turns` calls (fewer once a run has
    taken `min_seconds`: the LangChain peer takes seconds per turn at 100,000 messages),
    and the last call's result."""
    runs = []
    result = None
    for _ in range(REPEATS):
        timings: list[float] = []
        run_started = time.perf_counter()
        while len(timings) < turns:
            start = time.perf_counter()
            result = call()
            timings.append(time.perf_counter() - start)
            if min_seconds and time.perf_counter() - run_started >= min_seconds:
                break
        runs.append(statistics.median(timings) * 1000)
    return statistics.median(runs), result


class RawWindowRead:
    """The floor under a context build: what any implementation must read, done with psycopg
    on one open connection: the session row (system prompt, model) and the newest `window`
    messages' sendable columns, by the (session, seq) index."""

    def __init__(self, session_id: str, window: int):
        from bench.seed import connect

        self.conn = connect()
        self.conn.autocommit = True
        self.args = (session_id, window)
        self()  # warm-up: the connection's first statements

    def __call__(self) -> list[tuple]:
        session_id, window = self.args
        self.conn.execute(
            "SELECT system_prompt, model FROM conversations_chatsession WHERE id = %s",
            [session_id],
        ).fetchone()
        return self.conn.execute(
            "SELECT seq, role, content, name, tool_calls, tool_call_id, token_count "
            "FROM conversations_message WHERE session_id = %s ORDER BY seq DESC LIMIT %s",
            [session_id, window],
        ).fetchall()

    def close(self) -> None:
        self.conn.close()


# --- 4b. the LangChain peer ---------------------------------------------------------------
def bench_langchain(results: dict, servers: list[str]) -> None:
    """PostgresChatMessageHistory.messages + trim_messages per turn, at the context section's
    sizes and budget, on the same PostgreSQL (bench/langchain_peer.py)."""
    ensure_bench_extras()
    from django.conf import settings

    from bench import langchain_peer
    from bench.seed import SYSTEM_PROMPT, TURN, connect
    from llm.context import compute_budget
    from llm.services import context_window_for_model
    from llm.tokens import counter_for_model

    budget = compute_budget(
        context_window=context_window_for_model(CONTEXT_MODEL),
        max_output_tokens=settings.LLM_DEFAULT_MAX_OUTPUT_TOKENS,
        safety_margin=settings.LLM_CONTEXT_SAFETY_MARGIN,
    )
    counter = counter_for_model(CONTEXT_MODEL)
    figures: dict = {}
    with connect() as conn:
        for size in CONTEXT_SIZES:
            started = time.monotonic()
            if langchain_peer.ensure_history(conn, size=size, content=TURN):
                log(f"  seeded {size:,} LangChain messages in {time.monotonic() - started:.0f} s")

            def one_turn(size=size):
                return langchain_peer.turn(
                    conn, size=size, system_prompt=SYSTEM_PROMPT, budget=budget, counter=counter
                )

            if size == CONTEXT_SIZES[0]:
                one_turn()  # warm-up: imports, the encoding, the connection's first statements
            # A turn takes seconds at 100,000 messages: a run stops after 1 s.
            ms, kept = _median_ms(one_turn, turns=10, min_seconds=1.0)
            figures[str(size)] = {
                "median_ms": ms,
                # History messages kept (without the system prompt), as in the context section.
                "messages_included": len(kept) - 1,
                "budget": budget,
            }
            log(f"  {size}: {figures[str(size)]['median_ms']:.1f} ms")
    results["langchain"] = figures


BENCH_REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"


def ensure_bench_extras() -> None:
    """Install bench/requirements.txt into this venv when its packages are missing (as the
    Makefile installs wrk): they are the bench's only, not chatengine's."""
    import importlib.util
    import subprocess

    if all(importlib.util.find_spec(m) for m in ("langchain_postgres", "matplotlib")):
        return
    log("  installing the bench's extra requirements (bench/requirements.txt)")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "-r", str(BENCH_REQUIREMENTS)],
        check=True,
    )
    importlib.invalidate_caches()


# --- 3. the plain DRF peer ----------------------------------------------------------------
PLAIN_HISTORY_MESSAGES = 10_000
PLAIN_CONNECTIONS = 16
PLAIN_THROTTLE_RATE = "10000000/min"


def plain_token(username: str) -> str:
    """The plain peer's own stock DRF token for `username` (bench/plain/issue_token.py)."""
    import subprocess

    from bench.lib import ROOT, server_env

    out = subprocess.run(
        [sys.executable, "-m", "bench.plain.issue_token", username],
        cwd=ROOT, env=server_env({"DJANGO_SETTINGS_MODULE": "bench.plain.settings"}),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.split()[-1]


def bench_plain(results: dict, servers: list[str]) -> None:
    """chatengine against a plain DRF implementation of the same endpoints over the same
    tables (bench/plain/), both under gunicorn with 2 sync workers, running side by side; the
    rounds alternate between them so a change in the machine's load hits both alike."""
    from contextlib import ExitStack

    from bench.seed import seed_session
    from conversations.models import ChatSession

    user, token = bench_user()
    tokens = {"plain": ("Token", plain_token(user.username)), "chatengine": ("Bearer", token)}
    ChatSession.objects.filter(user=user, title__startswith="bench-plain-").delete()
    history = seed_session(
        user_id=user.pk, title="bench-plain-history", messages=PLAIN_HISTORY_MESSAGES
    )
    history_path = f"/api/v1/sessions/{history}/messages/?limit=50&order=desc"
    # Fresh empty sessions for each side, so neither appends behind the other's back (the
    # plain peer does not keep chatengine's cache in step).
    spread = {
        side: lua_post_spread(fresh_sessions(user, SPREAD_SESSIONS, f"bench-plain-{side}-"))
        for side in tokens
    }
    settle_database()
    # chatengine with its whole per-request stack, throttling included (the other sections
    # leave it off), at rates the run cannot reach: the plain peer has no throttle to pay for.
    throttled = {
        f"CHATENGINE_THROTTLE_{scope}": PLAIN_THROTTLE_RATE for scope in ("READS", "WRITES")
    }
    with ExitStack() as stack:
        bases = {
            name: stack.enter_context(running_server(kind, env_extra=env))[0]
            for name, kind, env in (
                ("plain", "plain-drf", {}),
                ("chatengine", "gunicorn-sync-2", {**throttled, "CHATENGINE_CACHE_ENABLED": "1"}),
                (
                    "chatengine-nocache",
                    "gunicorn-sync-2",
                    {**throttled, "CHATENGINE_CACHE_ENABLED": "0"},
                ),
            )
        }
        # endpoint: [(who, server, path, lua)], measured round by round in turn.
        endpoints = {
            "noop": [
                ("plain", "plain", "/bench/floor/constant/", ""),
                ("chatengine", "chatengine", "/bench/floor/constant/", ""),
            ],
            "history": [
                ("plain", "plain", history_path, ""),
                ("chatengine-redis", "chatengine", history_path, ""),
                ("chatengine-postgres", "chatengine-nocache", history_path, ""),
            ],
            "append": [
                ("plain", "plain", "/", spread["plain"]),
                ("chatengine", "chatengine", "/", spread["chatengine"]),
            ],
        }
        for contenders in endpoints.values():
            for _who, server, path, lua in contenders:
                if not lua:  # a 500 page measured as fast as a real answer is no result
                    scheme, key = tokens["plain" if server == "plain" else "chatengine"]
                    _fetch_bytes(bases[server] + path, key, scheme=scheme)
        figures: dict = {}
        for endpoint, contenders in endpoints.items():
            runs: dict[str, list[dict]] = {who: [] for who, *_ in contenders}
            for round_ in range(REPEATS + 1):  # round 0 is the warm-up
                # Every other round in reverse order: whoever goes first has no edge.
                for who, server, path, lua in contenders[:: 1 if round_ % 2 else -1]:
                    scheme, key = tokens["plain" if server == "plain" else "chatengine"]
                    seconds = WARMUP_SECONDS if round_ == 0 else SECONDS
                    run = wrk(
                        bases[server] + path, connections=PLAIN_CONNECTIONS, seconds=seconds,
                        lua_request=lua, headers={"Authorization": f"{scheme} {key}"},
                    )  # fmt: skip
                    if round_:
                        runs[who].append(run)
            figures[endpoint] = {who: median_of(r) for who, r in runs.items()}
            log(
                f"  {endpoint}: "
                + ", ".join(f"{who} {f['rps']:.0f}/s" for who, f in figures[endpoint].items())
            )
    results["plain"] = {
        "server": SERVERS_DESCRIPTION["gunicorn-sync-2"],
        "connections": PLAIN_CONNECTIONS,
        "history_messages": PLAIN_HISTORY_MESSAGES,
        "endpoints": figures,
    }


# --- 5. reply overhead --------------------------------------------------------------------
REPLY_HISTORY = int(os.environ.get("BENCH_REPLY_HISTORY", "20"))
QUESTION = "Question {i}: what is the best viewpoint?"


def _sse_timings(urls: list[str], token: str) -> list[tuple[float, float]]:
    """(time to first delta, total) for one streamed reply per URL, in seconds."""
    import httpx2 as httpx  # the HTTP client the openai SDK itself depends on

    out = []
    with httpx.Client(timeout=30) as client:
        for i, url in enumerate(urls):
            start = time.perf_counter()
            first = None
            with client.stream(
                "POST",
                url,
                headers={"Authorization": f"Bearer {token}"},
                json={"content": QUESTION.format(i=i)},
            ) as resp:
                resp.raise_for_status()
                for line in resp.iter_lines():
                    if first is None and line.startswith("event: message.delta"):
                        first = time.perf_counter() - start
                    if line.startswith("event: message.completed"):
                        break
            out.append((first if first is not None else float("nan"), time.perf_counter() - start))
    return out


def _sdk_timings(base_url: str, n: int) -> list[tuple[float, float]]:
    """The floor: the same conversation (system prompt, REPLY_HISTORY turns, the question)
    sent straight to the server with the openai SDK."""
    from openai import OpenAI

    from bench.seed import SYSTEM_PROMPT, TURN

    client = OpenAI(base_url=base_url, api_key="bench", max_retries=0)
    history = [
        {"role": "user" if seq % 2 else "assistant", "content": TURN}
        for seq in range(1, REPLY_HISTORY + 1)
    ]
    out = []
    for i in range(n):
        start = time.perf_counter()
        first = None
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": SYSTEM_PROMPT},
                *history,
                {"role": "user", "content": QUESTION.format(i=i)},
            ],
            stream=True,
        )
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
        out.append((first, time.perf_counter() - start))
    return out


def bench_reply(results: dict, servers: list[str]) -> None:
    import subprocess

    from bench.lib import free_port, wait_for_port
    from bench.seed import seed_session
    from conversations.models import ChatSession

    user, token = bench_user()
    ChatSession.objects.filter(user=user, title__startswith="bench-reply-").delete()
    n = int(os.environ.get("BENCH_REPLIES", "40"))
    # One fresh session per reply, each with the same history, so every reply sends the same
    # context (the floor sends that same conversation).
    session_ids = [
        seed_session(user_id=user.pk, title=f"bench-reply-{i}", messages=REPLY_HISTORY)
        for i in range(3 + n * REPEATS)
    ]
    settle_database()
    port = free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "llm.tests.fake_openai", "--port", str(port), "--latency-ms", "50"],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        base_url = f"http://127.0.0.1:{port}/v1"
        _sdk_timings(base_url, 3)
        env = {
            "LLM_PROVIDER": "openai",
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": "bench-key",
            "LLM_MODEL": "gpt-4o-mini",
            "LLM_MAX_RETRIES": "0",
        }
        with running_server(STREAM_SERVER, env_extra=env) as (base, _proc):
            urls = [f"{base}/api/v1/sessions/{sid}/reply/stream/" for sid in session_ids]
            _sse_timings(urls[:3], token)
            # Rounds alternate between the floor and chatengine, so a change in the machine's
            # load falls on both.
            floor_runs, engine_runs = [], []
            for r in range(REPEATS):
                floor_runs.append(_sdk_timings(base_url, n))
                engine_runs.append(_sse_timings(urls[3 + r * n : 3 + (r + 1) * n], token))
    finally:
        fake.terminate()
        fake.wait(timeout=10)

    def p50s(runs, idx):
        return statistics.median(statistics.median(t[idx] for t in run) for run in runs) * 1000

    figures = {
        "sdk_direct": {"ttft_ms": p50s(floor_runs, 0), "total_ms": p50s(floor_runs, 1)},
        "engine_stream": {"ttft_ms": p50s(engine_runs, 0), "total_ms": p50s(engine_runs, 1)},
        "fake_latency_ms": 50,
        "replies_per_run": n,
        "history_messages": REPLY_HISTORY,
    }
    figures["added_ttft_ms"] = (
        figures["engine_stream"]["ttft_ms"] - figures["sdk_direct"]["ttft_ms"]
    )
    figures["added_total_ms"] = (
        figures["engine_stream"]["total_ms"] - figures["sdk_direct"]["total_ms"]
    )
    results["reply"] = figures
    log(
        f"  added: ttft {figures['added_ttft_ms']:.1f} ms, total {figures['added_total_ms']:.1f} ms"
    )


# --- 6. memory ----------------------------------------------------------------------------
# Runs the command and prints its peak RSS. Not os.wait4 on a child of this process: Linux
# keeps a process's peak RSS across fork and exec, so a command started from this (large)
# process reports at least this process's own peak. This small launcher's children don't.
_PEAK_RSS_LAUNCHER = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def _peak_rss_kb(argv: list[str], env: dict[str, str]) -> int:
    """Peak RSS (kB) of `argv` run to completion, measured by a fresh launcher process."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_LAUNCHER, *argv],
        cwd=Path(__file__).resolve().parent.parent, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{argv} failed: {out.stderr[-2000:]}")
    return int(out.stdout.split()[-1])


EXPORT_PER_SESSION = 10_000


def ensure_export_data(*, username: str, count: int) -> float | None:
    """`count` messages for the export user, kept between runs (seeding 1,000,000 takes about
    a minute, mostly the trigram index); reseeded only when the count differs. Returns the
    seconds spent seeding, or None when the data was already there."""
    from concurrent.futures import ThreadPoolExecutor

    from django.contrib.auth import get_user_model
    from django.db.models import Sum

    from bench.seed import seed_session
    from conversations import services
    from conversations.models import ChatSession

    user, _ = get_user_model().objects.get_or_create(username=username)
    sessions = ChatSession.objects.filter(user=user)
    if (sessions.aggregate(n=Sum("message_count"))["n"] or 0) == count:
        return None
    started = time.monotonic()
    services.delete_sessions(sessions=sessions)
    sizes = [min(EXPORT_PER_SESSION, count - i) for i in range(0, count, EXPORT_PER_SESSION)]
    # Two connections: the server side (index maintenance) is most of the cost, on 2 cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(
            pool.map(
                lambda item: seed_session(
                    user_id=user.pk, title=f"bench-export-{item[0]}", messages=item[1]
                ),
                enumerate(sizes),
            )
        )
    return time.monotonic() - started


def bench_memory(results: dict, servers: list[str]) -> None:
    from bench.lib import process_tree_rss_kb, server_env
    from bench.seed import seed_session
    from conversations.models import ChatSession

    user, token = bench_user()
    figures: dict = {}
    sid = ChatSession.objects.filter(user=user, title="bench-history-100").values_list(
        "pk", flat=True
    ).first() or seed_session(user_id=user.pk, title="bench-history-100", messages=100)
    kind = servers[0]
    with running_server(kind) as (base, proc):
        url = f"{base}/api/v1/sessions/{sid}/messages/?limit=50"
        total = 0
        while total < 10_000:
            total += wrk(
                url, connections=8, seconds=2, headers={"Authorization": f"Bearer {token}"}
            )["requests"]
        rss = process_tree_rss_kb(proc.pid)
    figures["worker"] = {"server": kind, "requests": total, "peak_rss_kb_by_pid": rss}
    log(f"  {kind} after {total} requests: peak RSS kB {sorted(rss.values())}")

    env = server_env()
    python = sys.executable
    baseline = _peak_rss_kb([python, "manage.py", "check"], env)
    figures["export"] = {"django_baseline_kb": baseline}
    for label, count in (
        ("10k", 10_000),
        ("1M", int(os.environ.get("BENCH_EXPORT_MESSAGES", "1000000"))),
    ):
        username = f"bench-export-{count}"
        seeded = ensure_export_data(username=username, count=count)
        started = time.monotonic()
        kb = _peak_rss_kb(
            [python, "manage.py", "export_sessions", "--user", username, "--output", os.devnull],
            env,
        )
        seconds = time.monotonic() - started
        figures["export"][label] = {"messages": count, "peak_rss_kb": kb, "seconds": seconds}
        log(
            f"  export {label}: peak RSS {kb} kB (django baseline {baseline} kB), "
            f"{seconds:.1f} s{'' if seeded is None else f' (seeded in {seeded:.0f} s)'}"
        )
    results["memory"] = figures


# --- 7. search ---------------------------------------------------------------------------
def bench_search(results: dict, servers: list[str]) -> None:
    from bench.search_bench import bench_search as run

    run(results, servers, measure=measure, log=log)


# --- report -------------------------------------------------------------------------------
def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def render_markdown(results: dict) -> str:
    lines = [
        "# chatengine benchmarks",
        "",
        f"Run {results['meta']['started']} on {results['meta']['machine']}. "
        "Load generator (wrk) and server share the same 2 cores; every figure is the median "
        f"of {REPEATS} runs of {SECONDS:.0f}s after a warm-up.",
        "",
    ]
    append = results.get("append")
    if append:
        lines += [
            "## 1. Append (POST /api/v1/sessions/{id}/messages/)",
            "",
            "| server | shape | conc | req/s | p50 ms | p99 ms | errors | vs bare DRF floor | vs raw SQL |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for kind, figs in append["servers"].items():
            for conns in (1, 16):
                floor = figs[f"floor-c{conns}"]
                lines.append(
                    f"| {kind} | bare DRF floor | {conns} | {floor['rps']:.0f} | "
                    f"{floor['p50_ms']:.2f} | {floor['p99_ms']:.2f} | {floor['errors']} | 1.00 | |"
                )
                for shape in ("spread", "hot"):
                    f = figs[f"{shape}-c{conns}"]
                    raw = append["raw_sql"][f"{shape}-c{conns}"]
                    lines.append(
                        f"| {kind} | append {shape} | {conns} | {f['rps']:.0f} | "
                        f"{f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {f['errors']} | "
                        f"{ratio(f['rps'], floor['rps'])} | {ratio(f['rps'], raw['rps'])} |"
                    )
        lines += ["", "Raw SQL floor (psycopg, same transaction, threads):", ""]
        lines += ["| shape | conc | txn/s | p50 ms | p99 ms |", "| --- | --- | --- | --- | --- |"]
        for key, f in append["raw_sql"].items():
            shape, conns = key.split("-c")
            lines.append(
                f"| {shape} | {conns} | {f['rps']:.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} |"
            )
        lines.append("")
    history = results.get("history")
    if history:
        paths = history["paths"]
        floor = paths["redis"]["floor-page"]
        const = paths["redis"]["floor-constant"]
        lines += [
            f"## 2. History page (GET .../messages/?limit=50&order=desc), {history['server']}, conc 16",
            "",
            "| path | session | req/s | p50 ms | p99 ms | errors | vs memory-page floor | vs constant floor |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| floor: same JSON bytes from memory | - | {floor['rps']:.0f} | {floor['p50_ms']:.2f} | "
            f"{floor['p99_ms']:.2f} | {floor['errors']} | 1.00 | {ratio(floor['rps'], const['rps'])} |",
            f"| floor: constant JSON | - | {const['rps']:.0f} | {const['p50_ms']:.2f} | "
            f"{const['p99_ms']:.2f} | {const['errors']} | | 1.00 |",
        ]
        for label in ("redis", "postgres"):
            for size in ("100", "100000"):
                f = paths[label][size]
                lines.append(
                    f"| {label} | {size} msgs | {f['rps']:.0f} | {f['p50_ms']:.2f} | "
                    f"{f['p99_ms']:.2f} | {f['errors']} | {ratio(f['rps'], floor['rps'])} | "
                    f"{ratio(f['rps'], const['rps'])} |"
                )
        r, p = paths["redis"]["100000"]["rps"], paths["postgres"]["100000"]["rps"]
        lines += ["", f"Redis vs PostgreSQL, 100,000-message session: {ratio(r, p)}x", ""]
    plain = results.get("plain")
    if plain:
        lines += [
            f"## 3. chatengine / plain DRF ({plain['server']}, each, side by side; "
            f"{plain['connections']} connections)",
            "",
            "The plain DRF peer (bench/plain/): Django's default middleware, DRF's stock "
            "TokenAuthentication and JSONRenderer, no throttling, no access log, the same "
            f"tables and data (history: a {plain['history_messages']:,}-message session).",
            "",
            "| endpoint | plain DRF req/s | chatengine req/s | chatengine / plain | "
            "plain p50 ms | chatengine p50 ms | errors |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for label, _endpoint, engine, base in plain_ratios(plain):
            lines.append(
                f"| {label} | {base['rps']:.0f} | {engine['rps']:.0f} | "
                f"**{ratio(engine['rps'], base['rps'])}** | {base['p50_ms']:.2f} | "
                f"{engine['p50_ms']:.2f} | {base['errors'] + engine['errors']} |"
            )
        lines += ["", "Picture: `endpoints.png`.", ""]
    context = results.get("context")
    langchain = results.get("langchain")
    if context:
        lines += [
            "## 4. Context build (one turn's context, in process, same PostgreSQL)",
            "",
            "| history | chatengine ms | raw-read floor ms | chatengine / floor | "
            "LangChain ms | LangChain / chatengine | messages sent | tokens | budget |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for size, f in context.items():
            lc = (langchain or {}).get(size)
            lc_ms = f"{lc['median_ms']:,.1f}" if lc else ""
            lc_ratio = ""
            if lc and f["median_ms"]:
                times = lc["median_ms"] / f["median_ms"]
                lc_ratio = f"{times:,.0f}" if times >= 100 else f"{times:.2f}"
            sent = f"{f['messages_included']}"
            if lc:
                sent += f" (LangChain {lc['messages_included']})"
            lines.append(
                f"| {int(size):,} | {f['median_ms']:.2f} | {f['raw_floor_ms']:.2f} | "
                f"{ratio(f['median_ms'], f['raw_floor_ms'])} | {lc_ms} | {lc_ratio} | {sent} | "
                f"{f['tokens']} | {f['budget']} |"
            )
        lines += [
            "",
            f"Ratio 100,000 / 100: {ratio(context['100000']['median_ms'], context['100']['median_ms'])}"
            " (1.0 = cost follows the window, not the history)",
            "",
            "Raw-read floor: the session row and the newest messages that were sent, read with "
            "psycopg on an open connection. LangChain: `PostgresChatMessageHistory.messages` + "
            "`trim_messages` (strategy last, system prompt kept, starting on a human message) to "
            "the same budget, tokens counted per message with chatengine's tiktoken counter. "
            "Picture: `context.png`.",
            "",
        ]
        summary = results.get("context_summary")
        if summary and "100" in summary and "100000" in summary:
            lines += [
                "Summary strategy (a stored summary of everything older than the window):",
                "",
                "| history | chatengine ms | messages sent | tokens | summary covers |",
                "| --- | --- | --- | --- | --- |",
            ]
            for size, f in summary.items():
                covers = f"1..{f['summary_covers_to']}" if f["summary_covers_to"] else "none"
                lines.append(
                    f"| {int(size):,} | {f['median_ms']:.2f} | {f['messages_included']} | "
                    f"{f['tokens']} | {covers} |"
                )
            ratio_line = ratio(summary["100000"]["median_ms"], summary["100"]["median_ms"])
            lines += ["", f"Ratio 100,000 / 100 (summary strategy): {ratio_line}", ""]
    elif langchain:
        lines += [
            "## 4. Context build, LangChain peer only",
            "",
            "| history | LangChain ms | messages sent | budget |",
            "| --- | --- | --- | --- |",
        ]
        for size, lc in langchain.items():
            lines.append(
                f"| {int(size):,} | {lc['median_ms']:.1f} | {lc['messages_included']} | "
                f"{lc['budget']} |"
            )
        lines.append("")
    reply = results.get("reply")
    if reply:
        lines += [
            f"## 5. Reply overhead (stream, {reply.get('history_messages', 0)} history messages + system prompt, fake OpenAI server with {reply['fake_latency_ms']} ms latency)",
            "",
            "| path | p50 time to first token ms | p50 total ms |",
            "| --- | --- | --- |",
            f"| openai SDK direct (floor) | {reply['sdk_direct']['ttft_ms']:.1f} | {reply['sdk_direct']['total_ms']:.1f} |",
            f"| POST .../reply/stream/ ({STREAM_SERVER}) | {reply['engine_stream']['ttft_ms']:.1f} | {reply['engine_stream']['total_ms']:.1f} |",
            f"| engine added | {reply['added_ttft_ms']:.1f} | {reply['added_total_ms']:.1f} |",
            "",
        ]
    memory = results.get("memory")
    if memory:
        worker = memory["worker"]
        export = memory["export"]
        lines += [
            "## 6. Memory (peak RSS)",
            "",
            f"- {worker['server']} after {worker['requests']:,} requests: "
            + ", ".join(
                f"{kb / 1024:.0f} MiB" for kb in sorted(worker["peak_rss_kb_by_pid"].values())
            ),
            f"- `manage.py check` (Django baseline): {export['django_baseline_kb'] / 1024:.0f} MiB",
        ]
        for label in ("10k", "1M"):
            if label in export:
                e = export[label]
                lines.append(
                    f"- `export_sessions` over {e['messages']:,} messages: "
                    f"{e['peak_rss_kb'] / 1024:.0f} MiB, {e['seconds']:.1f} s "
                    f"({e['messages'] / e['seconds']:,.0f} messages/s)"
                )
        lines.append("")
    search = results.get("search")
    if search:
        from bench.search_bench import render

        lines += render(search)
    return "\n".join(lines) + "\n"


SECTIONS = {
    "append": bench_append,
    "history": bench_history,
    "plain": bench_plain,
    "context": bench_context,
    "langchain": bench_langchain,
    "reply": bench_reply,
    "memory": bench_memory,
    "search": bench_search,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), help="run only these")
    parser.add_argument(
        "--servers",
        default="gunicorn-sync,gunicorn-gthread,uvicorn,uvicorn-pool",
        help="server kinds; the first serves the history and memory sections",
    )
    args = parser.parse_args()
    setup_django()
    logging.getLogger().setLevel(logging.WARNING)  # the bench's own client logs are noise
    results: dict = {
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "note": "load generator and server share the same cores",
            "repeats": REPEATS,
            "seconds_per_run": SECONDS,
            "run_id": uuid.uuid4().hex,
        }
    }
    servers = [s for s in args.servers.split(",") if s]
    timings = results["meta"]["section_seconds"] = {}
    for name in args.only or list(SECTIONS):
        log(f"== {name}")
        started = time.monotonic()
        SECTIONS[name](results, servers)
        timings[name] = round(time.monotonic() - started, 1)
        log(f"   ({timings[name]:.0f} s)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = render_markdown(results)
    (RESULTS / "latest.md").write_text(markdown)
    print(markdown)
    ensure_bench_extras()
    from bench import charts

    for picture in charts.draw(results, RESULTS):
        log(f"picture: {picture}")


if __name__ == "__main__":
    main()
