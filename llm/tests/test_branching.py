"""Regenerate and edit through the reply's steps (llm/branching.py), over the API."""

import threading

import pytest
from django.db import close_old_connections, connection

from conversations import services
from conversations.models import ChatSession, Message, MessageVersion
from conversations.tests.factories import ChatSessionFactory, MessageFactory
from conversations.tests.test_api import assert_error
from llm import branching
from llm.tests.test_api import parse_sse


@pytest.fixture
def echo(settings):
    settings.LLM_PROVIDER = "echo"


def regenerate_url(session_id, seq) -> str:
    return f"/api/v1/sessions/{session_id}/messages/{seq}/regenerate/"


def regenerate_stream_url(session_id, seq) -> str:
    return f"/api/v1/sessions/{session_id}/messages/{seq}/regenerate/stream/"


def edit_url(session_id, seq) -> str:
    return f"/api/v1/sessions/{session_id}/messages/{seq}/edit/"


def versions_url(session_id, seq) -> str:
    return f"/api/v1/sessions/{session_id}/messages/{seq}/versions/"


def answered(user, question: str = "Where do I eat?") -> ChatSession:
    """A session of a question and the model's answer (seq 1 and 2)."""
    session = ChatSessionFactory(user=user, system_prompt="Be brief.")
    MessageFactory(session=session, role="user", content=question)
    MessageFactory(
        session=session,
        role="assistant",
        content="The first answer.",
        model="first-model",
        context={"first_seq": 1, "last_seq": 1, "tokens": 1},
    )
    session.refresh_from_db()
    return session


