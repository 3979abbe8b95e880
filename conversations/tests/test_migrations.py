"""Data migrations, run against today's models (the registry they are given is the real one)."""

import importlib

import pytest
from django.apps import apps

from conversations.models import ChatSession, IdempotencyKey
from conversations.tests.factories import ChatSessionFactory, MessageFactory

tie_keys = importlib.import_module(
    "conversations.migrations.0007_idempotencykey_session"
).tie_keys_to_sessions


@pytest.mark.django_db
def test_keys_stored_before_0007_are_tied_to_their_session_or_deleted_with_it(user):
    live = ChatSessionFactory(user=user)
    deleted = ChatSessionFactory(user=user)
    message = MessageFactory(session=live)
    gone_message = MessageFactory(session=deleted)

    def key(name, body):
        return IdempotencyKey.objects.create(
            user=user, key=name, fingerprint=name, response_status=201, response_body=body
        )

    key("append", {"id": message.pk, "session": str(live.pk)})
    key("reply", {"user_message": None, "message": {"session": str(live.pk)}})
    key("checkpoint", {"user_message_id": message.pk})
    key("append-gone", {"id": gone_message.pk, "session": str(deleted.pk)})
    key("checkpoint-gone", {"user_message_id": gone_message.pk})
    key("unknown-shape", {"detail": "something else"})
    key("not-a-uuid", {"session": "nope"})
    IdempotencyKey.objects.create(user=user, key="in-progress", fingerprint="x")
    ChatSession.objects.filter(pk=deleted.pk).delete()

    tie_keys(apps, None)

    tied = dict(IdempotencyKey.objects.values_list("key", "session_id"))
    assert tied == {
        "append": live.pk,
        "reply": live.pk,
        "checkpoint": live.pk,
        "unknown-shape": None,
        "not-a-uuid": None,
        "in-progress": None,
    }
