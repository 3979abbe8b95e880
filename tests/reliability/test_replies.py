"""Replies: retried with an Idempotency-Key, racing on one session, and under faults (the LLM
server dropping the stream, Redis stopped mid-run). The real `openai` SDK talks to the fake
OpenAI server over loopback; the live-server tests run gunicorn on the test database."""

import json
import shutil
import threading

import pytest

from accounts.tests.factories import api_key_for
from conversations.models import IdempotencyKey, Message
from conversations.tests.factories import ChatSessionFactory
from conversations.tests.test_cache import OwnRedis
from llm.tests.fake_openai import DEFAULT_REPLY, FakeOpenAI
from tests.reliability.conftest import client_for, envelope, http


def reply_url(session, *, stream: bool = False) -> str:
    return f"/api/v1/sessions/{session.pk}/reply/" + ("stream/" if stream else "")


def reply(client, session, body, key=None, *, stream: bool = False):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post(reply_url(session, stream=stream), body, format="json", **headers)


def rows(session) -> list[tuple[str, str]]:
    return list(
        Message.objects.filter(session=session).order_by("seq").values_list("role", "content")
    )


def parse_sse(raw: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def sent_user_contents(request_body: dict) -> list[str]:
    return [m["content"] for m in request_body["messages"] if m["role"] == "user"]


BODY = {"content": "What is the capital of Peru?"}


@pytest.mark.django_db
class TestReplyWithAKey:
    def test_a_retry_replays_the_original_without_a_second_llm_call(self, user, fake_openai):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        first = reply(client, session, BODY, key="r-1")
        again = reply(client, session, BODY, key="r-1")

        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()  # same user and assistant message ids
        assert again["Idempotent-Replayed"] == "true"
        assert len(fake_openai.requests) == 1
        assert rows(session) == [("user", BODY["content"]), ("assistant", DEFAULT_REPLY)]

    def test_the_same_key_with_another_body_is_a_conflict_and_asks_nothing(self, user, fake_openai):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        reply(client, session, BODY, key="r-2")
        envelope(reply(client, session, {"content": "And of Chile?"}, key="r-2"), 409, "conflict")
        envelope(reply(client, session, BODY, key="r-2", stream=True), 409, "conflict")
        assert len(fake_openai.requests) == 1
        assert len(rows(session)) == 2

    def test_keys_are_scoped_per_user(self, user, other_user, fake_openai):
        mine, theirs = ChatSessionFactory(user=user), ChatSessionFactory(user=other_user)
        first = reply(client_for(user), mine, BODY, key="shared")
        second = reply(client_for(other_user), theirs, BODY, key="shared")
        assert first.status_code == second.status_code == 201
        assert "Idempotent-Replayed" not in second
        assert second.json()["message"]["session"] == str(theirs.pk)
        assert len(fake_openai.requests) == 2

    def test_a_retry_after_an_llm_failure_asks_again_but_keeps_one_user_message(
        self, user, fake_openai
    ):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        fake_openai.fail_next("server_error")
        envelope(reply(client, session, BODY, key="r-3"), 502, "llm_upstream_error")
        assert rows(session) == [("user", BODY["content"])]  # stored before the LLM call
        stored_id = Message.objects.get(session=session).pk

        retried = reply(client, session, BODY, key="r-3")
        assert retried.status_code == 201, retried.content
        assert "Idempotent-Replayed" not in retried  # it really ran again
        assert retried.json()["user_message"]["id"] == stored_id
        assert rows(session) == [("user", BODY["content"]), ("assistant", DEFAULT_REPLY)]
        assert len(fake_openai.requests) == 2
        assert sent_user_contents(fake_openai.requests[1]) == [BODY["content"]]
        assistant = Message.objects.get(session=session, role="assistant")
        assert assistant.context["last_seq"] == 1  # the context covers the user message

        # Once it succeeded, the key replays that success.
        third = reply(client, session, BODY, key="r-3")
        assert third["Idempotent-Replayed"] == "true"
        assert third.json() == retried.json()
        assert len(fake_openai.requests) == 2

    def test_another_users_session_is_404_with_a_key_and_nothing_is_asked_or_stored(
        self, user, other_user, fake_openai
    ):
        theirs = ChatSessionFactory(user=other_user)
        for stream in (False, True):
            envelope(
                reply(client_for(user), theirs, BODY, key="r-5", stream=stream), 404, "not_found"
            )
        assert not IdempotencyKey.objects.exists()
        assert not Message.objects.exists()
        assert fake_openai.requests == []

    def test_a_failure_before_anything_is_stored_leaves_no_key(self, user, fake_openai):
        session = ChatSessionFactory(user=user, archived=True)
        envelope(reply(client_for(user), session, BODY, key="r-4"), 409, "conflict")
        assert not IdempotencyKey.objects.exists()
        assert fake_openai.requests == []

    def test_a_retried_stream_reuses_the_user_message_and_streams_a_new_answer(
        self, user, fake_openai
    ):
        """A streamed reply cannot be replayed (it is not a stored JSON response): a retry
        with the same key streams a new answer, but never stores the user message again."""
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        fake_openai.fail_next("close_mid_stream")
        broken = reply(client, session, BODY, key="s-1", stream=True)
        assert parse_sse(b"".join(broken.streaming_content))[-1][0] == "error"

        retried = reply(client, session, BODY, key="s-1", stream=True)
        events = parse_sse(b"".join(retried.streaming_content))
        assert events[-1][0] == "message.completed"
        assert [role for role, _ in rows(session)] == ["user", "assistant", "assistant"]
        assert Message.objects.get(session=session, seq=2).finish_reason == "interrupted"
        assert Message.objects.get(session=session, seq=3).finish_reason == "stop"
        assert sent_user_contents(fake_openai.requests[1]) == [BODY["content"]]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_replies_with_one_key_make_one_user_message_and_one_llm_call(
    user, fake_openai
):
    from django.db import connection

    fake_openai.latency_ms = 400  # the first is still waiting on the model when the second runs
    session = ChatSessionFactory(user=user)
    client = client_for(user)
    barrier = threading.Barrier(2)
    responses = []

    def run():
        try:
            barrier.wait(timeout=10)
            responses.append(reply(client, session, BODY, key="race"))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    statuses = sorted(r.status_code for r in responses)
    assert statuses in ([201, 201], [201, 409]), statuses
    for r in responses:
        if r.status_code == 409:
            assert "in progress" in r.json()["error"]["message"]
    ok = [r.json() for r in responses if r.status_code == 201]
    assert all(body == ok[0] for body in ok)
    assert len(fake_openai.requests) == 1
    assert rows(session) == [("user", BODY["content"]), ("assistant", DEFAULT_REPLY)]
    replay = reply(client, session, BODY, key="race")
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == ok[0]


# --- Against a live gunicorn ------------------------------------------------------------------


@pytest.fixture
def live_fake_openai():
    with FakeOpenAI() as fake:
        yield fake


def llm_env(fake: FakeOpenAI) -> dict[str, str]:
    return {
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "OPENAI_BASE_URL": fake.base_url,
        "LLM_MAX_RETRIES": "0",
        "LLM_TIMEOUT_S": "5",
    }


def assert_well_formed(messages: list[dict], *, system_prompt: str) -> None:
    """System prompt first, only then the conversation; every tool result after its call."""
    assert messages[0] == {"role": "system", "content": system_prompt}
    assert all(m["role"] != "system" for m in messages[1:])
    called: set[str] = set()
    for m in messages:
        for call in m.get("tool_calls") or []:
            called.add(call["id"])
        if m["role"] == "tool":
            assert m["tool_call_id"] in called, m


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
class TestLiveServer:
    @pytest.fixture
    def live_server_env(self, live_fake_openai):
        return llm_env(live_fake_openai)

    @pytest.mark.server_workers(2)
    def test_two_replies_racing_on_one_session_both_complete_in_order(
        self, user, live_fake_openai, live_server_env, live_server_process
    ):
        base, _ = live_server_process
        live_fake_openai.latency_ms = 300  # both are waiting on the model at the same time
        session = ChatSessionFactory(user=user, system_prompt="Be brief.")
        token = api_key_for(user)
        barrier = threading.Barrier(2)
        results = {}

        def run(i):
            barrier.wait(timeout=10)
            results[i] = http(
                "POST", f"{base}{reply_url(session)}", token, {"content": f"question {i}"}
            )

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)

        assert [results[i][0] for i in range(2)] == [201, 201], results
        stored = {m.pk: m for m in Message.objects.filter(session=session)}
        assert sorted(m.seq for m in stored.values()) == [1, 2, 3, 4]
        for i in range(2):
            body = results[i][1]
            user_message = stored[int(body["user_message"]["id"])]
            assistant = stored[int(body["message"]["id"])]
            assert user_message.content == f"question {i}"
            assert assistant.seq > user_message.seq
            assert assistant.context["last_seq"] >= user_message.seq
            assert assistant.context["first_seq"] <= user_message.seq
        # What each LLM call was sent: well-formed, chronological, its own question included.
        assert len(live_fake_openai.requests) == 2
        for sent in live_fake_openai.requests:
            assert_well_formed(sent["messages"], system_prompt="Be brief.")
            asked = sent_user_contents(sent)
            assert asked in (
                ["question 0"],
                ["question 1"],
                ["question 0", "question 1"],
                ["question 1", "question 0"],
            )
        # Chronological: the order sent is the order stored.
        by_content = {m.content: m.seq for m in stored.values() if m.role == "user"}
        for sent in live_fake_openai.requests:
            seqs = [by_content[c] for c in sent_user_contents(sent)]
            assert seqs == sorted(seqs)

    def test_the_llm_dropping_the_stream_ends_in_an_error_event_and_keeps_the_partial(
        self, user, live_fake_openai, live_server_env, live_server_process
    ):
        base, _ = live_server_process
        live_fake_openai.fail_next("close_mid_stream")
        session = ChatSessionFactory(user=user)
        token = api_key_for(user)
        status, raw = http(
            "POST",
            f"{base}{reply_url(session, stream=True)}",
            token,
            {"content": "tell me"},
            raw=True,
        )
        assert status in (200, 201)  # the stream's status is not what this test is about
        events = parse_sse(raw)
        assert [name for name, _ in events] == ["message.delta", "message.delta", "error"]
        assert events[-1][1]["error"]["type"] == "llm_upstream_error"
        assert "Traceback" not in raw.decode()
        partial = "".join(data["delta"] for _, data in events[:-1])
        assert rows(session) == [("user", "tell me"), ("assistant", partial)]
        assert Message.objects.get(session=session, role="assistant").finish_reason == (
            "interrupted"
        )
        # The session goes on: the next reply works and sees the partial in its history.
        status, body = http("POST", f"{base}{reply_url(session)}", token, {"content": "again"})
        assert status == 201, body
        assert body["message"]["seq"] == 4


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
class TestRedisStoppedMidRun:
    """The server's Redis is a throwaway redis-server of this test (never the shared one)."""

    @pytest.fixture
    def own_redis_server(self):
        if not shutil.which("redis-server"):
            pytest.fail("redis-server is not installed (this test starts its own)")
        server = OwnRedis()
        server.start()
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture
    def live_server_env(self, live_fake_openai, own_redis_server):
        # Retry Redis on every call, so the heal after the restart is seen at once.
        return {
            **llm_env(live_fake_openai),
            "REDIS_URL": own_redis_server.url,
            "CHATENGINE_CACHE_RETRY_S": "0",
        }

    def test_appends_history_and_replies_go_on_and_the_cache_heals(
        self, user, live_fake_openai, own_redis_server, live_server_env, live_server_process
    ):
        base, _ = live_server_process
        session = ChatSessionFactory(user=user)
        token = api_key_for(user)
        messages = f"{base}/api/v1/sessions/{session.pk}/messages/"
        sent: list[str] = []

        def round_of(tag: str) -> None:
            for i in range(3):
                status, body = http(
                    "POST", messages, token, {"role": "user", "content": f"{tag} {i}"}
                )
                assert status == 201, body
                sent.append(f"{tag} {i}")
            status, body = http("POST", f"{base}{reply_url(session)}", token, {"content": tag})
            assert status == 201, body
            sent.extend([tag, DEFAULT_REPLY])
            status, page = http("GET", f"{messages}?limit=100", token)
            assert status == 200, page
            assert [m["content"] for m in page["results"]] == sent  # nothing lost, in order
            status, context = http("GET", f"{base}/api/v1/sessions/{session.pk}/context/", token)
            assert status == 200, context

        round_of("before")
        cached = own_redis_server.client().keys(f"*{session.pk}*")
        assert cached, "the cache was not in use before the outage"

        own_redis_server.stop()
        round_of("during")

        own_redis_server.start()  # empty: a restarted Redis has lost everything
        round_of("after")
        http("GET", f"{messages}?limit=100", token)
        assert own_redis_server.client().keys(f"*{session.pk}*"), "the cache did not heal"
        stored = list(
            Message.objects.filter(session=session)
            .order_by("seq")
            .values_list("content", flat=True)
        )
        assert stored == sent
