"""Faults: database connections dropped under a running server, a worker killed in the middle
of an append. Real PostgreSQL (never restarted: it is shared; we cut our own connections)."""

import json
import os
import signal
import subprocess

import pytest

from accounts.tests.factories import api_key_for
from conversations.models import ChatSession, IdempotencyKey, Message
from conversations.tests.factories import ChatSessionFactory
from tests.reliability.conftest import (
    BASE_DIR,
    PYTHON,
    child_env,
    client_for,
    http,
    raw_pg,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def backends(pg, app_name: str) -> set[int]:
    rows = pg.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [app_name]
    ).fetchall()
    return {pid for (pid,) in rows}


def test_the_next_request_succeeds_after_the_database_dropped_the_connections(
    user, live_server_process
):
    base, app_name = live_server_process
    session = ChatSessionFactory(user=user)
    token = api_key_for(user)
    url = f"{base}/api/v1/sessions/{session.pk}/messages/"

    with raw_pg() as pg:
        assert http("POST", url, token, {"role": "user", "content": "one"})[0] == 201
        first = backends(pg, app_name)
        assert len(first) == 1
        assert http("GET", url, token)[0] == 200
        assert backends(pg, app_name) == first  # the connection is really kept and reused

        # What a database restart does to a worker: its connection is cut under it.
        pg.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [list(first)])
        wait_until(lambda: not (backends(pg, app_name) & first), what="the backend to go")

        status, body = http("POST", url, token, {"role": "user", "content": "two"})
        assert status == 201, body
        assert body["seq"] == 2
        assert backends(pg, app_name) - first  # a new connection was made

        pg.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid",
            [list(backends(pg, app_name))],
        )
        status, page = http("GET", url, token)
        assert status == 200
        assert [m["content"] for m in page["results"]] == ["one", "two"]


HOLD_LOCK = 727_272
HOLD_TRIGGER = f"""
CREATE OR REPLACE FUNCTION chatengine_test_hold_append() RETURNS trigger AS $$
BEGIN
    -- Waits while the test holds the advisory lock: the append's transaction stays open,
    -- with its message row written, for as long as the test needs.
    PERFORM pg_advisory_xact_lock({HOLD_LOCK});
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER chatengine_test_hold_append AFTER INSERT ON conversations_message
    FOR EACH ROW WHEN (NEW.content = 'hold-me') EXECUTE FUNCTION chatengine_test_hold_append();
"""

APPEND_IN_A_WORKER = """
import json, sys, django
django.setup()
from django.test import Client
args = json.loads(sys.argv[1])
headers = {"HTTP_AUTHORIZATION": "Bearer " + args["token"]}
if args["key"]:
    headers["HTTP_IDEMPOTENCY_KEY"] = args["key"]
Client().post(args["url"], {"role": "user", "content": "hold-me"},
              content_type="application/json", **headers)
"""


@pytest.fixture
def hold_trigger():
    with raw_pg() as pg:
        pg.execute(HOLD_TRIGGER)
    yield
    with raw_pg() as pg:
        pg.execute("DROP TRIGGER IF EXISTS chatengine_test_hold_append ON conversations_message")
        pg.execute("DROP FUNCTION IF EXISTS chatengine_test_hold_append()")


def held_backend(pg) -> int | None:
    row = pg.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s",
        [HOLD_LOCK],
    ).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("key", [None, "kill-me-key"])
def test_a_worker_killed_mid_append_leaves_no_half_written_message(user, hold_trigger, key):
    session = ChatSessionFactory(user=user)
    token = api_key_for(user)
    url = f"/api/v1/sessions/{session.pk}/messages/"
    with raw_pg() as pg:
        pg.execute("SELECT pg_advisory_lock(%s)", [HOLD_LOCK])
        worker = subprocess.Popen(
            [
                PYTHON,
                "-c",
                APPEND_IN_A_WORKER,
                json.dumps({"token": token, "url": url, "key": key}),
            ],
            cwd=BASE_DIR,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wait_until(
                lambda: held_backend(pg) is not None or worker.poll() is not None,
                what="the worker's append to be inside its transaction",
            )
            backend = held_backend(pg)
            assert backend is not None, worker.communicate()[1][-3000:]
            query = pg.execute(
                "SELECT query FROM pg_stat_activity WHERE pid = %s", [backend]
            ).fetchone()[0]
            # The held statement is the one writing the message (on PostgreSQL the append is
            # one statement whose INSERT part fired the trigger).
            assert 'INSERT INTO "conversations_message"' in query, query
            # The message row is written and the transaction open: kill the worker now.
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            pg.execute("SELECT pg_advisory_unlock(%s)", [HOLD_LOCK])
        wait_until(
            lambda: (
                pg.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [backend]
                ).fetchone()[0]
                == 0
            ),
            what="PostgreSQL to end the dead worker's session",
        )

    stored = list(Message.objects.filter(session=session))
    fresh = ChatSession.objects.get(pk=session.pk)
    if key:
        # The key's transaction held the append: key, message and counters went together.
        assert stored == []
        assert (fresh.message_count, fresh.last_seq, fresh.total_tokens) == (0, 0, 0)
        assert fresh.last_message_at is None
        assert not IdempotencyKey.objects.exists()
    else:
        # Without a key the append is one statement, its own transaction: PostgreSQL finishes
        # it although its client is gone (a retry without a key stores a second message; that
        # is what Idempotency-Key is for). Never half of it: the message and its counters.
        assert [m.seq for m in stored] == [1]
        assert (fresh.message_count, fresh.last_seq, fresh.total_tokens) == (
            1,
            1,
            stored[0].token_count,
        )
        assert fresh.last_message_at == stored[0].created_at

    # The session is not stuck (its row lock died with the transaction), and a retry with the
    # same key runs for real instead of replaying nothing or answering "in progress".
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    retry = client_for(user).post(
        url, {"role": "user", "content": "again"}, format="json", **headers
    )
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry
    assert retry.json()["seq"] == len(stored) + 1
