"""The history cache: same pages from the tail and the database, fresh after every write, and
every endpoint working from the database when Redis is down, slow or flushed.

Fault tests start their own redis-server (never the shared one) or point at a closed port.
"""

import io
import itertools
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager

import pytest
import redis
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext, override_settings
from redis.crc import key_slot

from chatengine.renderers import dumps
from chatengine.settings import redis_cache_options
from conversations import cache as history_cache
from conversations import cache_encoding, selectors, services
from conversations.cache_store import session_key
from conversations.models import ChatSession, Message
from conversations.serializers import message_representation
from conversations.tests.cache_events import events
from conversations.tests.factories import ChatSessionFactory, MessageFactory

FIELDS = [f.attname for f in Message._meta.concrete_fields]


def rows(messages) -> list[tuple]:
    """Every column of every message: what 'identical results' means."""
    return [tuple(getattr(m, name) for name in FIELDS) for m in messages]


def db_rows(session, *, order="asc") -> list[tuple]:
    qs = Message.objects.filter(session=session).order_by("seq" if order == "asc" else "-seq")
    return rows(qs)


@pytest.fixture(autouse=True)
def _fresh_cache_state():
    events.reset()
    yield
    events.reset()


# The cache runs on Redis only (without it, history comes from the database: cache.py).
@pytest.fixture(params=[pytest.param("cache", marks=pytest.mark.redis), "database"])
def history_path(request, settings):
    """Run a test once served by the cached tail and once by the database."""
    settings.CHATENGINE_CACHE_TAIL = 5  # small, so pages cross the tail's lower edge
    settings.CHATENGINE_CACHE_ENABLED = request.param == "cache"
    return request.param


def fresh(session):
    """The session row as a request reads it: from the database."""
    session.refresh_from_db()
    return session


def walk(session, *, limit, order):
    seen, cursor = [], None
    while True:
        key = "after" if order == "asc" else "before"
        page = selectors.list_messages(session=session, limit=limit, order=order, **{key: cursor})
        seen += page.items
        if not page.has_more:
            assert page.next_params is None
            return seen
        cursor = int(page.next_params[key])


@pytest.mark.django_db
class TestSamePagesFromCacheAndDatabase:
    @pytest.fixture
    def session(self):
        session = ChatSessionFactory()
        for i in range(12):
            MessageFactory(
                session=session,
                role="assistant" if i % 2 else "user",
                content=f"  héllo {i} ✓\n",
                metadata={"i": str(i)},
                token_count=i,
                tool_calls=[{"id": f"c{i}", "type": "function"}] if i == 3 else None,
                usage={"prompt_tokens": i} if i % 2 else None,
            )
        return fresh(session)

    @pytest.mark.parametrize("limit", [1, 3, 5, 50])
    def test_ascending_walk_returns_every_row_in_order(self, history_path, session, limit):
        assert rows(walk(session, limit=limit, order="asc")) == db_rows(session)

    @pytest.mark.parametrize("limit", [1, 4, 5, 6, 50])
    def test_descending_walk_returns_every_row_newest_first(self, history_path, session, limit):
        assert rows(walk(session, limit=limit, order="desc")) == db_rows(session, order="desc")

    def test_bounded_ranges_match(self, history_path, session):
        for after, before, order in [
            (8, None, "asc"),
            (2, 6, "asc"),
            (7, 12, "desc"),
            (None, 3, "desc"),
            (11, None, "desc"),
            (12, None, "asc"),
        ]:
            page = selectors.list_messages(
                session=session, limit=50, after=after, before=before, order=order
            )
            expected = [
                r
                for r in db_rows(session, order=order)
                if (after is None or r[FIELDS.index("seq")] > after)
                and (before is None or r[FIELDS.index("seq")] < before)
            ]
            assert rows(page.items) == expected, (after, before, order)
            assert page.has_more is False

    @pytest.mark.parametrize("order", ["asc", "desc"])
    def test_rendered_pages_are_the_api_json_of_the_same_rows(self, history_path, session, order):
        qs = Message.objects.filter(session=session).order_by("seq" if order == "asc" else "-seq")
        expected = [dumps(message_representation(m)) for m in qs]
        for _ in range(2):  # the first read may rebuild the tail, the second is served by it
            got, cursor = [], None
            while True:
                key = "after" if order == "asc" else "before"
                page = selectors.list_messages_rendered(
                    session=session, limit=4, order=order, **{key: cursor}
                )
                got += page.items
                if not page.has_more:
                    break
                cursor = int(page.next_params[key])
            assert got == expected

    def test_the_cache_path_really_serves_from_the_tail(self, history_path, session):
        first = selectors.list_messages(session=session, limit=3, order="desc")
        second = selectors.list_messages(session=session, limit=3, order="desc")
        assert rows(first.items) == rows(second.items) == db_rows(session, order="desc")[:3]
        stats = events()
        if history_path == "cache":
            assert stats["rebuild"] == 1
            assert stats["hit"] == 1
        else:
            assert stats == {"hit": 0, "miss": 0, "error": 0, "rebuild": 0}

    def test_a_page_below_the_tail_comes_from_the_database(self, history_path, session):
        selectors.list_messages(session=session, limit=3, order="desc")  # builds the 5-tail
        page = selectors.list_messages(session=session, limit=3, after=1)
        assert [m.seq for m in page.items] == [2, 3, 4]
        if history_path == "cache":
            assert events()["hit"] == 0  # 1..7 are not in the tail


