"""Time seed_demo load data, export_sessions and prune_sessions on the configured database.

    DATABASE_URL=postgres://... .venv/bin/python bench/bench_commands.py --messages 1000000

Seeds `--messages` messages (20 per session) for the `demo` user, exports them to a temporary
file, then prunes them, printing wall time and throughput side by side. It deletes what it
seeded (and only that: the load sessions it created are the ones with no demo id). Use your own
database, never one that holds data you want to keep.
"""

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatengine.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--per-session", type=int, default=20)
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    from conversations import bulk, services
    from conversations.models import ChatSession

    sessions = max(1, args.messages // args.per_session)
    quiet = {"verbosity": 0, "stdout": io.StringIO(), "stderr": io.StringIO()}
    rows = []

    call_command("seed_demo", **quiet)
    demo_ids = [bulk.demo_session_id(slug) for slug, *_ in bulk.DEMO_SESSIONS]
    before = set(ChatSession.objects.exclude(pk__in=demo_ids).values_list("pk", flat=True))
    started = time.perf_counter()
    call_command("seed_demo", sessions=sessions, messages=args.per_session, **quiet)
    rows.append(("seed (bulk insert)", time.perf_counter() - started))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export.jsonl"
        started = time.perf_counter()
        call_command("export_sessions", output=str(out), **quiet)
        rows.append(("export (all sessions)", time.perf_counter() - started))
        size = out.stat().st_size

    seeded = ChatSession.objects.exclude(pk__in=[*demo_ids, *before])

    started = time.perf_counter()
    ids = list(seeded.values_list("pk", flat=True))
    for i in range(0, len(ids), bulk.PRUNE_BATCH):
        services.delete_sessions(
            sessions=ChatSession.objects.filter(pk__in=ids[i : i + bulk.PRUNE_BATCH])
        )
    rows.append(("delete (500 sessions a batch)", time.perf_counter() - started))

    total = sessions * args.per_session
    print(f"{total:,} messages in {sessions:,} sessions; export file {size / 1e6:.0f} MB")
    print(f"{'step':<32}{'seconds':>10}{'messages/s':>14}")
    for name, seconds in rows:
        print(f"{name:<32}{seconds:>10.1f}{total / seconds:>14,.0f}")


if __name__ == "__main__":
    main()
