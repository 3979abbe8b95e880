"""Two app nodes (separate processes and ports) behind one database and one Redis Cluster:
what is written through one is read, at once and whole, through the other.

Both nodes keep the history cache in the shared cluster, so these also prove a tail written
by one process is only served by another when it is exactly the history in the database.
"""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests


def cache_events(node_url: str) -> dict[str, float]:
    """The node's history cache counters (hit, miss, rebuild, error) from /metrics."""
    text = requests.get(f"{node_url}/metrics", timeout=10).text
    found = re.findall(r'chatengine_cache_events_total\{event="(\w+)"\} ([0-9.e+]+)', text)
    return {event: float(value) for event, value in found}


def test_each_append_through_one_node_is_read_at_once_through_the_other(scale):
    hits_before = [cache_events(url).get("hit", 0) for url in scale.nodes]
    sid = scale.api(0).post("/sessions/", json={"title": "two nodes"}).json()["id"]
    expected = []
    for i in range(40):
        writer, reader = scale.api(i % 2), scale.api(1 - i % 2)
        sent = writer.post(f"/sessions/{sid}/messages/", json={"role": "user", "content": f"m{i}"})
        assert sent.status_code == 201, sent.text
        expected.append((sent.json()["seq"], f"m{i}"))
        newest = reader.get(f"/sessions/{sid}/messages/", params={"order": "desc", "limit": 3})
        assert (newest.json()["results"][0]["seq"], newest.json()["results"][0]["content"]) == (
            expected[-1]
        )
        whole = reader.get(f"/sessions/{sid}/messages/", params={"limit": 100}).json()
        assert [(m["seq"], m["content"]) for m in whole["results"]] == expected
    # The shared tail served both nodes (each extended by the other's write-through).
    hits_after = [cache_events(url).get("hit", 0) for url in scale.nodes]
    assert all(after - before >= 20 for before, after in zip(hits_before, hits_after, strict=True))


def test_concurrent_writers_on_both_nodes_never_let_a_reader_see_a_gap_or_an_old_history(scale):
    sid = scale.api(0).post("/sessions/", json={"title": "busy"}).json()["id"]
    acked = [0]  # the highest seq any writer has had confirmed
    lock = threading.Lock()
    writing = threading.Event()
    writing.set()
    problems: list[str] = []

    def write(node: int) -> None:
        for n in range(25):
            sent = scale.api(node).post(
                f"/sessions/{sid}/messages/", json={"role": "user", "content": f"n{node}-{n}"}
            )
            assert sent.status_code == 201, sent.text
            with lock:
                acked[0] = max(acked[0], sent.json()["seq"])

    def read(node: int) -> int:
        reads = 0
        while writing.is_set():
            with lock:
                floor = acked[0]
            page = scale.api(node).get(f"/sessions/{sid}/messages/", params={"limit": 100})
            seqs = [m["seq"] for m in page.json()["results"]]
            reads += 1
            # Appends commit in seq order, so any read is a prefix 1..k, and k covers every
            # append confirmed before the read began.
            if seqs != list(range(1, len(seqs) + 1)):
                problems.append(f"node {node}: gap or disorder {seqs}")
            if len(seqs) < floor:
                problems.append(f"node {node}: {len(seqs)} messages, {floor} confirmed before")
            time.sleep(0.005)
        return reads

    with ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(read, node) for node in (0, 1)]
        writers = [pool.submit(write, node) for node in (0, 1)]
        for writer in writers:
            writer.result()
        writing.clear()
        reads = [reader.result() for reader in readers]

    assert problems == []
    assert min(reads) >= 10
    final = [scale.api(n).get(f"/sessions/{sid}/messages/", params={"limit": 100}) for n in (0, 1)]
    assert [len(r.json()["results"]) for r in final] == [50, 50]


def test_a_reply_through_one_node_builds_on_every_message_written_through_the_other(scale):
    sid = scale.api(0).post("/sessions/", json={"title": "reply"}).json()["id"]
    for i in range(3):
        scale.api(0).post(f"/sessions/{sid}/messages/", json={"role": "user", "content": f"u{i}"})
    reply = scale.api(1).post(f"/sessions/{sid}/reply/", json={"content": "last"})
    assert reply.status_code == 201, reply.text
    # The context was read from the primary: all four user messages, none missing.
    assert reply.json()["context"]["messages_included"] == 4
    history = scale.api(0).get(f"/sessions/{sid}/messages/").json()["results"]
    assert [m["role"] for m in history] == ["user"] * 4 + ["assistant"]
    assert history[-1]["id"] == reply.json()["message"]["id"]
