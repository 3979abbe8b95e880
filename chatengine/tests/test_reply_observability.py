"""What a reply leaves behind for an operator: llm.* events and metrics with real values, cache
counters and `cache.fallback`, the request id on every line (streamed bodies included, under
WSGI and ASGI), and the reply's access line.

Replies go through the real `openai` SDK to the fake server on loopback (`fake_openai`).
The no-secrets round trip is in test_logging.py (test_no_content_prompt_or_token_reaches_the_logs).
"""

import asyncio
import gc
import logging
from contextlib import contextmanager

import pytest
from prometheus_client import REGISTRY

import chatengine.asgi  # noqa: F401  (see below)
from accounts.tests.factories import api_key_for
from conversations import cache as history_cache
from conversations.tests.factories import ChatSessionFactory
from llm.tests.fake_openai import DEFAULT_REPLY
from llm.tests.test_api import asgi_post, parse_sse

# Importing chatengine.asgi runs django.setup() again, and its dictConfig replaces the root
# logger's handlers: done at collection, before any test's `json_logs` handler is added.

SESSIONS = "/api/v1/sessions/"
REPLY_ROUTE = "/api/v1/sessions/{session_id}/reply/"
STREAM_ROUTE = "/api/v1/sessions/{session_id}/reply/stream/"
ASGI_REQUEST_ID = "asgi-test-1"  # the id llm.tests.test_api.asgi_post sends
# A streamed reply's status, sent before the first event: the same 201 as the JSON answer.
STREAMED = 201
# The fake server counts whitespace-separated words as tokens.
COMPLETION_TOKENS = len(DEFAULT_REPLY.split())


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Metrics:
    """The llm/cache series of interest, read from the registry /metrics serves."""

    SERIES = {
        "ok": ("chatengine_llm_requests_total", {"provider": "openai", "outcome": "ok"}),
        "rate_limited": (
            "chatengine_llm_requests_total",
            {"provider": "openai", "outcome": "rate_limited"},
        ),
        "upstream_error": (
            "chatengine_llm_requests_total",
            {"provider": "openai", "outcome": "upstream_error"},
        ),
        "timeout": ("chatengine_llm_requests_total", {"provider": "openai", "outcome": "timeout"}),
        "interrupted": (
            "chatengine_llm_requests_total",
            {"provider": "openai", "outcome": "interrupted"},
        ),
        "latency_count": ("chatengine_llm_latency_seconds_count", {"provider": "openai"}),
        "latency_sum": ("chatengine_llm_latency_seconds_sum", {"provider": "openai"}),
        "prompt_tokens": ("chatengine_llm_tokens_total", {"provider": "openai", "kind": "prompt"}),
        "completion_tokens": (
            "chatengine_llm_tokens_total",
            {"provider": "openai", "kind": "completion"},
        ),
        "cache_hit": ("chatengine_cache_events_total", {"event": "hit"}),
        "cache_miss": ("chatengine_cache_events_total", {"event": "miss"}),
        "cache_error": ("chatengine_cache_events_total", {"event": "error"}),
        "cache_rebuild": ("chatengine_cache_events_total", {"event": "rebuild"}),
    }

    def __init__(self):
        self.before = self.now()

    def now(self) -> dict[str, float]:
        return {key: sample(name, **labels) for key, (name, labels) in self.SERIES.items()}

    def delta(self) -> dict[str, float]:
        """Only the series that moved, and by how much."""
        now = self.now()
        moved = {key: now[key] - self.before[key] for key in now}
        return {key: round(value, 6) for key, value in moved.items() if value}


@pytest.fixture(autouse=True)
def _fresh_cache_state():
    history_cache.reset_backoff()  # no back-off or warning clock left by another test
    yield
    history_cache.reset_backoff()


@pytest.fixture
def failing_cache(broken_cache, settings):
    """Redis on a closed port, tried on every call (no back-off), so every cache op logs."""
    settings.CHATENGINE_CACHE_RETRY_S = 0
    return broken_cache