@pytest.mark.django_db
class TestRegenerate:
    def test_regenerate_keeps_every_version_and_the_stored_context_of_each(
        self, auth_client, user, fake_openai
    ):
        session = answered(user)
        original = Message.objects.get(session=session, seq=2)

        fake_openai.reply_text = "The second answer."
        first = auth_client.post(regenerate_url(session.pk, 2), {"model": "gpt-4o"}, format="json")
        fake_openai.reply_text = "The third answer."
        second = auth_client.post(regenerate_url(session.pk, 2), {}, format="json")

        assert first.status_code == 201, first.content
        assert second.status_code == 201, second.content
        message = second.json()["message"]
        assert (message["id"], message["seq"]) == (original.pk, 2)  # replaced in place
        assert (message["content"], message["versions"]) == ("The third answer.", 3)
        # The model was asked with the context the answer had: the history before it.
        for request in fake_openai.requests:
            assert [m["content"] for m in request["messages"]] == ["Be brief.", "Where do I eat?"]
        versions = auth_client.get(versions_url(session.pk, 2)).json()["results"]
        assert [(v["number"], v["current"], v["content"]) for v in versions] == [
            (1, False, "The first answer."),
            (2, False, "The second answer."),
            (3, True, "The third answer."),
        ]
        assert versions[0]["context"] == {"first_seq": 1, "last_seq": 1, "tokens": 1}
        assert versions[0]["model"] == "first-model"
        assert versions[1]["model"] == "gpt-4o"
        for version in versions[1:]:
            assert version["context"]["first_seq"] == 1
            assert version["context"]["last_seq"] == 1
            assert version["context"]["messages_included"] == 1
            assert version["finish_reason"] == "stop"
        # The history reads the new answer (the cached tail moved with it) and nothing else.
        history = auth_client.get(f"/api/v1/sessions/{session.pk}/messages/").json()["results"]
        assert [m["content"] for m in history] == ["Where do I eat?", "The third answer."]
        session.refresh_from_db()
        assert session.message_count == session.last_seq == 2
        assert session.total_tokens == sum(
            Message.objects.filter(session=session).values_list("token_count", flat=True)
        )

    def test_only_the_last_assistant_message_can_be_regenerated(self, auth_client, user, echo):
        session = answered(user)
        error = assert_error(auth_client.post(regenerate_url(session.pk, 1)), 409, "conflict")
        assert "assistant" in error["message"]
        MessageFactory(session=session, role="user", content="And then?")
        error = assert_error(auth_client.post(regenerate_url(session.pk, 2)), 409, "conflict")
        assert "last" in error["message"]
        assert not MessageVersion.objects.exists()

    def test_an_archived_session_refuses_a_regenerate(self, auth_client, user, echo):
        session = answered(user)
        services.update_session(session=session, archived=True)
        assert_error(auth_client.post(regenerate_url(session.pk, 2)), 409, "conflict")
        assert not MessageVersion.objects.exists()

    def test_another_users_session_or_a_missing_seq_is_a_404(
        self, auth_client, user, other_user, echo
    ):
        theirs = answered(other_user)
        assert_error(auth_client.post(regenerate_url(theirs.pk, 2)), 404, "not_found")
        assert_error(auth_client.post(regenerate_stream_url(theirs.pk, 2)), 404, "not_found")
        mine = answered(user)
        assert_error(auth_client.post(regenerate_url(mine.pk, 3)), 404, "not_found")
        assert not MessageVersion.objects.exists()

    def test_a_failed_llm_call_keeps_the_current_answer_and_stores_no_version(
        self, auth_client, user, fake_openai
    ):
        session = answered(user)
        fake_openai.fail_next("server_error")
        assert_error(auth_client.post(regenerate_url(session.pk, 2)), 502, "llm_upstream_error")
        message = Message.objects.get(session=session, seq=2)
        assert (message.content, message.versions) == ("The first answer.", 1)
        assert not MessageVersion.objects.exists()

    def test_an_idempotency_key_replays_the_regenerate_without_a_second_version(
        self, auth_client, user, echo
    ):
        session = answered(user)
        headers = {"HTTP_IDEMPOTENCY_KEY": "regen-1"}
        first = auth_client.post(regenerate_url(session.pk, 2), {}, format="json", **headers)
        again = auth_client.post(regenerate_url(session.pk, 2), {}, format="json", **headers)
        assert first.status_code == again.status_code == 201
        assert again["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        assert Message.objects.get(session=session, seq=2).versions == 2

    def test_a_streamed_regenerate_sends_deltas_then_the_message_with_its_new_answer(
        self, auth_client, user, echo
    ):
        session = answered(user)
        response = auth_client.post(regenerate_stream_url(session.pk, 2), {}, format="json")
        assert response.status_code == 201
        assert response["Content-Type"] == "text/event-stream"
        events = parse_sse(b"".join(response.streaming_content))
        assert {name for name, _ in events[:-1]} == {"message.delta"}
        name, message = events[-1]
        assert name == "message.completed"
        assert (message["seq"], message["content"], message["versions"]) == (
            2,
            "Echo: Where do I eat?",
            2,
        )
        assert MessageVersion.objects.get().content == "The first answer."

    def test_an_answer_that_arrives_after_the_conversation_moved_on_is_kept_not_current(
        self, user, echo
    ):
        session = answered(user)
        prepared = branching.prepare_regenerate(
            session=session, message=Message.objects.get(session=session, seq=2)
        )
        MessageFactory(session=session, role="user", content="meanwhile")
        with pytest.raises(Exception) as raised:
            branching.complete_reply(prepared)
        assert raised.value.status_code == 409
        message = Message.objects.get(session=session, seq=2)
        assert (message.content, message.versions) == ("The first answer.", 2)
        assert MessageVersion.objects.get().content == "Echo: Where do I eat?"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_regenerates_end_in_one_current_answer_and_both_versions_kept(
    fake_openai,
):
    """Both ask the model at once (neither holds a lock meanwhile); the session row lock
    orders their stores."""
    fake_openai.latency_ms = 300  # both are waiting for the model before either stores
    session = answered(ChatSessionFactory().user)
    models = ["model-a", "model-b"]
    barrier = threading.Barrier(len(models))
    errors: list[BaseException] = []

    def regenerate(model: str) -> None:
        try:
            barrier.wait(timeout=10)
            branching.regenerate(
                session=ChatSession.objects.get(pk=session.pk),
                message=Message.objects.get(session=session, seq=2),
                model=model,
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=regenerate, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    assert len(fake_openai.requests) == 2
    message = Message.objects.get(session=session, seq=2)
    earlier = list(MessageVersion.objects.filter(message=message).order_by("number"))
    assert message.versions == 3
    assert [v.number for v in earlier] == [1, 2]
    assert earlier[0].content == "The first answer."
    assert {earlier[1].model, message.model} == set(models)
    assert Message.objects.filter(session=session).count() == 2


@pytest.mark.django_db
class TestEditApi:
    def test_edit_answers_the_new_session_with_the_edit_and_leaves_the_old_one(
        self, auth_client, user, echo
    ):
        session = answered(user)
        MessageFactory(session=session, role="user", content="And for dessert?")
        MessageFactory(session=session, role="assistant", content="Pastéis.")
        before = list(Message.objects.filter(session=session).values_list("seq", "content"))

        response = auth_client.post(
            edit_url(session.pk, 3), {"content": "And for coffee?", "reply": True}, format="json"
        )

        assert response.status_code == 201, response.content
        body = response.json()
        fork_id = body["session"]["id"]
        assert body["session"]["forked_from"] == str(session.pk)
        assert body["session"]["forked_at_seq"] == 2
        assert body["session"]["message_count"] == 4
        assert body["user_message"]["seq"] == 3
        assert body["message"]["content"] == "Echo: And for coffee?"
        assert [
            (m.seq, m.content) for m in Message.objects.filter(session=fork_id).order_by("seq")
        ] == [
            (1, "Where do I eat?"),
            (2, "The first answer."),
            (3, "And for coffee?"),
            (4, "Echo: And for coffee?"),
        ]
        assert list(Message.objects.filter(session=session).values_list("seq", "content")) == (
            before
        )

    def test_edit_without_reply_stores_only_the_fork_and_the_edit(self, auth_client, user, echo):
        session = answered(user)
        response = auth_client.post(edit_url(session.pk, 1), {"content": "Lunch?"}, format="json")
        assert response.status_code == 201, response.content
        body = response.json()
        assert (body["message"], body["context"]) == (None, None)
        assert body["session"]["message_count"] == 1
        assert body["user_message"]["content"] == "Lunch?"

    def test_an_assistant_message_or_an_archived_session_refuses_an_edit(
        self, auth_client, user, echo
    ):
        session = answered(user)
        body = {"content": "x"}
        assert_error(
            auth_client.post(edit_url(session.pk, 2), body, format="json"), 409, "conflict"
        )
        services.update_session(session=session, archived=True)
        assert_error(
            auth_client.post(edit_url(session.pk, 1), body, format="json"), 409, "conflict"
        )
        assert ChatSession.objects.filter(user=user).count() == 1

    def test_another_users_session_or_a_missing_seq_is_a_404(
        self, auth_client, user, other_user, echo
    ):
        body = {"content": "x"}
        theirs = answered(other_user)
        assert_error(
            auth_client.post(edit_url(theirs.pk, 1), body, format="json"), 404, "not_found"
        )
        mine = answered(user)
        assert_error(auth_client.post(edit_url(mine.pk, 9), body, format="json"), 404, "not_found")
        assert ChatSession.objects.count() == 2

    def test_a_retry_after_a_failed_reply_replies_in_the_fork_it_made(
        self, auth_client, user, fake_openai
    ):
        session = answered(user)
        headers = {"HTTP_IDEMPOTENCY_KEY": "edit-1"}
        body = {"content": "Dinner?", "reply": True}
        fake_openai.fail_next("server_error")
        failed = auth_client.post(edit_url(session.pk, 1), body, format="json", **headers)
        assert_error(failed, 502, "llm_upstream_error")
        retried = auth_client.post(edit_url(session.pk, 1), body, format="json", **headers)
        assert retried.status_code == 201, retried.content
        forks = ChatSession.objects.filter(forked_from=session)
        assert forks.count() == 1
        assert list(
            Message.objects.filter(session=forks.get())
            .order_by("seq")
            .values_list("role", flat=True)
        ) == ["user", "assistant"]
