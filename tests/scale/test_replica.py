"""The read replica: the admin's list pages and export_sessions read it, within the lag limit;
every API read stays on the primary; a dead replica costs nothing but the replica.

The nodes run with CHATENGINE_REPLICA_MAX_LAG_S=3 and CHATENGINE_REPLICA_CHECK_S=0.5
(tests/scale/env.py). Lag is made on purpose by pausing the replica's WAL replay.
"""

import contextlib
import json
import uuid
from pathlib import Path

from tests.scale import env
from tests.scale.conftest import wait_until

SESSIONS = "/admin/conversations/chatsession/"
MESSAGES = "/admin/conversations/message/"


def _on_replica(scale, session_id: str) -> bool:
    with scale.replica() as pg:
        found = pg.execute("SELECT 1 FROM conversations_chatsession WHERE id = %s", [session_id])
        return found.fetchone() is not None


@contextlib.contextmanager
def replay_paused(scale):
    """The replica stops replaying WAL (it keeps receiving it) until the block ends.

    A write replayed just before pausing makes the replica's lag start from about zero, so it
    stays under the nodes' 3 s limit for the first seconds of the block.
    """
    fresh = scale.api(0).post("/sessions/", json={"title": "heartbeat"}).json()["id"]
    wait_until(lambda: _on_replica(scale, fresh), what="the replica to replay a fresh write")
    with scale.replica() as pg:
        pg.execute("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        with scale.replica() as pg:
            pg.execute("SELECT pg_wal_replay_resume()")


def _listed(admin, page: str, session_id: str, query: str) -> bool:
    response = admin.get(page, params={"q": query})
    assert response.status_code == 200, response.text[:2000]
    return f"/admin/conversations/chatsession/{session_id}/change/" in response.text


def test_admin_lists_read_the_replica_and_the_api_the_primary_until_the_lag_limit(scale):
    admin = scale.admin(0)
    title = f"lagged-{uuid.uuid4().hex}"
    with replay_paused(scale):
        sid = scale.api(1).post("/sessions/", json={"title": title}).json()["id"]
        scale.api(1).post(f"/sessions/{sid}/messages/", json={"role": "user", "content": title})
        # The API reads the primary: the writer, and anyone else, reads the write at once.
        assert scale.api(0).get(f"/sessions/{sid}/").json()["title"] == title
        listed = scale.api(0).get("/sessions/", params={"limit": 5}).json()["results"]
        assert sid in [s["id"] for s in listed]
        history = scale.api(0).get(f"/sessions/{sid}/messages/").json()["results"]
        assert [m["content"] for m in history] == [title]
        # The admin's list pages and searches read the replica, which has not replayed it...
        assert not _listed(admin, SESSIONS, sid, title)
        assert not _listed(admin, MESSAGES, sid, title)
        # ...while a session's own page reads the primary.
        assert title in admin.get(f"{SESSIONS}{sid}/change/").text
        # Once the replica is further behind than the limit, the lists read the primary.
        wait_until(
            lambda: _listed(admin, SESSIONS, sid, title),
            timeout=15,
            what="the admin list to leave a replica behind by more than 3 s",
        )
        assert _listed(admin, MESSAGES, sid, title)
        assert not _on_replica(scale, sid)  # still not replayed: the primary answered
    # Replay resumed: the replica catches up and is read again.
    wait_until(lambda: _on_replica(scale, sid), what="the replica to catch up")
    assert _listed(admin, SESSIONS, sid, title)


def _exported_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_export_sessions_reads_the_replica_unless_told_to_read_the_primary(scale, tmp_path):
    out = tmp_path / "export.jsonl"
    # A command takes longer to start than the nodes' 3 s lag limit; give it more.
    lenient = {"CHATENGINE_REPLICA_MAX_LAG_S": "300"}
    with replay_paused(scale):
        sid = scale.api(0).post("/sessions/", json={"title": "export me"}).json()["id"]
        env.manage("export_sessions", "--session", sid, "-o", str(out), **lenient)
        assert _exported_ids(out) == []
        env.manage("export_sessions", "--primary", "--session", sid, "-o", str(out), **lenient)
        assert _exported_ids(out) == [sid]
    wait_until(lambda: _on_replica(scale, sid), what="the replica to catch up")
    env.manage("export_sessions", "--session", sid, "-o", str(out), **lenient)
    assert _exported_ids(out) == [sid]


def test_a_dead_replica_leaves_the_admin_and_export_on_the_primary(scale, tmp_path):
    admins = [scale.admin(0), scale.admin(1)]
    replica = Path(scale.state["replica"]["data"])
    env.stop_postgres(replica, mode="immediate")
    try:
        title = f"after-replica-death-{uuid.uuid4().hex}"
        sid = scale.api(0).post("/sessions/", json={"title": title}).json()["id"]
        for admin in admins:
            for _ in range(3):  # the first request may still hold a connection to the dead one
                assert _listed(admin, SESSIONS, sid, title)
        out = tmp_path / "export.jsonl"
        env.manage("export_sessions", "--session", sid, "-o", str(out))
        assert _exported_ids(out) == [sid]
        assert scale.api(1).get(f"/sessions/{sid}/").status_code == 200
    finally:
        env.start_postgres(replica)
    wait_until(lambda: _on_replica(scale, sid), what="the restarted replica to catch up")