def reply_url(session_id) -> str:
    return f"{SESSIONS}{session_id}/reply/"


def stream_url(session_id) -> str:
    return f"{SESSIONS}{session_id}/reply/stream/"


def url_for(session_id, *, stream: bool) -> str:
    return (stream_url if stream else reply_url)(session_id)


def fake_prompt_tokens(request: dict) -> int:
    return sum(len(str(m.get("content") or "").split()) for m in request["messages"])


def read(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def of_request(json_logs, request_id: str) -> list[dict]:
    """Every captured line, checked to belong to the request (asyncio's loop set-up aside)."""
    lines = [line for line in json_logs.lines if line["logger"] != "asyncio"]
    strays = [
        (line["logger"], line["message"]) for line in lines if line["request_id"] != request_id
    ]
    assert strays == []
    return lines


def shown(lines: list[dict]) -> list[dict]:
    """The lines at INFO or above (the SDK's DEBUG lines may come after the access line: its
    async stream is finalised when collected)."""
    return [line for line in lines if logging.getLevelName(line["level"]) >= logging.INFO]


# --- llm.* events and metrics ---------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
class TestLLMEventsAndMetrics:
    @pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
    def test_a_reply_logs_request_and_response_with_real_tokens_and_latency(
        self, auth_client, user, settings, fake_openai, json_logs, stream
    ):
        fake_openai.latency_ms = 60  # the provider call takes at least this long
        session = ChatSessionFactory(user=user, system_prompt="Be brief.")
        metrics = Metrics()

        response = auth_client.post(
            url_for(session.pk, stream=stream), {"content": "hello there"}, format="json"
        )
        body = read(response)
        assert response.status_code == 201, body

        (sent,) = fake_openai.requests
        prompt_tokens = fake_prompt_tokens(sent)
        assert prompt_tokens == 4  # "Be brief." + "hello there"
        request = json_logs.one(event="llm.request")
        assert request["level"] == "INFO"
        assert request["provider"] == "openai"
        assert request["model"] == settings.LLM_MODEL == sent["model"]
        assert request["messages"] == 2
        if not stream:  # our own estimate of the prompt, as the reply reports it
            assert request["prompt_tokens"] == response.json()["context"]["tokens"]
        assert request["prompt_tokens"] > 0

        reply = json_logs.one(event="llm.response")
        assert reply["level"] == "INFO"
        assert reply["provider"] == "openai"
        assert reply["model"] == sent["model"]
        # What the provider reported, not our estimate.
        assert reply["prompt_tokens"] == prompt_tokens
        assert reply["completion_tokens"] == COMPLETION_TOKENS
        assert reply["finish_reason"] == "stop"
        assert isinstance(reply["latency_ms"], int)
        assert 60 <= reply["latency_ms"] < 2000
        assert json_logs.where(event="llm.error") == []

        moved = metrics.delta()
        latency = moved.pop("latency_sum")
        assert 0.06 <= latency < 2
        assert latency == pytest.approx(reply["latency_ms"] / 1000, abs=0.002)
        cache = {key: moved.pop(key) for key in list(moved) if key.startswith("cache_")}
        assert moved == {
            "ok": 1,
            "latency_count": 1,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": COMPLETION_TOKENS,
        }
        # The context is read from the database, never through the history cache (issue 20):
        # no cache event, with or without Redis.
        assert cache == {}

    @pytest.mark.parametrize(
        ("mode", "stream", "category", "error_type"),
        [
            ("rate_limit", False, "rate_limited", "rate_limited"),
            ("server_error", False, "upstream_error", "llm_upstream_error"),
            ("hang", False, "timeout", "llm_timeout"),
            ("rate_limit", True, "rate_limited", "rate_limited"),
            ("server_error", True, "upstream_error", "llm_upstream_error"),
            ("hang", True, "timeout", "llm_timeout"),
        ],
    )
    def test_a_failed_call_logs_llm_error_with_its_category_and_counts_its_outcome(
        self,
        auth_client,
        user,
        settings,
        fake_openai,
        json_logs,
        mode,
        stream,
        category,
        error_type,
    ):
        settings.LLM_TIMEOUT_S = 0.3
        fake_openai.fail_next(mode)
        session = ChatSessionFactory(user=user)
        metrics = Metrics()

        response = auth_client.post(
            url_for(session.pk, stream=stream), {"content": "hi"}, format="json"
        )
        body = read(response)
        if stream:  # the failure arrives inside the stream
            assert parse_sse(body)[-1][1]["error"]["type"] == error_type
        else:
            assert response.json()["error"]["type"] == error_type

        error = json_logs.one(event="llm.error")
        assert error["level"] == "WARNING"
        assert (error["category"], error["error_type"]) == (category, error_type)
        assert error["provider"] == "openai"
        assert error["model"] == settings.LLM_MODEL
        assert isinstance(error["latency_ms"], int)
        if mode == "hang":
            assert error["latency_ms"] >= 300  # it waited for the timeout
        assert json_logs.where(event="llm.response") == []
        assert len(json_logs.where(event="llm.request")) == 1
        # The error response is logged with its category, streamed (after a 200) or not.
        logged = json_logs.one(logger="chatengine.errors")
        status = {"rate_limited": 429, "llm_upstream_error": 502, "llm_timeout": 504}[error_type]
        assert (logged["error_type"], logged["status"]) == (error_type, status)
        assert logged["request_id"] == response["X-Request-ID"]
        if status >= 500:
            assert logged["level"] == "ERROR"
            assert "Traceback" in logged["exc_info"]
        else:
            assert logged["level"] == "WARNING"

        moved = metrics.delta()
        assert 0 < moved.pop("latency_sum") < 2
        moved = {key: value for key, value in moved.items() if not key.startswith("cache_")}
        assert moved == {category: 1, "latency_count": 1}  # no ok, no tokens

    def test_a_client_leaving_mid_stream_counts_as_interrupted(self, user, fake_openai, json_logs):
        fake_openai.chunk_delay_ms = 100  # the model is still talking when the client leaves
        session = ChatSessionFactory(user=user)
        token = api_key_for(user)
        metrics = Metrics()
        status, _ = asyncio.run(
            asgi_post(
                stream_url(session.pk),
                {"content": "hi"},
                token,
                disconnect_after_deltas=2,
            )
        )
        assert status == STREAMED
        reply = json_logs.one(event="llm.response")
        assert reply["finish_reason"] == "interrupted"
        assert reply["completion_tokens"] is None  # the usage chunk never came
        moved = metrics.delta()
        assert (moved.get("interrupted"), moved.get("ok")) == (1, None)
        assert "completion_tokens" not in moved


# --- cache counters and cache.fallback ----------------------------------------------------------
@pytest.mark.django_db(transaction=True)
class TestCacheMetrics:
    @pytest.mark.redis
    def test_a_history_read_misses_rebuilds_then_hits(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        url = f"{SESSIONS}{session.pk}/messages/"
        assert auth_client.post(url, {"role": "user", "content": "a"}, format="json").status_code
        metrics = Metrics()
        assert auth_client.get(url).status_code == 200
        assert metrics.delta() == {"cache_miss": 1, "cache_rebuild": 1}
        metrics = Metrics()
        assert auth_client.get(url).status_code == 200
        assert metrics.delta() == {"cache_hit": 1}

    def test_an_unreachable_redis_counts_errors_and_logs_cache_fallback(
        self, auth_client, user, failing_cache, json_logs
    ):
        session = ChatSessionFactory(user=user)
        url = f"{SESSIONS}{session.pk}/messages/"
        metrics = Metrics()
        response = auth_client.get(url, HTTP_X_REQUEST_ID="req-cache-down")
        assert response.status_code == 200  # served from the database
        # The read failed (an error, and a miss the database answered).
        assert metrics.delta() == {"cache_error": 1, "cache_miss": 1}
        fallback = json_logs.one(event="cache.fallback")
        assert fallback["level"] == "WARNING"
        assert fallback["op"] == "read"
        assert fallback["error"] == "ConnectionError"
        assert fallback["session_id"] == str(session.pk)
        assert fallback["request_id"] == "req-cache-down"
        assert fallback["logger"] == "chatengine.events"


# --- the request id on every line of a reply ---------------------------------------------------
@pytest.fixture(params=[pytest.param("cache-up", marks=pytest.mark.redis), "cache-down"])
def cache_state(request):
    """Run once with the configured cache and once with Redis on a closed port."""
    if request.param == "cache-down":
        request.getfixturevalue("failing_cache")
    return request.param


def _assert_cache_lines(lines: list[dict], cache_state: str) -> None:
    # A reply touches the cache only to write its messages through: its context is read from
    # the database (issue 20), so no cache read happens and, with Redis up, nothing is logged.
    fallbacks = [line for line in lines if line.get("event") == "cache.fallback"]
    if cache_state == "cache-down":
        assert fallbacks[0]["op"] == "append"  # the user message's write-through
        assert fallbacks[0]["level"] == "WARNING"  # then DEBUG: warned once a minute
        assert {line["op"] for line in fallbacks} == {"append"}
    else:
        assert fallbacks == []


@contextmanager
def only_this_request(json_logs, caplog):
    """Capture down to DEBUG, and only what the request logs.

    Earlier tests' async clients log their connections' close at DEBUG when the garbage
    collector finalises them (outside any request): collect first, and not during the request.
    """
    gc.collect()
    json_logs.stream.seek(0)
    json_logs.stream.truncate()
    gc.disable()
    try:
        with caplog.at_level(logging.DEBUG):
            yield
    finally:
        gc.enable()


@pytest.mark.django_db(transaction=True)
class TestRequestIdThroughAReply:
    """Everything a reply logs (access, events, llm, cache, SDK) carries the caller's id.

    Captured down to DEBUG, so the cache's and the SDK's debug lines are checked as well.
    """

    def test_a_whole_reply(self, auth_client, user, fake_openai, json_logs, caplog, cache_state):
        session = ChatSessionFactory(user=user)
        with only_this_request(json_logs, caplog):
            response = auth_client.post(
                reply_url(session.pk), {"content": "hi"}, format="json", HTTP_X_REQUEST_ID="req-r1"
            )
        assert response.status_code == 201
        lines = of_request(json_logs, "req-r1")
        events = [line.get("event") for line in lines]
        assert events.count("message.appended") == 2
        for event in ("llm.request", "llm.response"):
            assert event in events
        assert [line for line in lines if line["logger"].startswith("openai")]
        assert shown(lines)[-1]["logger"] == "chatengine.access"
        _assert_cache_lines(lines, cache_state)

    def test_a_reply_streamed_under_wsgi(
        self, auth_client, user, fake_openai, json_logs, caplog, cache_state
    ):
        session = ChatSessionFactory(user=user)
        with only_this_request(json_logs, caplog):
            response = auth_client.post(
                stream_url(session.pk),
                {"content": "hi"},
                format="json",
                HTTP_X_REQUEST_ID="req-s1",
            )
            assert json_logs.where(event="llm.response") == []  # not yet: nothing was read
            body = read(response)  # the middleware has returned; the body runs now
        assert parse_sse(body)[-1][0] == "message.completed"
        lines = of_request(json_logs, "req-s1")
        events = [line.get("event") for line in lines]
        assert events.count("message.appended") == 2
        assert "llm.request" in events
        assert events.index("llm.response") > events.index("message.appended")
        # The assistant's message.appended, then the access line once the stream has ended.
        assert [line.get("event") for line in shown(lines)][-2:] == ["message.appended", None]
        assert shown(lines)[-1]["logger"] == "chatengine.access"
        _assert_cache_lines(lines, cache_state)

    def test_a_reply_streamed_under_asgi(self, user, fake_openai, json_logs, caplog, cache_state):
        session = ChatSessionFactory(user=user)
        token = api_key_for(user)
        with only_this_request(json_logs, caplog):
            status, body = asyncio.run(asgi_post(stream_url(session.pk), {"content": "hi"}, token))
        assert status == STREAMED
        assert parse_sse(body)[-1][0] == "message.completed"
        lines = of_request(json_logs, ASGI_REQUEST_ID)
        events = [line.get("event") for line in lines]
        assert events.count("message.appended") == 2
        for event in ("llm.request", "llm.response"):
            assert event in events
        assert shown(lines)[-1]["logger"] == "chatengine.access"
        _assert_cache_lines(lines, cache_state)


# --- the reply's access line ---------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
class TestReplyAccessLine:
    def test_a_whole_reply_logs_the_route_template_and_session(
        self, auth_client, user, fake_openai, json_logs
    ):
        session = ChatSessionFactory(user=user)
        assert auth_client.post(reply_url(session.pk), {"content": "hi"}, format="json").status_code
        fake_openai.fail_next("server_error")
        auth_client.post(reply_url(session.pk), {"content": "hi"}, format="json")
        ok, failed = json_logs.where(logger="chatengine.access")
        for access in (ok, failed):
            assert access["method"] == "POST"
            assert access["path"] == REPLY_ROUTE
            assert access["session_id"] == str(session.pk)
            assert access["user_id"] == user.pk
        assert (ok["status"], failed["status"]) == (201, 502)

    def test_a_wsgi_stream_is_logged_when_it_ends_with_its_full_duration(
        self, auth_client, user, fake_openai, json_logs
    ):
        fake_openai.chunk_delay_ms = 40  # ~10 chunks: the stream lasts about 0.4 s
        session = ChatSessionFactory(user=user)
        labels = {"method": "POST", "route": STREAM_ROUTE}
        before = sample(
            "chatengine_http_request_duration_seconds_sum", **labels, status=str(STREAMED)
        )
        response = auth_client.post(stream_url(session.pk), {"content": "hi"}, format="json")
        assert json_logs.where(logger="chatengine.access") == []  # the stream has not run yet
        read(response)
        access = json_logs.one(logger="chatengine.access")
        assert access["path"] == STREAM_ROUTE
        assert access["session_id"] == str(session.pk)
        assert access["status"] == response.status_code
        assert response.status_code == STREAMED
        assert access["duration_ms"] >= 350  # to the last byte, not to the view's return
        assert json_logs.lines[-1] == access  # written after everything the stream logged
        observed = (
            sample("chatengine_http_request_duration_seconds_sum", **labels, status=str(STREAMED))
            - before
        )
        assert observed == pytest.approx(access["duration_ms"] / 1000, abs=0.002)

    def test_an_asgi_stream_is_logged_when_it_ends_with_its_full_duration(
        self, user, fake_openai, json_logs
    ):
        fake_openai.chunk_delay_ms = 40
        session = ChatSessionFactory(user=user)
        token = api_key_for(user)
        status, _ = asyncio.run(asgi_post(stream_url(session.pk), {"content": "hi"}, token))
        assert status == STREAMED
        access = json_logs.one(logger="chatengine.access")
        assert (access["path"], access["status"]) == (STREAM_ROUTE, status)
        assert access["session_id"] == str(session.pk)
        assert access["request_id"] == ASGI_REQUEST_ID
        assert access["user_id"] == user.pk
        assert access["duration_ms"] >= 350
        assert json_logs.lines[-1] == access