@pytest.mark.redis
@pytest.mark.django_db
class TestFreshAfterWrites:
    @pytest.fixture
    def session(self, settings):
        settings.CHATENGINE_CACHE_TAIL = 5
        session = ChatSessionFactory()
        for _ in range(7):
            MessageFactory(session=session)
        fresh(session)
        selectors.list_messages(session=session, limit=50, order="desc")  # warm the tail
        assert events()["rebuild"] == 1
        return session

    def test_an_append_extends_the_tail_after_commit(
        self, session, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            services.append_message(session=session, role="user", content="new")
        page = selectors.list_messages(session=fresh(session), limit=3, order="desc")
        assert [m.seq for m in page.items] == [8, 7, 6]
        assert page.items[0].content == "new"
        stats = events()
        assert (stats["hit"], stats["rebuild"]) == (1, 1)  # served by write-through, no rebuild
        # The append trimmed the tail to 4..8; a walk across its new lower edge is still whole.
        assert rows(walk(session, limit=2, order="desc")) == db_rows(session, order="desc")
        assert events()["rebuild"] == 1

    def test_a_committed_append_whose_write_through_was_lost_is_still_seen(self, session):
        # In this (non-transactional) test on_commit callbacks never run: exactly a lost
        # write-through. The row stamp no longer matches, so the tail is rebuilt.
        services.append_message(session=session, role="user", content="not in the tail")
        page = selectors.list_messages(session=fresh(session), limit=2, order="desc")
        assert page.items[0].content == "not in the tail"
        assert events()["rebuild"] == 2

    def test_a_rolled_back_append_never_reaches_the_cache(
        self, session, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            try:
                with transaction.atomic():
                    services.append_message(session=session, role="user", content="rolled back")
                    raise RuntimeError("abort")
            except RuntimeError:
                pass
        assert callbacks == []
        session = fresh(session)
        page = selectors.list_messages(session=session, limit=3, order="desc")
        assert "rolled back" not in [m.content for m in page.items]
        assert rows(page.items) == db_rows(session, order="desc")[:3]
        assert events()["hit"] == 1

    def test_an_edited_message_is_served_edited(self, session):
        message = Message.objects.get(session=session, seq=6)
        message.content = "edited"
        message.save()
        page = selectors.list_messages(session=fresh(session), limit=3, order="desc")
        assert [m.content for m in page.items][1] == "edited"

    def test_a_queryset_update_is_served_updated(self, session):
        # As in every test here without transaction=True, on_commit never runs: the tail is
        # never dropped, so only the session row's stamp can tell readers it is stale.
        Message.objects.filter(session=session, seq__gte=6).update(content="rewritten")
        page = selectors.list_messages(session=fresh(session), limit=3, order="desc")
        assert [m.content for m in page.items][:2] == ["rewritten", "rewritten"]
        assert rows(page.items) == db_rows(session, order="desc")[:3]

    def test_a_bulk_update_is_served_updated(self, session):
        changed = list(Message.objects.filter(session=session, seq__gte=6))
        for message in changed:
            message.token_count = 1234
        Message.objects.bulk_update(changed, ["token_count"])
        page = selectors.list_messages(session=fresh(session), limit=3, order="desc")
        assert [m.token_count for m in page.items][:2] == [1234, 1234]
        assert rows(page.items) == db_rows(session, order="desc")[:3]

    def test_a_deleted_message_disappears(self, session):
        Message.objects.get(session=session, seq=6).delete()
        page = selectors.list_messages(session=fresh(session), limit=3, order="desc")
        assert [m.seq for m in page.items] == [7, 5, 4]

    def test_a_session_update_drops_its_tail(self, session, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            services.update_session(session=session, title="renamed")
        assert not _tail_exists(session.pk)

    def test_a_session_delete_drops_its_tail(self, session, django_capture_on_commit_callbacks):
        session_id = session.pk
        with django_capture_on_commit_callbacks(execute=True):
            services.delete_session(session=session)
        assert not _tail_exists(session_id)

    def test_deleting_sessions_by_queryset_does_not_touch_rows_per_message(self, session):
        # The message signals skip cascades from a session delete, one or a queryset.
        with CaptureQueriesContext(connection) as ctx:
            ChatSession.objects.filter(pk=session.pk).delete()
        # One UPDATE may unlink forks of the deleted session (forked_from SET NULL): per
        # session, never per message.
        updates = [
            q["sql"]
            for q in ctx.captured_queries
            if q["sql"].startswith("UPDATE") and '"forked_from_id" = NULL' not in q["sql"]
        ]
        assert updates == []
        assert not Message.objects.filter(session_id=session.pk).exists()

    def test_deleting_one_message_moves_its_session_stamp(self, session):
        before = history_cache.session_stamp(fresh(session))
        Message.objects.filter(session=session, seq=3).delete()
        assert history_cache.session_stamp(fresh(session)) != before

    def test_a_tail_written_with_another_field_list_is_rebuilt_not_served(
        self, session, monkeypatch
    ):
        # As another release's process would see the tail the fixture built: its stamp
        # carries the field list, so it matches nothing here. No key-prefix bump needed.
        monkeypatch.setattr(cache_encoding, "LAYOUT", "another-list")
        page = selectors.list_messages(session=fresh(session), limit=3, order="desc")
        assert rows(page.items) == db_rows(session, order="desc")[:3]
        assert (events()["hit"], events()["rebuild"]) == (0, 2)

    def test_a_tail_with_another_field_layout_is_dropped_not_served(self, session):
        store = history_cache._store()
        stamp = history_cache.session_stamp(session)
        store.write_tail(session.pk, stamp, 7, 0, [(7, b'["not", "a", "message"]')])
        page = selectors.list_messages(session=session, limit=3, order="desc")
        assert rows(page.items) == db_rows(session, order="desc")[:3]
        assert events()["error"] == 1
        selectors.list_messages(session=session, limit=3, order="desc")  # rebuilt
        page = selectors.list_messages(session=session, limit=3, order="desc")
        assert rows(page.items) == db_rows(session, order="desc")[:3]
        assert events()["hit"] == 1


def _tail_exists(session_id) -> bool:
    store = history_cache._store()
    return bool(store.client.exists(*store._keys(session_id)))


@pytest.mark.django_db
def test_without_redis_the_cache_is_off_and_history_comes_from_the_database(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    session = ChatSessionFactory()
    for _ in range(3):
        MessageFactory(session=session)
    fresh(session)
    assert not history_cache.enabled()
    for _ in range(2):
        page = selectors.list_messages(session=session, limit=50)
        assert rows(page.items) == db_rows(session)
        rendered = selectors.list_messages_rendered(session=session, limit=50)
        assert rendered.items == [dumps(message_representation(m)) for m in page.items]
    assert events() == {"hit": 0, "miss": 0, "error": 0, "rebuild": 0}
    assert caches["default"].get(session_key(session.pk, "tail")) is None


@pytest.mark.redis
@pytest.mark.django_db
def test_a_miss_is_logged_at_debug_with_the_session_id(caplog):
    session = fresh(MessageFactory().session)
    with caplog.at_level(logging.DEBUG, logger="conversations.cache"):
        selectors.list_messages(session=session, limit=5)
    assert any(
        r.levelno == logging.DEBUG and str(session.pk) in r.getMessage() for r in caplog.records
    )


# --- Redis: layout, concurrency, faults --------------------------------------------------
@pytest.mark.redis
@pytest.mark.django_db
def test_keys_are_namespaced_versioned_and_expire(redis_url, settings):
    settings.CHATENGINE_CACHE_TTL_S = 3600
    session = fresh(MessageFactory().session)
    selectors.list_messages(session=session, limit=5)
    client = history_cache._store().client
    for part in ("meta", "tail"):
        key = f"chatengine:v3:{{{session.pk}}}:{part}"
        assert 0 < client.ttl(key) <= 3600


@pytest.mark.redis
@pytest.mark.django_db
def test_every_script_touches_one_cluster_slot_of_one_session(
    redis_url, django_capture_on_commit_callbacks
):
    # Redis Cluster runs a script only if all its keys hash to one slot (else CROSSSLOT): the
    # hash tag puts a session's keys together, and no script touches a shared key.
    sessions = [fresh(MessageFactory().session) for _ in range(2)]
    client = history_cache._store().client
    client.flushdb()
    for session in sessions:
        selectors.list_messages(session=session, limit=5)  # miss and rebuild
        selectors.list_messages(session=session, limit=5)  # hit
        with django_capture_on_commit_callbacks(execute=True):
            services.append_message(session=session, role="user", content="more")
        page = selectors.list_messages(session=fresh(session), limit=5)  # hit, after the append
        assert [m.content for m in page.items][-1] == "more"
    assert events()["hit"] == 4
    for session in sessions:
        keys = history_cache._store()._keys(session.pk)
        assert len({key_slot(key.encode()) for key in keys}) == 1
    expected = {key.encode() for s in sessions for key in history_cache._store()._keys(s.pk)}
    assert set(client.keys("*")) == expected  # nothing shared between sessions


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_leave_the_cache_equal_to_the_database(redis_url, settings):
    settings.CHATENGINE_CACHE_TAIL = 30
    session = ChatSessionFactory()
    MessageFactory(session=session)
    selectors.list_messages(session=fresh(session), limit=5)  # a warm tail to extend
    store = history_cache._store()
    errors = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                services.append_message(session=session, role="user", content=f"w{n}-{i}")
                # A reader racing the writers: every page is a gapless newest-first run.
                page = selectors.list_messages(
                    session=selectors.get_session_for_user(
                        user=session.user, session_id=session.pk
                    ),
                    limit=5,
                    order="desc",
                )
                seqs = [m.seq for m in page.items]
                assert seqs == list(range(seqs[0], seqs[0] - len(seqs), -1))
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    session = fresh(session)
    assert session.last_seq == 41
    db_tail = db_rows(session)[-30:]
    # Whatever the interleaving left behind, a tail that claims the current row equals the DB.
    meta = store.client.hgetall(store._keys(session.pk)[0])
    if meta and meta[b"row"].decode() == history_cache.session_stamp(session):
        cached = store.client.zrange(store._keys(session.pk)[1], 0, -1)
        assert (
            rows(history_cache.decode_message(r, session_id=session.pk) for r in cached) == db_tail
        )
    # And a reader now gets exactly the database tail, from the cache on the second read.
    for _ in range(2):
        page = selectors.list_messages(session=session, limit=30, order="desc")
        assert rows(reversed(page.items)) == db_tail
    cached = store.client.zrange(store._keys(session.pk)[1], 0, -1)
    assert rows(history_cache.decode_message(r, session_id=session.pk) for r in cached) == db_tail
    assert events()["hit"] >= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_caches(url: str) -> dict:
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": redis_cache_options(50),
        }
    }


class OwnRedis:
    """A throwaway redis-server this test owns: it may be stopped, restarted and paused."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)


@pytest.fixture
def own_redis():
    if not shutil.which("redis-server"):
        reason = "redis-server is not installed (fault tests start their own)"
        if os.environ.get("CHATENGINE_REQUIRE_SERVICES", "") not in ("", "0"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = OwnRedis()
    server.start()
    try:
        with override_settings(CACHES=_redis_caches(server.url)):
            yield server
    finally:
        server.stop()


@contextmanager
def elapsed_below(seconds: float):
    # Guards against client retries with back-off (seconds each), not a performance test.
    start = time.monotonic()
    yield
    assert time.monotonic() - start < seconds


def _post(client, session_id, content):
    response = client.post(
        f"/api/v1/sessions/{session_id}/messages/",
        {"role": "user", "content": content},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def _history(client, session_id, **params):
    response = client.get(f"/api/v1/sessions/{session_id}/messages/", params)
    assert response.status_code == 200, response.content
    return response.json()


def _db_history(session_id):
    return [
        {"seq": m.seq, "content": m.content}
        for m in Message.objects.filter(session_id=session_id).order_by("seq")
    ]


def _seen(body):
    return [{"seq": m["seq"], "content": m["content"]} for m in body["results"]]


@pytest.mark.django_db(transaction=True)
def test_every_endpoint_works_against_a_closed_port(auth_client, settings, caplog):
    settings.CACHES = _redis_caches(f"redis://127.0.0.1:{_free_port()}/0")
    settings.CHATENGINE_CACHE_RETRY_S = 0  # try Redis on every call: the worst case
    with caplog.at_level(logging.WARNING, logger="chatengine.events"), elapsed_below(10):
        created = auth_client.post("/api/v1/sessions/", {"title": "t"}, format="json")
        assert created.status_code == 201
        sid = created.json()["id"]
        for i in range(5):
            _post(auth_client, sid, f"m{i}")
        assert _seen(_history(auth_client, sid)) == _db_history(sid)
        assert _seen(_history(auth_client, sid, order="desc", limit=2))[0]["content"] == "m4"
        assert auth_client.get(f"/api/v1/sessions/{sid}/").status_code == 200
        patched = auth_client.patch(f"/api/v1/sessions/{sid}/", {"title": "u"}, format="json")
        assert patched.status_code == 200
        assert auth_client.delete(f"/api/v1/sessions/{sid}/").status_code == 204
    assert events()["error"] >= 8
    warnings = [r for r in caplog.records if r.getMessage() == "cache.fallback"]
    assert len(warnings) == 1  # at most once a minute per process
    assert warnings[0].levelno == logging.WARNING


@pytest.mark.django_db(transaction=True)
def test_redis_stopped_and_restarted_mid_test_loses_nothing_and_heals(auth_client, own_redis):
    sid = auth_client.post("/api/v1/sessions/", {}, format="json").json()["id"]
    for i in range(3):
        _post(auth_client, sid, f"before {i}")
    _history(auth_client, sid)
    _history(auth_client, sid)
    assert events()["hit"] >= 1

    own_redis.stop()
    for i in range(3):
        _post(auth_client, sid, f"while down {i}")
    assert _seen(_history(auth_client, sid)) == _db_history(sid)
    assert events()["error"] >= 1

    own_redis.start()  # back, and empty: a flushed cache
    events.reset()  # skip the back-off
    _post(auth_client, sid, "after")
    assert _seen(_history(auth_client, sid)) == _db_history(sid)  # rebuilds
    assert _seen(_history(auth_client, sid)) == _db_history(sid)  # from the cache again
    stats = events()
    assert (stats["rebuild"], stats["hit"], stats["error"]) == (1, 1, 0)
    assert len(_db_history(sid)) == 7


@pytest.mark.django_db(transaction=True)
def test_a_paused_redis_costs_one_short_timeout_and_nothing_is_lost(auth_client, own_redis):
    sid = auth_client.post("/api/v1/sessions/", {}, format="json").json()["id"]
    _post(auth_client, sid, "one")
    _history(auth_client, sid)  # warm
    own_redis.client().execute_command("CLIENT", "PAUSE", 1500, "ALL")
    with elapsed_below(1.2):  # well inside the pause: nobody waited for Redis
        _post(auth_client, sid, "two")  # its write-through times out
        assert _seen(_history(auth_client, sid)) == _db_history(sid)
    assert events()["error"] >= 1
    time.sleep(1.6)
    events.reset()
    # Whatever Redis did with the timed-out write once unpaused, readers see the database.
    assert _seen(_history(auth_client, sid)) == _db_history(sid)
    assert _seen(_history(auth_client, sid)) == _db_history(sid)
    assert events()["hit"] >= 1


def _recount(session) -> None:
    call_command("count_tokens", stdout=io.StringIO(), stderr=io.StringIO())


def _delete_one(session) -> None:
    services.delete_message(message=Message.objects.get(session=session, seq=2))


def _edit_one(session) -> None:
    message = Message.objects.get(session=session, seq=4)
    message.content = "edited"
    message.save()


def _update_many(session) -> None:
    Message.objects.filter(session=session).update(metadata={"redacted": True})


def _api_history(session_id) -> list[dict]:
    qs = Message.objects.filter(session_id=session_id).order_by("seq")
    return [json.loads(dumps(message_representation(m))) for m in qs]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("write", [_recount, _delete_one, _edit_one, _update_many])
def test_a_write_whose_cache_invalidation_cannot_reach_redis_never_serves_stale_history(
    auth_client, user, own_redis, write
):
    session = ChatSessionFactory(user=user)
    for i in range(4):
        MessageFactory(session=session, content=f"message {i} " * (i + 1))
    # Counts as another encoding left them: what count_tokens exists to repair.
    Message.objects.filter(session=session).update(token_count=0)
    ChatSession.objects.filter(pk=session.pk).update(total_tokens=0)
    sid = session.pk
    context_url = f"/api/v1/sessions/{sid}/context/"
    _history(auth_client, sid)
    stale = _history(auth_client, sid)
    assert events()["hit"] == 1  # readers are served from the tail

    # The write commits while Redis cannot be reached: dropping the tail fails.
    with override_settings(CACHES=_redis_caches(f"redis://127.0.0.1:{_free_port()}/0")):
        write(session)
    assert events()["error"] >= 1
    assert _tail_exists(sid)  # the old tail is still in the Redis readers use
    events.reset()  # skip the back-off: readers go to Redis at once

    with override_settings(CHATENGINE_CACHE_ENABLED=False):
        expected_context = auth_client.get(context_url).json()
    context = auth_client.get(context_url).json()  # the first read after the write
    assert context == expected_context
    body = _history(auth_client, sid)
    assert body["results"] == _api_history(sid)
    assert body["results"] != stale["results"]
    assert events()["rebuild"] == 1  # stale, so rebuilt from the database


@pytest.mark.django_db
def test_a_flushed_redis_is_rebuilt_transparently(auth_client, own_redis):
    sid = auth_client.post("/api/v1/sessions/", {}, format="json").json()["id"]
    for i in range(4):
        _post(auth_client, sid, f"m{i}")
    _history(auth_client, sid)
    own_redis.client().flushall()
    assert _seen(_history(auth_client, sid)) == _db_history(sid)
    assert events()["rebuild"] == 2


@pytest.mark.django_db
def test_cache_stats_prints_the_cached_sessions_and_points_to_the_counters(own_redis, capsys):
    for _ in range(3):
        session = fresh(MessageFactory().session)
        selectors.list_messages(session=session, limit=5)
    call_command("cache_stats")
    out = capsys.readouterr().out
    assert "cached sessions  3" in out
    assert "redis memory" in out
    assert "chatengine_cache_events_total" in out


@pytest.mark.django_db
def test_cache_stats_fails_clearly_when_redis_is_unreachable(settings):
    settings.CACHES = _redis_caches(f"redis://127.0.0.1:{_free_port()}/0")
    with pytest.raises(CommandError, match="Redis is unreachable"):
        call_command("cache_stats")


@pytest.mark.django_db
def test_cache_stats_without_redis_says_the_cache_is_off(settings, capsys):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    call_command("cache_stats")
    assert "history is read from the database" in capsys.readouterr().out


def test_settings_give_redis_a_short_timeout_and_no_retries():
    options = redis_cache_options(50)
    assert options["SOCKET_TIMEOUT"] == options["SOCKET_CONNECT_TIMEOUT"] == 0.05
    assert options["CONNECTION_POOL_KWARGS"]["retry"].get_retries() == 0
    assert caches  # the alias machinery the cache module resolves through


@pytest.mark.redis
@pytest.mark.django_db
@pytest.mark.parametrize("query", ["?limit=3&order=desc", "?limit=50", "?before=9&order=desc"])
def test_the_history_endpoint_sends_the_same_bytes_from_cache_and_database(
    auth_client, user, settings, query
):
    session = ChatSessionFactory(user=user)
    for i in range(12):
        MessageFactory(session=session, content=f"héllo {i}\u2028", metadata={"i": str(i)})
    url = f"/api/v1/sessions/{session.pk}/messages/{query}"
    settings.CHATENGINE_CACHE_ENABLED = False
    from_database = auth_client.get(url)
    settings.CHATENGINE_CACHE_ENABLED = True
    auth_client.get(url)  # builds the tail
    events.reset()
    from_cache = auth_client.get(url)
    assert events()["hit"] == 1
    assert from_cache.status_code == from_database.status_code == 200
    assert from_cache.content == from_database.content
    assert from_cache["Content-Type"] == from_database["Content-Type"]


@pytest.mark.redis
@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["text/html", "application/json; indent=2"])
def test_a_cached_page_renders_in_the_browsable_api_and_indented(auth_client, user, accept):
    session = ChatSessionFactory(user=user)
    for i in range(3):
        MessageFactory(session=session, content=f"hello-{i}")
    url = f"/api/v1/sessions/{session.pk}/messages/?limit=2&order=desc"
    auth_client.get(url)  # builds the tail
    events.reset()
    response = auth_client.get(url, HTTP_ACCEPT=accept)
    assert events()["hit"] == 1
    assert response.status_code == 200
    assert response["Content-Type"].startswith(accept.split(";")[0])
    assert b"hello-2" in response.content
    assert b"hello-0" not in response.content


@pytest.mark.redis
@pytest.mark.parametrize("floor", [0, 5])
def test_the_lua_read_and_slice_tail_cut_the_same_page_from_the_same_tail(floor):
    # The paging rule is written twice, by necessity (cache.slice_tail says why): in the Lua
    # read script and in the rebuild's Python. Both run here over every kind of bound.
    store, session_id = history_cache._store(), uuid.uuid4()
    entries = [(seq, f"m{seq}".encode()) for seq in range(floor + 1, 11)]
    store.write_tail(session_id, "stamp", 10, floor, entries)
    try:
        for after, before, order, limit in itertools.product(
            [None, 0, 4, 5, 6, 8, 10, 11], [None, 1, 6, 7, 9, 11], ["asc", "desc"], [1, 2, 5, 6]
        ):
            bounds = {"after": after, "before": before, "order": order, "limit": limit}
            status, more, page = store.read(session_id, "stamp", **bounds)
            lua = (more, page) if status == "hit" else None
            python = history_cache.slice_tail(
                [(s, (s, raw)) for s, raw in entries], floor, **bounds
            )
            assert lua == python, bounds
    finally:
        store.invalidate(session_id)
