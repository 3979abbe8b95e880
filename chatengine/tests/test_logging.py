"""Logs: JSON lines carrying the request id, one access line per request, one event per chat
operation, every error logged with its category, and no secrets anywhere."""

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.http import HttpResponse, StreamingHttpResponse
from django.test import AsyncClient, Client
from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from chatengine import exceptions
from chatengine.logs import ConsoleFormatter
from conversations.tests.factories import ChatSessionFactory

SESSIONS = "/api/v1/sessions/"
BASE_DIR = Path(__file__).resolve().parents[2]


class _LogsFromElsewhere(APIView):
    """Stands for llm or cache code: it logs through its own logger, passing no request id."""

    def get(self, request):
        logging.getLogger("llm.providers.fake").info("provider called", extra={"latency_ms": 5})
        return Response({"ok": True})


def _streamed(request, session_id):
    def chunks():
        yield b"first "
        logging.getLogger("llm.services").info("llm.response", extra={"event": "llm.response"})
        yield b"second"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def _streamed_async(request):
    async def chunks():
        yield b"first "
        logging.getLogger("llm.services").info("llm.response", extra={"event": "llm.response"})
        yield b"second"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def _plain_django_boom(request):
    raise RuntimeError("plain view internals")


class _RaisesInMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path == "/middleware-boom/":
            raise RuntimeError("middleware internals")
        return self.get_response(request)


def _error_view(exc):
    class _View(APIView):
        def get(self, request):
            raise exc

    return _View.as_view()


urlpatterns = [
    path("elsewhere/", _LogsFromElsewhere.as_view()),
    path("streamed/<str:session_id>/", _streamed),
    path("streamed-async/", _streamed_async),
    path("plain-boom/", _plain_django_boom),
    path("middleware-boom/", lambda request: HttpResponse("unreachable")),
    path("overflow/", _error_view(exceptions.ContextOverflow("Too long."))),
    path("upstream/", _error_view(exceptions.LLMUpstreamError("Provider said 500."))),
    path("unavailable/", _error_view(exceptions.ServiceUnavailable())),
    path("llm-timeout/", _error_view(exceptions.LLMTimeout())),
    path("boom/", _error_view(RuntimeError("view internals"))),
]
handler404 = "chatengine.exceptions.page_not_found"
handler500 = "chatengine.exceptions.server_error"


