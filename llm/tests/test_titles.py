"""Automatic session titles (llm/titles.py) after the first reply.

These tests commit (transaction=True): a title is only ever asked for with no transaction
open, so inside the test's usual wrapping transaction none would be made.
"""

import pytest
from django.db import connection

from accounting.models import SessionUsage, UsageRecord
from conversations import services as conversation_services
from conversations.models import ChatSession
from conversations.tests.factories import ChatSessionFactory
from llm import titles
from llm.providers.echo import EchoProvider

pytestmark = pytest.mark.django_db(transaction=True)


class RecordingEcho(EchoProvider):
    """The echo provider, noting for each call whether a transaction was open."""

    calls: list[tuple[str, bool]] = []

    def complete(self, messages, *, model, max_output_tokens):
        RecordingEcho.calls.append((messages[0].content, connection.in_atomic_block))
        return super().complete(messages, model=model, max_output_tokens=max_output_tokens)


@pytest.fixture(autouse=True)
def _echo(settings):
    settings.LLM_PROVIDER = "echo"
    settings.CHATENGINE_AUTO_TITLE = True
    RecordingEcho.calls = []


def create_untitled(client) -> str:
    response = client.post("/api/v1/sessions/", {}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert (body["title"], body["title_source"]) == ("", None)
    return body["id"]


def reply(client, session_id, content, *, stream=False):
    path = f"/api/v1/sessions/{session_id}/reply/" + ("stream/" if stream else "")
    response = client.post(path, {"content": content}, format="json")
    assert response.status_code == 201, response.content
    if stream:
        b"".join(response.streaming_content)
    return response


def test_title_appears_after_the_first_reply_from_its_first_words(auth_client):
    session_id = create_untitled(auth_client)
    reply(
        auth_client,
        session_id,
        "Plan a three day trip to Lisbon in May with kids, please, on a budget",
    )
    body = auth_client.get(f"/api/v1/sessions/{session_id}/").json()
    assert body["title"] == "Plan a three day trip to Lisbon in"
    assert body["title_source"] == "auto"
    # A later reply keeps it.
    reply(auth_client, session_id, "And what about Porto?")
    assert auth_client.get(f"/api/v1/sessions/{session_id}/").json()["title"] == body["title"]


def test_title_after_a_streamed_reply(auth_client):
    session_id = create_untitled(auth_client)
    reply(auth_client, session_id, "Streaming titles work", stream=True)
    body = auth_client.get(f"/api/v1/sessions/{session_id}/").json()
    assert (body["title"], body["title_source"]) == ("Streaming titles work", "auto")


def test_title_call_is_made_with_no_transaction_open_and_its_usage_recorded(auth_client, settings):
    settings.LLM_PROVIDER = "llm.tests.test_titles.RecordingEcho"
    session_id = create_untitled(auth_client)
    reply(auth_client, session_id, "Tell me about tides")
    title_calls = [c for c in RecordingEcho.calls if c[0] == titles.TITLE_INSTRUCTION]
    assert title_calls == [(titles.TITLE_INSTRUCTION, False)]
    kinds = sorted(UsageRecord.objects.values_list("kind", flat=True))
    assert kinds == ["reply", "title"]
    totals = SessionUsage.objects.get(session_id=session_id)
    assert totals.calls == 2
    assert totals.input_tokens == sum(UsageRecord.objects.values_list("input_tokens", flat=True))


def test_a_users_title_is_never_overwritten(auth_client):
    response = auth_client.post("/api/v1/sessions/", {"title": "Mine"}, format="json")
    assert response.json()["title_source"] == "user"
    session_id = response.json()["id"]
    reply(auth_client, session_id, "Something else entirely")
    body = auth_client.get(f"/api/v1/sessions/{session_id}/").json()
    assert (body["title"], body["title_source"]) == ("Mine", "user")
    assert not UsageRecord.objects.filter(kind="title").exists()  # no call was made


def test_a_title_the_user_sets_while_the_title_is_made_wins(user):
    session = ChatSessionFactory(user=user, title="")
    stale = ChatSession.objects.get(pk=session.pk)
    conversation_services.update_session(session=session, title="Set meanwhile")
    assert conversation_services.set_auto_title(session=stale, title="Auto") is False
    session.refresh_from_db()
    assert (session.title, session.title_source) == ("Set meanwhile", "user")


def test_a_title_the_user_cleared_stays_blank(auth_client):
    session_id = create_untitled(auth_client)
    patched = auth_client.patch(f"/api/v1/sessions/{session_id}/", {"title": ""}, format="json")
    assert patched.json()["title_source"] == "user"
    reply(auth_client, session_id, "Do not name me")
    body = auth_client.get(f"/api/v1/sessions/{session_id}/").json()
    assert (body["title"], body["title_source"]) == ("", "user")


def test_auto_title_off(auth_client, settings):
    settings.CHATENGINE_AUTO_TITLE = False
    session_id = create_untitled(auth_client)
    reply(auth_client, session_id, "No title please")
    body = auth_client.get(f"/api/v1/sessions/{session_id}/").json()
    assert (body["title"], body["title_source"]) == ("", None)


def test_a_failing_title_call_never_fails_the_reply(auth_client, fake_openai):
    session_id = create_untitled(auth_client)
    fake_openai.fail_next("ok")  # the reply
    fake_openai.fail_next("server_error")  # the title
    response = reply(auth_client, session_id, "Hello")
    assert response.json()["message"]["content"]
    assert len(fake_openai.requests) == 2
    body = auth_client.get(f"/api/v1/sessions/{session_id}/").json()
    assert (body["title"], body["title_source"]) == ("", None)
    # The next reply tries again, and this time it works.
    reply(auth_client, session_id, "Again")
    assert auth_client.get(f"/api/v1/sessions/{session_id}/").json()["title_source"] == "auto"


def test_title_from_a_real_model_answer_through_the_openai_provider(auth_client, fake_openai):
    session_id = create_untitled(auth_client)
    reply(auth_client, session_id, "Hello")
    title_request = fake_openai.requests[-1]
    assert title_request["messages"][0]["content"] == titles.TITLE_INSTRUCTION
    assert titles.MAX_OUTPUT_TOKENS in (
        title_request.get("max_tokens"),
        title_request.get("max_completion_tokens"),
    )
    body = auth_client.get(f"/api/v1/sessions/{session_id}/").json()
    assert body["title"] == "Hello from the fake model, one word at"  # 8 words
    assert body["title_source"] == "auto"


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        ('"Trip to Lisbon."', "Trip to Lisbon"),
        ("Title: Weekend plans\nSome extra line", "Weekend plans"),
        ("Echo: What is the capital of France?", "What is the capital of France?"),
        (
            "one two three four five six seven eight nine ten",
            "one two three four five six seven eight",
        ),
        ("   ", ""),
    ],
)
def test_clean_title(answer, title):
    assert titles.clean_title(answer) == title
