"""Context build cost vs history size: it should follow the window, not the history.

    DATABASE_URL=... .venv/bin/python bench/context_window.py --sizes 1000,10000,100000

Seeds one throwaway session per size (messages of a fixed token count, bulk-inserted), builds
the context with the same budget for each, and prints queries, rows read and time side by side.
The sessions are deleted at the end. Run it against the database you deploy on (PostgreSQL).
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatengine.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from conversations import selectors  # noqa: E402
from conversations.models import ChatSession, Message  # noqa: E402
from llm import services  # noqa: E402

TOKENS_PER_MESSAGE = 25


def seed(user, size: int) -> ChatSession:
    session = ChatSession.objects.create(user=user, title=f"bench {size}", system_prompt="")
    batch = 5_000
    for start in range(0, size, batch):
        Message.objects.bulk_create(
            Message(
                session=session,
                seq=i,
                role="user" if i % 2 else "assistant",
                content=f"message {i}",
                token_count=TOKENS_PER_MESSAGE,
            )
            for i in range(start + 1, min(start + batch, size) + 1)
        )
    ChatSession.objects.filter(pk=session.pk).update(last_seq=size, message_count=size)
    if connection.vendor == "postgresql":
        # Fresh planner statistics, as autovacuum would have them on a live table.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE conversations_message")
    session.refresh_from_db()
    return session


def measure(session: ChatSession, budget: int, repeat: int) -> tuple[int, int, float]:
    rows = 0
    original = selectors.list_context_messages

    def counting(**kwargs):
        nonlocal rows
        batch = original(**kwargs)
        rows += len(batch.newest) + len(batch.system)
        return batch

    selectors.list_context_messages = counting
    try:
        services.build_context(session, budget=budget)  # warm caches and the encoding
        rows = 0
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            for _ in range(repeat):
                context = services.build_context(session, budget=budget)
            elapsed = (time.perf_counter() - started) / repeat
    finally:
        selectors.list_context_messages = original
    assert context.messages_included > 0
    return len(queries.captured_queries) // repeat, rows // repeat, elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--window-messages", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    budget = 3 + TOKENS_PER_MESSAGE * args.window_messages

    user, _ = get_user_model().objects.get_or_create(username="bench-context-window")
    sessions = []
    try:
        print(f"budget {budget} tokens = {args.window_messages} messages; {connection.vendor}")
        print(
            f"{'history':>10} {'queries':>8} {'rows read':>10} {'ms/build':>9} {'vs smallest':>12}"
        )
        baseline = None
        for size in sizes:
            session = seed(user, size)
            sessions.append(session)
            queries, rows, ms = measure(session, budget, args.repeat)
            baseline = baseline or ms
            print(f"{size:>10} {queries:>8} {rows:>10} {ms:>9.2f} {ms / baseline:>11.2f}x")
    finally:
        for session in sessions:
            session.delete()
        user.delete()


if __name__ == "__main__":
    main()
