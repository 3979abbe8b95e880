"""The Redis Cluster: the Django cache (throttles, /readyz) and the history cache run on it, and
killing a master while both nodes append and read loses nothing and serves nothing stale.
"""

import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.core.cache import caches

from tests.scale import env
from tests.scale.conftest import wait_until
from tests.scale.test_nodes import cache_events

CLUSTER_URL = f"redis://127.0.0.1:{env.REDIS_PORTS[0]}/0"


@pytest.fixture
def cluster_cache(scale, settings):
    """This process's Django cache and Redis client on the environment's cluster."""
    settings.REDIS_URL = CLUSTER_URL
    settings.REDIS_CLUSTER = True
    settings.CACHES = {
        "default": {"BACKEND": "chatengine.redis.ClusterCache", "LOCATION": CLUSTER_URL}
    }
    return caches["default"]


def _slot_owner(key: str) -> int | None:
    """The port of the master serving `key`'s slot, as a live node sees it (None: none)."""
    for port in env.REDIS_PORTS:
        slot = env.redis_cli(port, "cluster", "keyslot", key, check=False).strip()
        if slot.isdigit():
            break
    else:
        raise AssertionError("no Redis node answers")
    for line in env.redis_cli(port, "cluster", "nodes").splitlines():
        parts = line.split()
        if "master" not in parts[2] or "fail" in parts[2]:
            continue
        for span in parts[8:]:
            low, _, high = span.partition("-")
            if int(low) <= int(slot) <= int(high or low):
                return int(parts[1].split(":")[1].split("@")[0])
    return None


def test_the_django_cache_spans_the_cluster_slots(cluster_cache):
    from chatengine import redis as chatengine_redis

    keys = {f"scale-{uuid.uuid4().hex}": n for n in range(20)}
    owners = {_slot_owner(f":1:{key}") for key in keys}
    assert len(owners) == 3  # twenty random keys land on all three masters
    cluster_cache.set_many(keys, timeout=60)
    assert cluster_cache.get_many(list(keys)) == keys
    first = next(iter(keys))
    assert cluster_cache.incr(first, 5) == keys[first] + 5
    cluster_cache.delete_many(list(keys))
    assert cluster_cache.get_many(list(keys)) == {}
    assert type(chatengine_redis.client()).__name__ == "RedisCluster"


