"""8 processes x 50 appends at once, into one session and into 50 sessions, as in-process
Django stacks and as clients of a live gunicorn: every session ends with seq 1..N without gap
or duplicate, counters equal the real counts, each worker's own appends keep their order, no
deadlock, no 5xx. Real PostgreSQL only."""

import json
import random
import subprocess

import pytest
from django.db.models import Count, Max, Sum

from accounts.tests.factories import api_key_for
from conversations.models import ChatSession, Message
from conversations.tests.factories import ChatSessionFactory
from tests.reliability.conftest import BASE_DIR, PYTHON, child_env, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WORKERS = 8
APPENDS = 50


def run_workers(
    tmp_path, token: str, plans: list[list[str]], base_url: str | None = None
) -> list[list[dict]]:
    go_file = tmp_path / "go"
    procs = []
    for worker, plan in enumerate(plans):
        args = {
            "worker": worker,
            "token": token,
            "plan": plan,
            "ready_file": str(tmp_path / f"ready-{worker}"),
            "go_file": str(go_file),
            "base_url": base_url,
        }
        procs.append(
            subprocess.Popen(
                [PYTHON, "-m", "tests.reliability.load_worker", json.dumps(args)],
                cwd=BASE_DIR,
                env=child_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        wait_until(
            lambda: (
                all((tmp_path / f"ready-{w}").exists() for w in range(len(plans)))
                or any(p.poll() is not None for p in procs)
            ),
            timeout=90,
            what="the workers to start",
        )
        go_file.touch()
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)  # a deadlock would end here
            assert proc.returncode == 0, err[-3000:]
            outputs.append(json.loads(out))
        return outputs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def assert_consistent(session_ids, results, expected_per_session: dict[str, int]) -> None:
    statuses = [r["status"] for worker in results for r in worker]
    assert statuses == [201] * len(statuses), sorted(set(statuses))

    for sid in session_ids:
        seqs = list(
            Message.objects.filter(session_id=sid).order_by("seq").values_list("seq", flat=True)
        )
        assert seqs == list(range(1, expected_per_session[sid] + 1)), sid
        session = ChatSession.objects.get(pk=sid)
        real = Message.objects.filter(session_id=sid).aggregate(
            n=Count("id"), tokens=Sum("token_count"), last=Max("created_at")
        )
        assert session.message_count == real["n"] == session.last_seq
        assert session.total_tokens == (real["tokens"] or 0)
        assert session.last_message_at == real["last"]

    # The seq each worker was given matches what is stored, and a worker's own appends to a
    # session are stored in the order it made them.
    for worker, rows in enumerate(results):
        by_session: dict[str, list[int]] = {}
        for row in rows:
            stored = Message.objects.get(session_id=row["session"], seq=row["seq"])
            assert stored.content == f"w{worker}-{row['i']}"
            by_session.setdefault(row["session"], []).append(row["seq"])
        for seqs in by_session.values():
            assert seqs == sorted(seqs)


def test_eight_workers_appending_to_one_session(user, tmp_path):
    session = ChatSessionFactory(user=user)
    token = api_key_for(user)
    plans = [[str(session.pk)] * APPENDS for _ in range(WORKERS)]
    results = run_workers(tmp_path, token, plans)
    assert_consistent([str(session.pk)], results, {str(session.pk): WORKERS * APPENDS})


def test_eight_workers_appending_across_fifty_sessions(user, tmp_path):
    sessions = [str(ChatSessionFactory(user=user).pk) for _ in range(50)]
    token = api_key_for(user)
    rng = random.Random(10)
    plans = []
    for _ in range(WORKERS):
        plan = list(sessions)
        rng.shuffle(plan)  # each worker visits all 50 sessions, each in its own order
        plans.append(plan[:APPENDS])
    results = run_workers(tmp_path, token, plans)
    assert_consistent(sessions, results, dict.fromkeys(sessions, WORKERS))


@pytest.mark.server_workers(4)
def test_eight_clients_through_a_live_server_with_four_workers(user, tmp_path, live_server_process):
    """The same through real sockets: gunicorn with 4 worker processes, 8 client processes."""
    base_url, _ = live_server_process
    session = ChatSessionFactory(user=user)
    token = api_key_for(user)
    plans = [[str(session.pk)] * APPENDS for _ in range(WORKERS)]
    results = run_workers(tmp_path, token, plans, base_url=base_url)
    assert_consistent([str(session.pk)], results, {str(session.pk): WORKERS * APPENDS})
