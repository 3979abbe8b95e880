"""Through PgBouncer in transaction pooling mode: the API, replies and commands work, and the
append's gapless seq and the idempotency keys hold under concurrency from two app nodes.

The nodes' DATABASE_URL is PgBouncer (pool_mode=transaction, 8 server connections for
hundreds of clients), so every request here went through it; the test checks PgBouncer's own
counters to be sure.
"""

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg

from tests.scale import env


def _pgbouncer_stat(name: str) -> int:
    """A counter of PgBouncer's `SHOW STATS` for the chatengine database (admin console)."""
    # The console speaks only the simple query protocol: client-side binding.
    with psycopg.connect(
        env.dsn(env.PGBOUNCER_PORT, "pgbouncer"),
        autocommit=True,
        cursor_factory=psycopg.ClientCursor,
    ) as console:
        cursor = console.execute("SHOW STATS")
        columns = [c.name for c in cursor.description]
        for row in cursor.fetchall():
            stats = dict(zip(columns, row, strict=True))
            if stats["database"] == env.DATABASE:
                return int(stats[name])
    raise AssertionError("PgBouncer has no stats for the chatengine database")


def test_transaction_pooling_settings_turn_off_server_side_cursors_and_prepared_statements():
    script = (
        "import json; from django.db import connections; c = connections['default']; "
        "print(json.dumps([c.settings_dict['DISABLE_SERVER_SIDE_CURSORS'], "
        "c.get_connection_params().get('prepare_threshold', 'unset'), "
        "connections['replica'].settings_dict['DISABLE_SERVER_SIDE_CURSORS']]))"
    )
    out = env.manage("shell", "-c", script)
    assert json.loads(out.strip().splitlines()[-1]) == [True, None, True]


def test_the_api_replies_and_commands_work_through_pgbouncer(scale, tmp_path):
    before = _pgbouncer_stat("total_xact_count")
    api = scale.api(0)
    session = api.post("/sessions/", json={"title": "through pgbouncer"}).json()
    sid = session["id"]
    assert api.post(f"/sessions/{sid}/messages/", json={"role": "user", "content": "hi"}).ok
    reply = api.post(f"/sessions/{sid}/reply/", json={"content": "echo me"})
    assert reply.status_code == 201, reply.text
    streamed = api.post(f"/sessions/{sid}/reply/stream/", json={"content": "stream me"})
    assert streamed.status_code == 201, streamed.text
    assert api.patch(f"/sessions/{sid}/", json={"title": "renamed"}).json()["title"] == "renamed"
    assert api.get(f"/sessions/{sid}/context/").status_code == 200
    history = api.get(f"/sessions/{sid}/messages/", params={"limit": 100}).json()["results"]
    assert [m["seq"] for m in history] == [1, 2, 3, 4, 5]
    assert [m["role"] for m in history] == ["user", "user", "assistant", "user", "assistant"]
    assert api.get("/sessions/").json()["results"][0]["title"] == "renamed"

    # Commands, as the nodes run them (through PgBouncer): export (a chunked iterator, which
    # would be a server-side cursor), import (one transaction per session), a prune.
    exported = tmp_path / "export.jsonl"
    env.manage("export_sessions", "--primary", "--session", sid, "-o", str(exported))
    record = json.loads(exported.read_text())
    assert [m["seq"] for m in record["messages"]] == [1, 2, 3, 4, 5]
    record["id"] = str(uuid.uuid4())  # a copy: its message ids are taken, so it gets new ones
    exported.write_text(json.dumps(record) + "\n")
    env.manage("import_sessions", str(exported))
    copied = api.get(f"/sessions/{record['id']}/messages/", params={"limit": 100}).json()
    assert [m["content"] for m in copied["results"]] == [m["content"] for m in history]
    env.manage("prune_sessions", "--older-than", "3650d")  # raises unless it exits 0
    assert _pgbouncer_stat("total_xact_count") > before


def test_appends_from_two_nodes_through_pgbouncer_get_gapless_seq(scale):
    sid = scale.api(0).post("/sessions/", json={"title": "contended"}).json()["id"]
    per_thread, threads = 8, 16  # twice PgBouncer's 8 server connections
    acked: list[tuple[int, str]] = []
    lock = threading.Lock()

    def writer(index: int) -> None:
        api = scale.api(index % 2)
        for n in range(per_thread):
            content = f"w{index}-{n}"
            response = api.post(
                f"/sessions/{sid}/messages/", json={"role": "user", "content": content}
            )
            assert response.status_code == 201, response.text
            with lock:
                acked.append((response.json()["seq"], content))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(writer, range(threads)))

    total = per_thread * threads
    assert sorted(seq for seq, _ in acked) == list(range(1, total + 1))
    with scale.primary() as pg:
        rows = pg.execute(
            "SELECT m.seq, m.content FROM conversations_message m WHERE m.session_id = %s "
            "ORDER BY m.seq",
            [sid],
        ).fetchall()
        session = pg.execute(
            "SELECT last_seq, message_count FROM conversations_chatsession WHERE id = %s", [sid]
        ).fetchone()
    assert rows == sorted(acked)
    assert session == (total, total)


def test_one_idempotency_key_sent_to_both_nodes_at_once_appends_once(scale):
    sid = scale.api(0).post("/sessions/", json={"title": "retried"}).json()["id"]
    key = f"scale-{uuid.uuid4()}"

    def send(index: int):
        response = scale.api(index % 2).post(
            f"/sessions/{sid}/messages/",
            json={"role": "user", "content": "exactly once"},
            headers={"Idempotency-Key": key},
        )
        return response.status_code, response.json()["id"], response.headers

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(send, range(12)))

    assert {status for status, _, _ in results} == {201}
    assert len({message_id for _, message_id, _ in results}) == 1
    replayed = [h.get("Idempotent-Replayed") for _, _, h in results]
    assert replayed.count("true") == 11
    with scale.primary() as pg:
        count = pg.execute(
            "SELECT count(*) FROM conversations_message WHERE session_id = %s", [sid]
        ).fetchone()[0]
    assert count == 1