@pytest.mark.django_db(transaction=True)
class TestRequestLines:
    def test_a_request_leaves_an_access_line_and_events_with_its_request_id(
        self, auth_client, user, json_logs
    ):
        started = time.perf_counter()
        response = auth_client.post(
            SESSIONS, {"title": "t"}, format="json", HTTP_X_REQUEST_ID="req-create-1"
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        assert response.status_code == 201
        sid = response.json()["id"]

        access = json_logs.one(logger="chatengine.access")
        assert access["request_id"] == "req-create-1"
        assert access["method"] == "POST"
        assert access["path"] == "/api/v1/sessions/"
        assert access["status"] == 201
        assert isinstance(access["duration_ms"], float)
        assert 0 < access["duration_ms"] <= elapsed_ms  # in milliseconds, within the call
        assert access["user_id"] == user.pk
        assert "session_id" not in access  # no session in this URL
        assert access["level"] == "INFO"
        assert access["timestamp"]

        created = json_logs.one(event="session.created")
        assert created["request_id"] == "req-create-1"
        assert created["session_id"] == sid
        assert created["user_id"] == user.pk
        assert created["logger"] == "chatengine.events"

    def test_message_appended_has_seq_role_and_tokens_but_not_the_content(
        self, auth_client, user, json_logs
    ):
        session = ChatSessionFactory(user=user)
        url = f"{SESSIONS}{session.pk}/messages/"
        auth_client.post(url, {"role": "user", "content": "first words"}, format="json")
        response = auth_client.post(url, {"role": "assistant", "content": "reply"}, format="json")
        assert response.status_code == 201

        appended = json_logs.where(event="message.appended")
        assert [(e["seq"], e["role"]) for e in appended] == [(1, "user"), (2, "assistant")]
        assert appended[1]["session_id"] == str(session.pk)
        assert appended[1]["token_count"] == response.json()["token_count"]
        assert appended[1]["request_id"] == response["X-Request-ID"]
        assert "content" not in appended[1]
        assert "first words" not in json_logs.text

    def test_a_rolled_back_append_logs_no_event(self, auth_client, user, json_logs):
        session = ChatSessionFactory(user=user, archived=True)
        response = auth_client.post(
            f"{SESSIONS}{session.pk}/messages/", {"role": "user", "content": "x"}, format="json"
        )
        assert response.status_code == 409
        assert json_logs.where(event="message.appended") == []


@pytest.mark.django_db
class TestAccessLines:
    def test_the_access_path_is_the_route_template_with_the_session_id_beside_it(
        self, auth_client, user, json_logs
    ):
        session = ChatSessionFactory(user=user)
        response = auth_client.get(f"{SESSIONS}{session.pk}/messages/")
        assert response.status_code == 200

        access = json_logs.one(logger="chatengine.access")
        assert access["path"] == "/api/v1/sessions/{session_id}/messages/"
        assert access["session_id"] == str(session.pk)
        assert access["request_id"] == response["X-Request-ID"]

    def test_an_unauthenticated_request_has_no_user_id(self, api_client, json_logs):
        assert api_client.get(SESSIONS).status_code == 401
        access = json_logs.one(logger="chatengine.access")
        assert access["user_id"] is None
        assert access["status"] == 401

    def test_a_session_login_user_is_logged_too(self, user, json_logs):
        client = Client()
        client.force_login(user)
        assert client.get(SESSIONS).status_code == 200
        assert json_logs.one(logger="chatengine.access")["user_id"] == user.pk

    def test_an_unknown_url_logs_its_raw_path(self, auth_client, json_logs):
        auth_client.get("/api/v1/nothing-here/")
        access = json_logs.one(logger="chatengine.access")
        assert access["path"] == "/api/v1/nothing-here/"
        assert access["status"] == 404


@pytest.mark.django_db
@pytest.mark.urls("chatengine.tests.test_logging")
class TestRequestIdEverywhere:
    def test_lines_logged_by_other_apps_during_a_request_carry_its_id(self, auth_client, json_logs):
        response = auth_client.get("/elsewhere/", HTTP_X_REQUEST_ID="req-elsewhere")
        line = json_logs.one(logger="llm.providers.fake")
        assert line["request_id"] == "req-elsewhere" == response["X-Request-ID"]
        assert line["latency_ms"] == 5  # `extra` fields become JSON keys

    def test_a_streamed_response_keeps_its_id_and_logs_access_when_the_stream_ends(self, json_logs):
        response = Client().get("/streamed/abc/", HTTP_X_REQUEST_ID="req-stream")
        # Nothing is produced, and no access line written, until the body is consumed.
        assert json_logs.where(logger="chatengine.access") == []
        assert b"".join(response.streaming_content) == b"first second"

        during = json_logs.one(event="llm.response")
        assert during["request_id"] == "req-stream"
        access = json_logs.one(logger="chatengine.access")
        assert access["request_id"] == "req-stream"
        assert access["path"] == "/streamed/{session_id}/"
        assert access["session_id"] == "abc"

    def test_an_async_stream_under_asgi_keeps_its_id(self, json_logs):
        async def fetch():
            response = await AsyncClient().get(
                "/streamed-async/", headers={"X-Request-ID": "req-asgi"}
            )
            return b"".join([chunk async for chunk in response.streaming_content])

        assert async_to_sync(fetch)() == b"first second"
        assert json_logs.one(event="llm.response")["request_id"] == "req-asgi"
        access = json_logs.one(logger="chatengine.access")
        assert (access["request_id"], access["status"]) == ("req-asgi", 200)

    def test_outside_a_request_the_id_is_null(self, json_logs):
        logging.getLogger("chatengine.jobs").info("nightly")
        assert json_logs.one(message="nightly")["request_id"] is None


@pytest.mark.django_db
class TestErrorCategories:
    @pytest.mark.parametrize(
        ("request_args", "status", "error_type"),
        [
            ({"path": SESSIONS, "data": '{"title": ', "method": "post"}, 400, "validation_error"),
            ({"path": f"{SESSIONS}missing/"}, 404, "not_found"),
            ({"path": "/api/v1/nothing-here/"}, 404, "not_found"),  # Django's handler404
            ({"path": f"{SESSIONS}x/", "method": "put"}, 405, "method_not_allowed"),
        ],
    )
    def test_client_errors_are_warnings_with_their_type(
        self, auth_client, json_logs, request_args, status, error_type
    ):
        method = request_args.pop("method", "get")
        response = getattr(auth_client, method)(
            **request_args, content_type="application/json", HTTP_X_REQUEST_ID="req-err"
        )
        assert response.status_code == status
        line = json_logs.one(logger="chatengine.errors")
        assert line["level"] == "WARNING"
        assert line["error_type"] == error_type
        assert line["status"] == status
        assert line["request_id"] == "req-err"
        assert "exc_info" not in line

    def test_authentication_and_permission_errors_are_warnings(self, api_client, json_logs):
        api_client.get(SESSIONS)
        assert json_logs.one(logger="chatengine.errors")["error_type"] == "authentication_error"

    def test_a_conflict_is_a_warning(self, auth_client, user, json_logs):
        session = ChatSessionFactory(user=user, archived=True)
        auth_client.post(
            f"{SESSIONS}{session.pk}/messages/", {"role": "user", "content": "x"}, format="json"
        )
        line = json_logs.one(logger="chatengine.errors")
        assert (line["level"], line["error_type"], line["status"]) == ("WARNING", "conflict", 409)

    @pytest.mark.urls("chatengine.tests.test_logging")
    def test_context_overflow_is_a_warning(self, auth_client, json_logs):
        assert auth_client.get("/overflow/").status_code == 422
        line = json_logs.one(logger="chatengine.errors")
        assert (line["level"], line["error_type"]) == ("WARNING", "context_overflow")

    @pytest.mark.urls("chatengine.tests.test_logging")
    @pytest.mark.parametrize(
        ("url", "status", "error_type"),
        [
            ("/upstream/", 502, "llm_upstream_error"),
            ("/unavailable/", 503, "service_unavailable"),
            ("/llm-timeout/", 504, "llm_timeout"),
        ],
    )
    def test_server_side_domain_errors_are_errors_with_a_traceback(
        self, auth_client, json_logs, url, status, error_type
    ):
        response = auth_client.get(url)
        assert response.status_code == status
        line = json_logs.one(logger="chatengine.errors")
        assert (line["level"], line["error_type"], line["status"]) == ("ERROR", error_type, status)
        assert "Traceback" in line["exc_info"]
        assert line["request_id"] == response.json()["error"]["request_id"]

    @pytest.mark.urls("chatengine.tests.test_logging")
    def test_an_unexpected_exception_in_an_api_view_is_logged_with_its_traceback(
        self, auth_client, json_logs
    ):
        response = auth_client.get("/boom/", HTTP_X_REQUEST_ID="req-boom")
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "internal_error"
        assert response.json()["error"]["request_id"] == "req-boom"
        assert "view internals" not in response.content.decode()

        line = json_logs.one(logger="chatengine.errors")
        assert (line["level"], line["error_type"], line["request_id"]) == (
            "ERROR",
            "internal_error",
            "req-boom",
        )
        assert "RuntimeError: view internals" in line["exc_info"]

    @pytest.mark.urls("chatengine.tests.test_logging")
    def test_an_exception_in_a_plain_django_view_is_the_500_envelope(self, json_logs):
        client = Client(raise_request_exception=False)
        response = client.get("/plain-boom/", HTTP_X_REQUEST_ID="req-plain")
        assert response.status_code == 500
        assert response.json()["error"] == {
            "type": "internal_error",
            "message": exceptions.ApplicationError.default_message,
            "details": None,
            "request_id": "req-plain",
        }
        line = json_logs.one(logger="chatengine.errors")
        assert line["level"] == "ERROR"
        assert "RuntimeError: plain view internals" in line["exc_info"]
        assert json_logs.one(logger="chatengine.access")["status"] == 500

    @pytest.mark.urls("chatengine.tests.test_logging")
    def test_an_exception_in_a_middleware_is_the_500_envelope(self, settings, json_logs):
        settings.MIDDLEWARE = [
            *settings.MIDDLEWARE,
            "chatengine.tests.test_logging._RaisesInMiddleware",
        ]
        client = Client(raise_request_exception=False)
        response = client.get("/middleware-boom/", HTTP_X_REQUEST_ID="req-mw")
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "internal_error"
        assert response.json()["error"]["request_id"] == "req-mw"
        assert response["X-Request-ID"] == "req-mw"
        line = json_logs.one(logger="chatengine.errors")
        assert "RuntimeError: middleware internals" in line["exc_info"]

    def test_django_request_does_not_repeat_what_chatengine_errors_logged(
        self, auth_client, json_logs
    ):
        auth_client.get(f"{SESSIONS}missing/")
        auth_client.get("/api/v1/nothing-here/")
        assert len(json_logs.where(logger="chatengine.errors")) == 2
        assert json_logs.where(logger="django.request") == []


def _body(response) -> bytes:
    """Read a response to its end: a streamed reply runs (and logs) only while it is read."""
    return b"".join(response.streaming_content) if response.streaming else response.content


def _round_trip(client, *, system_prompt: str, content: str, fake) -> list:
    """Every request a chat goes through, in order, replies included: whole, streamed, failed.

    `fake` is the fake OpenAI server (the `fake_openai` fixture); the real `openai` SDK talks
    to it, so the provider code's own logging (and the SDK's) is part of what is captured.
    """
    responses = []

    def send(method: str, url: str, data: dict | None = None):
        response = getattr(client, method)(url, data, format="json")
        response.body = _body(response)  # read now: a stream runs only while it is read
        responses.append(response)
        return response

    created = send("post", SESSIONS, {"title": "Trip", "system_prompt": system_prompt})
    messages_url = f"{SESSIONS}{created.json()['id']}/messages/"
    reply_url = f"{SESSIONS}{created.json()['id']}/reply/"
    stream_url = f"{reply_url}stream/"
    send("post", messages_url, {"role": "user", "content": content})
    # A rejected body that carries the content too: errors must not echo it into the logs.
    send("post", messages_url, {"role": "user", "content": content, "x": 1})
    send("post", reply_url, {"content": content})
    send("post", stream_url, {"content": content})
    fake.fail_next("server_error")
    send("post", reply_url, {"content": content})
    fake.fail_next("unauthorized")
    send("post", stream_url, {"content": content})
    send("get", messages_url)
    return responses


@pytest.mark.django_db(transaction=True)
def test_no_content_prompt_or_token_reaches_the_logs(
    auth_client, user, fake_openai, settings, json_logs, caplog
):
    content = "CONTENT-7f3a my card is 4111 1111 1111 1111"
    system_prompt = "PROMPT-91bc you are a secret agent"
    fake_openai.reply_text = "REPLY-c2d8 the launch code is 0000"
    fake_openai.echo_in_errors = True  # upstream error bodies quote the prompt and the key
    token = auth_client._credentials["HTTP_AUTHORIZATION"].split()[1]
    api_key = settings.OPENAI_API_KEY

    # Everything down to DEBUG reaches the capture (the SDK's own request dumps included), so
    # the level filter below is what is being tested, not the loggers' configured levels.
    with caplog.at_level(logging.DEBUG):
        responses = _round_trip(
            auth_client, system_prompt=system_prompt, content=content, fake=fake_openai
        )

    assert [r.status_code for r in responses] == [201, 201, 400, 201, 201, 502, 201, 200]
    history = json.loads(responses[-1].body)["results"]
    assert [m["content"] for m in history if m["role"] == "assistant"] == [
        fake_openai.reply_text
    ] * 2
    assert history[0]["content"] == content  # it was really sent...
    assert all(r["messages"][0]["content"] == system_prompt for r in fake_openai.requests)
    assert all(r["_authorization"] == f"Bearer {api_key}" for r in fake_openai.requests)
    assert b"event: error" in responses[6].body  # the streamed 401 failed inside the stream
    # The logs did record the round trip...
    shown = [
        line for line in json_logs.lines if logging.getLevelName(line["level"]) >= logging.INFO
    ]
    access = [line for line in shown if line["logger"] == "chatengine.access"]
    assert [a["status"] for a in access] == [r.status_code for r in responses]
    events = [line.get("event") for line in shown]
    for event in ("session.created", "message.appended", "llm.request", "llm.response"):
        assert event in events
    assert events.count("llm.error") == 2
    assert json_logs.where(logger="chatengine.errors")
    # ...without any of the secrets, in any field of any line at INFO or above.
    shown_text = "\n".join(json.dumps(line) for line in shown)
    for secret in ("CONTENT-7f3a", "4111 1111", "PROMPT-91bc", "REPLY-c2d8", token, api_key):
        assert secret not in shown_text


def test_production_settings_write_json_lines_to_stdout():
    # A fresh interpreter with DEBUG off, so this is what settings.LOGGING really installs.
    code = (
        "import django, logging; django.setup();"
        "from chatengine.request_id import set_request_id; set_request_id('rid-1');"
        "logging.getLogger('chatengine.events').info('session.created',"
        " extra={'event': 'session.created', 'seq': 3})"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LOG_FORMAT", "LOG_LEVEL", "DEBUG", "SECRET_KEY")
    }
    env.update(DJANGO_SETTINGS_MODULE="chatengine.settings", DEBUG="0", SECRET_KEY="k" * 50)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # Every line is JSON (start-up lines too, e.g. the echo provider's warning).
    records = [json.loads(line) for line in result.stdout.splitlines()]
    (record,) = [r for r in records if r.get("event") == "session.created"]
    assert record["message"] == "session.created"
    assert record["event"] == "session.created"
    assert record["seq"] == 3
    assert record["level"] == "INFO"
    assert record["logger"] == "chatengine.events"
    assert record["request_id"] == "rid-1"  # the handler's filter is wired
    assert record["timestamp"]


def test_development_lines_are_readable_with_the_request_id_and_fields():
    record = logging.LogRecord(
        "chatengine.events", logging.INFO, "f", 1, "message.appended", (), None
    )
    record.__dict__.update(event="message.appended", seq=4, role="user", request_id="req-9")
    line = ConsoleFormatter().format(record)
    assert line.endswith("INFO chatengine.events [req-9] message.appended seq=4 role=user")


def test_a_bad_log_format_is_refused(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from chatengine.env import env_choice

    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ImproperlyConfigured, match="LOG_FORMAT must be one of json, console"):
        env_choice("LOG_FORMAT", "json", ["json", "console"])
