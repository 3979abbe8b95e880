"""Callers may name only the models the server allows (LLM_ALLOWED_MODELS), checked before
anything is stored or sent upstream."""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings

from conversations.models import ChatSession, Message
from conversations.tests.factories import ChatSessionFactory, MessageFactory
from conversations.tests.test_api import assert_error

SESSIONS = "/api/v1/sessions/"
UNLISTED = "o1-pro-on-someone-elses-bill"


def assert_model_refused(response) -> None:
    error = assert_error(response, 400, "validation_error")
    assert error["details"] == {"model": ["This model is not available on this server."]}


@pytest.mark.django_db
class TestRefusedBeforeAnythingIsStored:
    def test_creating_a_session_with_an_unlisted_model_is_a_400_naming_the_field(self, auth_client):
        response = auth_client.post(SESSIONS, {"title": "t", "model": UNLISTED}, format="json")
        assert_model_refused(response)
        assert ChatSession.objects.count() == 0

    def test_changing_a_session_to_an_unlisted_model_is_a_400(self, auth_client, user):
        session = ChatSessionFactory(user=user, model="gpt-4o")
        title = session.title
        response = auth_client.patch(
            f"{SESSIONS}{session.pk}/", {"model": UNLISTED, "title": "new"}, format="json"
        )
        assert_model_refused(response)
        session.refresh_from_db()
        assert (session.model, session.title) == ("gpt-4o", title)

    def test_a_reply_with_an_unlisted_model_stores_nothing_and_calls_no_model(
        self, auth_client, user, fake_openai
    ):
        session = ChatSessionFactory(user=user)
        MessageFactory(session=session, content="Earlier question")
        response = auth_client.post(
            f"{SESSIONS}{session.pk}/reply/",
            {"content": "and now?", "model": UNLISTED},
            format="json",
        )
        assert_model_refused(response)
        assert Message.objects.filter(session=session).count() == 1
        assert fake_openai.requests == []

    def test_a_context_preview_for_an_unlisted_model_is_a_400(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        response = auth_client.get(f"{SESSIONS}{session.pk}/context/", {"model": UNLISTED})
        assert_model_refused(response)

    def test_the_error_does_not_list_the_allowed_models(self, auth_client):
        response = auth_client.post(SESSIONS, {"model": UNLISTED}, format="json")
        assert "gpt-4o-mini" not in response.content.decode()


@pytest.mark.django_db
class TestTheAllowedSet:
    def test_the_default_model_and_the_window_table_are_allowed(self, auth_client):
        for model in (django_settings.LLM_MODEL, "gpt-4.1", "echo"):
            response = auth_client.post(SESSIONS, {"model": model}, format="json")
            assert response.status_code == 201, (model, response.content)

    def test_a_blank_session_model_still_means_the_default(self, auth_client):
        response = auth_client.post(SESSIONS, {"model": ""}, format="json")
        assert response.status_code == 201, response.content

    def test_a_configured_list_replaces_the_default(self, auth_client, settings):
        settings.LLM_ALLOWED_MODELS = ["house-model"]
        assert (
            auth_client.post(SESSIONS, {"model": "house-model"}, format="json").status_code == 201
        )
        assert_model_refused(auth_client.post(SESSIONS, {"model": "gpt-4o"}, format="json"))

    def test_a_star_allows_any_name(self, auth_client, user, settings):
        settings.LLM_ALLOWED_MODELS = ["*"]
        response = auth_client.post(SESSIONS, {"model": UNLISTED}, format="json")
        assert response.status_code == 201, response.content
        assert response.json()["model"] == UNLISTED


def _settings_in_a_fresh_process(**env: str) -> list[str]:
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps(settings.LLM_ALLOWED_MODELS))"
    )
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLM_")},
        "DJANGO_SETTINGS_MODULE": "chatengine.settings",
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def test_the_default_follows_llm_model_and_the_configured_windows():
    allowed = _settings_in_a_fresh_process(
        LLM_MODEL="local-llama", LLM_MODEL_CONTEXT_WINDOWS="qwen-coder=32768"
    )
    assert allowed[0] == "local-llama"
    assert {"qwen-coder", "gpt-4o-mini"} <= set(allowed)


def test_the_environment_list_replaces_the_default():
    allowed = _settings_in_a_fresh_process(LLM_ALLOWED_MODELS="a-model, b-model")
    assert allowed == ["a-model", "b-model"]