@pytest.mark.django_db
def test_throttles_count_on_the_cluster(cluster_cache, user, auth_client, settings):
    cluster_cache.delete(f"throttle_reads_user:{user.pk}")  # a count left by an earlier run
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"reads": "3/min", "writes": "100/min", "replies": "100/min"},
    }
    statuses = [auth_client.get("/api/v1/sessions/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def _events() -> dict[str, float]:
    from chatengine.metrics import CACHE_EVENTS

    return {e: CACHE_EVENTS.labels(event=e)._value.get() for e in ("hit", "miss", "error")}


@pytest.mark.django_db
def test_the_history_cache_runs_its_scripts_on_the_cluster(
    cluster_cache, auth_client, django_capture_on_commit_callbacks
):
    from chatengine import redis as chatengine_redis
    from conversations.cache_store import session_key

    sid = auth_client.post("/api/v1/sessions/", {"title": "cluster"}, format="json").json()["id"]
    url = f"/api/v1/sessions/{sid}/messages/"
    with django_capture_on_commit_callbacks(execute=True):
        auth_client.post(url, {"role": "user", "content": "one"}, format="json")
    before = _events()
    assert [m["seq"] for m in auth_client.get(url).json()["results"]] == [1]  # rebuild script
    with django_capture_on_commit_callbacks(execute=True):  # the write-through append script
        auth_client.post(url, {"role": "user", "content": "two"}, format="json")
    assert [m["content"] for m in auth_client.get(url).json()["results"]] == ["one", "two"]
    after = _events()
    assert after["hit"] == before["hit"] + 1  # read script: the appended tail, served
    assert after["error"] == before["error"]  # no CROSSSLOT, no MOVED left unfollowed
    cluster = chatengine_redis.client()
    tail, meta = session_key(sid, "tail"), session_key(sid, "meta")
    assert cluster.keyslot(tail) == cluster.keyslot(meta)
    assert cluster.zcard(tail) == 2
    auth_client.delete(f"/api/v1/sessions/{sid}/")


def test_cache_stats_counts_the_tails_on_every_master(scale):
    sessions = [
        scale.api(0).post("/sessions/", json={"title": f"stats {i}"}).json()["id"] for i in range(6)
    ]
    for sid in sessions:
        scale.api(0).post(f"/sessions/{sid}/messages/", json={"role": "user", "content": "x"})
        scale.api(1).get(f"/sessions/{sid}/messages/")
    masters = {
        port
        for port in env.REDIS_PORTS
        for sid in sessions
        if env.redis_cli(port, "exists", f"chatengine:v3:{{{sid}}}:tail").strip() == "1"
        and "role:master" in env.redis_cli(port, "info", "replication")
    }
    cached = sum(
        int(env.redis_cli(port, "eval", "return #redis.call('keys', ARGV[1])", "0", "*}:meta"))
        for port in env.REDIS_PORTS
        if "role:master" in env.redis_cli(port, "info", "replication")
    )
    out = dict(line.rsplit(None, 1) for line in env.manage("cache_stats").splitlines()[:2])
    assert len(masters) > 1  # the tails are spread, so a count from one node would be short
    assert int(out["cached sessions"]) == cached >= len(sessions)


def test_readyz_of_each_node_checks_the_cluster(scale):
    import requests

    for url in scale.nodes:
        body = requests.get(f"{url}/readyz", timeout=10).json()
        assert body["checks"]["cache"] == "ok", body


def _redis_pid(port: int) -> int:
    return int((env.STATE_DIR / "redis" / str(port) / "redis.pid").read_text())


def test_killing_the_master_of_a_sessions_cache_loses_nothing_and_serves_nothing_stale(scale):
    sid = scale.api(0).post("/sessions/", json={"title": "failover"}).json()["id"]
    for i in range(5):
        scale.api(i % 2).post(f"/sessions/{sid}/messages/", json={"role": "user", "content": "w"})
        scale.api(1 - i % 2).get(f"/sessions/{sid}/messages/")
    cached = [
        key
        for port in env.REDIS_PORTS
        for key in env.redis_cli(port, "--scan", "--pattern", f"*{sid}*").split()
    ]
    assert cached, "the session's tail is not in the cluster"
    victim = _slot_owner(cached[0])
    errors_before = sum(cache_events(url).get("error", 0) for url in scale.nodes)

    acked = [0]
    lock = threading.Lock()
    writing = threading.Event()
    writing.set()
    problems: list[str] = []

    def write(node: int) -> int:
        sent_count = 0
        while writing.is_set():
            sent = scale.api(node).post(
                f"/sessions/{sid}/messages/", json={"role": "user", "content": f"n{node}"}
            )
            if sent.status_code != 201:
                problems.append(f"append on node {node}: {sent.status_code} {sent.text[:300]}")
                continue
            sent_count += 1
            with lock:
                acked[0] = max(acked[0], sent.json()["seq"])
            time.sleep(0.01)
        return sent_count

    def read(node: int) -> None:
        while writing.is_set():
            with lock:
                floor = acked[0]
            page = scale.api(node).get(
                f"/sessions/{sid}/messages/", params={"order": "desc", "limit": 20}
            )
            if page.status_code != 200:
                problems.append(f"read on node {node}: {page.status_code}")
                continue
            seqs = [m["seq"] for m in page.json()["results"]]
            newest = seqs[0] if seqs else 0
            if newest < floor:
                problems.append(f"node {node}: newest {newest}, {floor} confirmed before")
            if seqs != list(range(newest, newest - len(seqs), -1)):
                problems.append(f"node {node}: gap {seqs}")
            time.sleep(0.005)

    try:
        with ThreadPoolExecutor(4) as pool:
            tasks = [pool.submit(read, n) for n in (0, 1)]
            writers = [pool.submit(write, n) for n in (0, 1)]
            try:
                time.sleep(0.5)
                os.kill(_redis_pid(victim), signal.SIGKILL)
                wait_until(
                    lambda: _slot_owner(cached[0]) not in (victim, None),
                    timeout=30,
                    what="the failover",
                )
                promoted = _slot_owner(cached[0])
                time.sleep(3)  # traffic goes on for a while on the promoted replica
            finally:
                writing.clear()
            sent = sum(w.result() for w in writers)
            for task in tasks:
                task.result()

        assert problems == []
        with scale.primary() as pg:
            seqs = [
                row[0]
                for row in pg.execute(
                    "SELECT seq FROM conversations_message WHERE session_id = %s ORDER BY seq",
                    [sid],
                )
            ]
        assert seqs == list(range(1, 5 + sent + 1))  # every confirmed append is stored
        # The kill was felt (some cache calls failed and fell back to the database)...
        assert sum(cache_events(url).get("error", 0) for url in scale.nodes) > errors_before
        # ...and the cache healed on the promoted master: reads are hits again on both nodes.
        hits = [cache_events(url).get("hit", 0) for url in scale.nodes]
        for i in range(6):
            page = scale.api(i % 2).get(
                f"/sessions/{sid}/messages/", params={"order": "desc", "limit": 20}
            )
            assert [m["seq"] for m in page.json()["results"]] == seqs[::-1][:20]
        after = [cache_events(url).get("hit", 0) for url in scale.nodes]
        assert all(a > b for a, b in zip(after, hits, strict=True)), (hits, after)
        assert env.redis_cli(promoted, "--scan", "--pattern", f"*{sid}*").split()
    finally:
        # The killed node comes back, as a replica of the promoted one.
        if env.redis_cli(victim, "ping", check=False).strip() != "PONG":
            env.start_redis_node(victim)
        wait_until(env.cluster_settled, timeout=60, what="the cluster to settle again")


def test_the_environment_was_started_from_pg_basebackup_with_streaming_replication(scale):
    with scale.primary() as pg:
        states = [row[0] for row in pg.execute("SELECT state FROM pg_stat_replication")]
    assert states == ["streaming"]
    assert (Path(scale.state["replica"]["data"]) / "standby.signal").exists()
