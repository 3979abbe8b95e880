import asyncio
import json
import logging

import pytest

from accounts.tests.factories import api_key_for
from chatengine.request_id import get_request_id
from conversations.models import Message
from conversations.serializers import UserMessageInputSerializer
from conversations.tests.factories import ChatSessionFactory, MessageFactory, UserFactory
from conversations.tests.test_api import assert_error
from llm.providers.openai import CREDENTIALS_REJECTED
from llm.serializers import STREAM_MOVED, ReplyInputSerializer, ReplyStreamInputSerializer


def reply_url(session_id) -> str:
    return f"/api/v1/sessions/{session_id}/reply/"


def stream_url(session_id) -> str:
    return f"/api/v1/sessions/{session_id}/reply/stream/"


def context_url(session_id) -> str:
    return f"/api/v1/sessions/{session_id}/context/"


def parse_sse(raw: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def roles(session) -> list[str]:
    return list(
        Message.objects.filter(session=session).order_by("seq").values_list("role", flat=True)
    )


@pytest.fixture
def echo(settings):
    settings.LLM_PROVIDER = "echo"


@pytest.mark.django_db
class TestReply:
    def test_it_appends_the_user_message_and_answers_201_with_the_reply(
        self, auth_client, user, echo
    ):
        session = ChatSessionFactory(user=user)
        response = auth_client.post(reply_url(session.pk), {"content": "Ping"}, format="json")
        assert response.status_code == 201, response.content
        body = response.json()
        assert set(body) == {"user_message", "message", "context"}
        assert body["user_message"]["content"] == "Ping"
        assert body["message"]["content"] == "Echo: Ping"
        assert body["message"]["model"] == "echo"
        assert body["message"]["finish_reason"] == "stop"
        assert set(body["message"]["usage"]) == {
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
        }
        assert body["message"]["context"]["last_seq"] == 1
        assert set(body["context"]) == {
            "tokens",
            "budget",
            "messages_included",
            "messages_dropped",
            "strategy",
            "summary",
        }
        assert (body["context"]["strategy"], body["context"]["summary"]) == ("window", None)
        assert roles(session) == ["user", "assistant"]

    def test_without_content_it_replies_to_the_history(self, auth_client, user, fake_openai):
        session = ChatSessionFactory(user=user)
        MessageFactory(session=session, content="Earlier question")
        response = auth_client.post(reply_url(session.pk), {"model": "gpt-4.1"}, format="json")
        assert response.status_code == 201, response.content
        assert response.json()["user_message"] is None
        assert fake_openai.requests[0]["model"] == "gpt-4.1"
        assert fake_openai.requests[0]["messages"][-1]["content"] == "Earlier question"
        assert response.json()["message"]["model"] == "gpt-4.1"

    @pytest.mark.parametrize(
        ("payload", "field"),
        [
            ({"content": ""}, "content"),
            ({"content": 5}, "content"),
            ({"content": "hi", "stream": "yes"}, "stream"),
            ({"content": "hi", "max_output_tokens": "5"}, "max_output_tokens"),
            ({"content": "hi", "max_output_tokens": 0}, "max_output_tokens"),
            ({"content": "hi", "metadata": []}, "metadata"),
            ({"content": "hi", "temperature": 1}, "temperature"),
        ],
    )
    def test_invalid_requests_are_400_and_store_nothing(
        self, auth_client, user, echo, payload, field
    ):
        session = ChatSessionFactory(user=user)
        error = assert_error(
            auth_client.post(reply_url(session.pk), payload, format="json"), 400, "validation_error"
        )
        assert field in error["details"]
        assert roles(session) == []

    def test_an_archived_session_is_409_and_stores_nothing(self, auth_client, user, echo):
        session = ChatSessionFactory(user=user, archived=True)
        assert_error(
            auth_client.post(reply_url(session.pk), {"content": "hi"}, format="json"),
            409,
            "conflict",
        )
        assert roles(session) == []

    def test_a_message_too_big_for_the_context_is_422_and_stores_nothing(
        self, auth_client, user, settings, echo
    ):
        settings.LLM_MODEL_CONTEXT_WINDOWS = {"tiny": 300}
        session = ChatSessionFactory(user=user, model="tiny")
        response = auth_client.post(
            reply_url(session.pk),
            {"content": "word " * 400, "max_output_tokens": 100},
            format="json",
        )
        error = assert_error(response, 422, "context_overflow")
        assert error["details"]["over_by"] > 0
        assert f"{error['details']['over_by']} tokens" in error["message"]
        assert roles(session) == []

    def test_another_users_session_is_404(self, auth_client, echo):
        theirs = ChatSessionFactory(user=UserFactory())
        assert_error(
            auth_client.post(reply_url(theirs.pk), {"content": "hi"}, format="json"),
            404,
            "not_found",
        )
        assert roles(theirs) == []

    def test_stream_true_is_a_400_naming_the_streaming_path_and_stores_nothing(
        self, auth_client, user, fake_openai
    ):
        session = ChatSessionFactory(user=user)
        response = auth_client.post(
            reply_url(session.pk), {"content": "hi", "stream": True}, format="json"
        )
        error = assert_error(response, 400, "validation_error")
        assert error["details"] == {"stream": [STREAM_MOVED]}
        assert "/api/v1/sessions/{id}/reply/stream/" in STREAM_MOVED
        assert roles(session) == []
        assert fake_openai.requests == []

    def test_accept_event_stream_does_not_turn_a_plain_reply_into_a_406(
        self, auth_client, user, echo
    ):
        session = ChatSessionFactory(user=user)
        response = auth_client.post(
            reply_url(session.pk), {"content": "hi"}, format="json", HTTP_ACCEPT="text/event-stream"
        )
        assert response.status_code == 201


@pytest.mark.django_db
class TestUpstreamFailures:
    @pytest.mark.parametrize(
        ("mode", "status", "error_type"),
        [
            ("rate_limit", 429, "rate_limited"),
            ("server_error", 502, "llm_upstream_error"),
            ("unauthorized", 502, "llm_upstream_error"),
            ("malformed", 502, "llm_upstream_error"),
            ("hang", 504, "llm_timeout"),
        ],
    )
    def test_each_failure_answers_the_envelope_and_keeps_the_user_message(
        self, auth_client, user, settings, fake_openai, mode, status, error_type
    ):
        settings.LLM_TIMEOUT_S = 0.3
        fake_openai.fail_next(mode)
        session = ChatSessionFactory(user=user)
        response = auth_client.post(reply_url(session.pk), {"content": "hi"}, format="json")
        error = assert_error(response, status, error_type)
        assert roles(session) == ["user"]
        if mode == "rate_limit":
            assert response["Retry-After"] == "7"
        if mode == "unauthorized":
            assert error["message"] == CREDENTIALS_REJECTED
            assert "sk-test" not in response.content.decode()

    def test_logs_carry_no_content_prompt_or_key(self, auth_client, user, fake_openai, caplog):
        session = ChatSessionFactory(user=user, system_prompt="SECRET-SYSTEM-PROMPT")
        with caplog.at_level(logging.INFO):
            auth_client.post(reply_url(session.pk), {"content": "SECRET-USER-TEXT"}, format="json")
            fake_openai.fail_next("unauthorized")
            auth_client.post(reply_url(session.pk), {"content": "SECRET-USER-TEXT"}, format="json")
        events = [r for r in caplog.records if getattr(r, "event", "").startswith("llm.")]
        assert [r.event for r in events] == [
            "llm.request",
            "llm.response",
            "llm.request",
            "llm.error",
        ]
        assert events[1].prompt_tokens > 0
        assert events[1].finish_reason == "stop"
        assert events[3].category == "credentials"
        for record in caplog.records:
            text = record.getMessage() + json.dumps(record.__dict__, default=str)
            for secret in (
                "SECRET-SYSTEM-PROMPT",
                "SECRET-USER-TEXT",
                "sk-test",
                fake_openai.reply_text,
            ):
                assert secret not in text


def leave_a_stream_after_its_first_event(client, session) -> None:
    response = client.post(stream_url(session.pk), {"content": "hi"}, format="json")
    next(iter(response.streaming_content))
    # What a WSGI server does when the client is gone: close the body iterator. (The test
    # client's own wrapper then closes the response, keeping the test's database connection
    # open across request_finished.)
    response._iterator.close()


@pytest.mark.django_db
class TestStreamingUnderWSGI:
    def test_it_streams_deltas_then_the_stored_message(self, auth_client, user, fake_openai):
        session = ChatSessionFactory(user=user)
        response = auth_client.post(stream_url(session.pk), {"content": "hi"}, format="json")
        assert response.status_code == 201
        assert response["Content-Type"] == "text/event-stream"
        content = iter(response.streaming_content)
        first = next(content)
        # Incremental: the first delta is out before the reply is complete and stored.
        assert parse_sse(first)[0][0] == "message.delta"
        assert roles(session) == ["user"]
        events = parse_sse(first + b"".join(content))
        names = [name for name, _ in events]
        assert names == ["message.delta"] * (len(names) - 1) + ["message.completed"]
        text = "".join(data["delta"] for name, data in events[:-1])
        stored = Message.objects.get(session=session, role="assistant")
        assert text == stored.content == fake_openai.reply_text
        assert events[-1][1]["id"] == stored.id
        assert stored.finish_reason == "stop"
        assert stored.usage["completion_tokens"] > 0
        assert stored.context["last_seq"] == 1

    def test_an_upstream_break_sends_error_and_stores_the_partial_reply(
        self, auth_client, user, fake_openai
    ):
        fake_openai.fail_next("close_mid_stream")
        session = ChatSessionFactory(user=user)
        response = auth_client.post(stream_url(session.pk), {"content": "hi"}, format="json")
        events = parse_sse(b"".join(response.streaming_content))
        assert [n for n, _ in events] == ["message.delta", "message.delta", "error"]
        assert events[-1][1]["error"]["type"] == "llm_upstream_error"
        assert events[-1][1]["error"]["request_id"] == response["X-Request-ID"]
        stored = Message.objects.get(session=session, role="assistant")
        assert stored.finish_reason == "interrupted"
        assert stored.content == "".join(d["delta"] for n, d in events[:-1])

    def test_a_429_before_any_delta_sends_error_and_keeps_only_the_user_message(
        self, auth_client, user, fake_openai
    ):
        fake_openai.fail_next("rate_limit")
        session = ChatSessionFactory(user=user)
        response = auth_client.post(stream_url(session.pk), {"content": "hi"}, format="json")
        events = parse_sse(b"".join(response.streaming_content))
        assert [n for n, _ in events] == ["error"]
        assert events[0][1]["error"]["type"] == "rate_limited"
        assert roles(session) == ["user"]

    def test_an_upstream_429_error_event_says_when_to_retry_like_the_json_reply(
        self, auth_client, user, fake_openai
    ):
        fake_openai.fail_next("rate_limit")
        response = auth_client.post(
            stream_url(ChatSessionFactory(user=user).pk), {"content": "hi"}, format="json"
        )
        ((name, data),) = parse_sse(b"".join(response.streaming_content))
        assert name == "error"
        assert data["retry_after"] == int(fake_openai.retry_after) == 7
        assert set(data) == {"error", "retry_after"}

    def test_an_error_without_a_retry_time_has_no_retry_after(self, auth_client, user, fake_openai):
        fake_openai.fail_next("server_error")
        response = auth_client.post(
            stream_url(ChatSessionFactory(user=user).pk), {"content": "hi"}, format="json"
        )
        ((name, data),) = parse_sse(b"".join(response.streaming_content))
        assert (name, set(data)) == ("error", {"error"})

    def test_a_client_leaving_stores_what_arrived_as_interrupted(
        self, auth_client, user, fake_openai
    ):
        session = ChatSessionFactory(user=user)
        leave_a_stream_after_its_first_event(auth_client, session)
        stored = Message.objects.get(session=session, role="assistant")
        assert stored.finish_reason == "interrupted"
        assert fake_openai.reply_text.startswith(stored.content)
        assert stored.content
        assert stored.content != fake_openai.reply_text

    def test_a_stream_closed_mid_way_leaves_no_request_id_behind(
        self, auth_client, user, fake_openai
    ):
        leave_a_stream_after_its_first_event(auth_client, ChatSessionFactory(user=user))
        # A later log line of this thread outside any request must not carry that request's id.
        assert get_request_id() is None

    def test_validation_errors_are_json_even_when_streaming_was_asked(
        self, auth_client, user, echo
    ):
        session = ChatSessionFactory(user=user)
        response = auth_client.post(
            stream_url(session.pk),
            {"content": ""},
            format="json",
            HTTP_ACCEPT="text/event-stream",
        )
        assert_error(response, 400, "validation_error")


# --- ASGI: the production streaming path, driven through Django's ASGI handler ------------
async def asgi_post(
    path: str, payload: dict, token: str, *, disconnect_after_deltas: int | None = None
):
    """POST through chatengine.asgi.application; optionally disconnect after N deltas."""
    from chatengine.asgi import application

    body = json.dumps(payload).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {token}".encode()),
            (b"x-request-id", b"asgi-test-1"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    gone = asyncio.Event()
    body_sent = False
    received: list[bytes] = []
    status = {}

    async def receive():
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            status["code"] = message["status"]
        elif message["type"] == "http.response.body":
            if gone.is_set():
                raise OSError("client gone")
            received.append(message.get("body", b""))
            deltas = b"".join(received).count(b"event: message.delta")
            if disconnect_after_deltas is not None and deltas >= disconnect_after_deltas:
                gone.set()

    await asyncio.wait_for(application(scope, receive, send), timeout=20)
    return status.get("code"), b"".join(received)


@pytest.mark.django_db(transaction=True)
class TestStreamingUnderASGI:
    def test_it_streams_and_stores_the_reply(self, user, fake_openai):
        session = ChatSessionFactory(user=user)
        token = api_key_for(user)
        status, raw = asyncio.run(asgi_post(stream_url(session.pk), {"content": "hi"}, token))
        assert status == 201, raw
        events = parse_sse(raw)
        assert events[-1][0] == "message.completed"
        stored = Message.objects.get(session=session, role="assistant")
        assert (
            stored.content == fake_openai.reply_text == "".join(d["delta"] for _, d in events[:-1])
        )
        assert stored.finish_reason == "stop"

    def test_a_disconnect_mid_stream_stores_the_partial_reply_as_interrupted(
        self, user, settings, fake_openai
    ):
        fake_openai.chunk_delay_ms = 100  # the model is still talking when the client leaves
        session = ChatSessionFactory(user=user)
        token = api_key_for(user)
        status, raw = asyncio.run(
            asgi_post(
                stream_url(session.pk),
                {"content": "hi"},
                token,
                disconnect_after_deltas=2,
            )
        )
        assert status == 201, raw
        sent = "".join(d["delta"] for n, d in parse_sse(raw) if n == "message.delta")
        stored = Message.objects.get(session=session, role="assistant")
        assert stored.finish_reason == "interrupted"
        assert stored.content.startswith(sent)
        assert fake_openai.reply_text.startswith(stored.content)
        assert stored.content != fake_openai.reply_text
        assert roles(session) == ["user", "assistant"]


@pytest.mark.django_db
class TestContextPreview:
    def test_it_shows_exactly_what_would_be_sent(self, auth_client, user, settings, fake_openai):
        settings.LLM_MODEL_CONTEXT_WINDOWS = {"tiny": 300}
        session = ChatSessionFactory(user=user, model="tiny", system_prompt="Be brief.")
        for i in range(30):
            MessageFactory(session=session, content=f"message number {i}")
        preview = auth_client.get(context_url(session.pk), {"max_output_tokens": 100})
        assert preview.status_code == 200, preview.content
        body = preview.json()
        assert body["encoding"] == "cl100k_base"
        assert body["model"] == "tiny"
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert body["messages_dropped"] == 30 - body["messages_included"] > 0
        assert body["tokens"] <= body["budget"]
        assert body["last_seq"] == 30
        auth_client.post(reply_url(session.pk), {"max_output_tokens": 100}, format="json")
        assert fake_openai.requests[0]["messages"] == body["messages"]

    def test_it_is_404_for_another_users_session(self, auth_client):
        theirs = ChatSessionFactory(user=UserFactory())
        assert_error(auth_client.get(context_url(theirs.pk)), 404, "not_found")


# --- A real uvicorn server on loopback, and a real client that hangs up mid-stream --------
@pytest.mark.django_db(transaction=True)
def test_under_uvicorn_a_client_hanging_up_mid_stream_leaves_an_interrupted_reply(
    user, fake_openai
):
    import socket
    import threading
    import time

    import uvicorn

    from chatengine.asgi import application

    fake_openai.chunk_delay_ms = 100
    session = ChatSessionFactory(user=user)
    token = api_key_for(user)

    server = uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        body = json.dumps({"content": "hi"}).encode()
        request = (
            f"POST {stream_url(session.pk)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(request)
            received = b""
            while received.count(b"event: message.delta") < 2:
                chunk = client.recv(4096)
                assert chunk, "the server closed the stream early"
                received += chunk
        # The client is gone; the server notices, cancels the stream and stores the partial.
        deadline = time.monotonic() + 10
        while not Message.objects.filter(session=session, role="assistant").exists():
            assert time.monotonic() < deadline, "no partial reply was stored"
            time.sleep(0.05)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert b"201 Created" in received.split(b"\r\n", 1)[0]
    stored = Message.objects.get(session=session, role="assistant")
    assert stored.finish_reason == "interrupted"
    assert fake_openai.reply_text.startswith(stored.content)
    assert stored.content != fake_openai.reply_text


@pytest.mark.parametrize("name", ["content", "metadata"])
@pytest.mark.parametrize("serializer", [ReplyInputSerializer, ReplyStreamInputSerializer])
def test_a_replys_content_and_metadata_are_the_user_message_inputs_fields(serializer, name):
    # One definition of content's length and metadata's limits: the reply's copies differ from
    # the user message's only in being optional (and in their description).
    def rules(field):
        return type(field), {
            k: v for k, v in field._kwargs.items() if k not in ("required", "help_text")
        }

    reply_field = serializer().fields[name]
    assert reply_field.required is False
    assert rules(reply_field) == rules(UserMessageInputSerializer().fields[name])
