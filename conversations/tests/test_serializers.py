"""The hand-built message representation against DRF's field-by-field one, byte for byte."""

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer as DRFJSONRenderer

from chatengine.renderers import dumps
from conversations.models import Message
from conversations.serializers import MessageSerializer, message_representation
from conversations.tests.factories import ChatSessionFactory, MessageFactory


def drf_representation(message: Message) -> dict:
    """What MessageSerializer's declared fields produce, through DRF's own machinery."""
    return serializers.ModelSerializer.to_representation(MessageSerializer(), message)


def drf_bytes(message: Message) -> bytes:
    return DRFJSONRenderer().render(drf_representation(message))


REPLY = {
    "role": "assistant",
    "content": "",
    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    "model": "gpt-4o-mini",
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    "finish_reason": "tool_calls",
    "latency_ms": 812,
    "context": {"first_seq": 1, "last_seq": 2, "messages_included": 2, "messages_dropped": 0,
                "tokens": 10, "budget": 100, "encoding": "cl100k_base"},
}  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields",
    [
        {"role": "user", "content": "  héllo ✓\n", "metadata": {"k": "v"}},
        {"role": "system", "content": 'line\u2028separator\u2029and </script> "quotes"'},
        {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "calc"},
        REPLY,
    ],
    ids=["user", "separators", "tool", "reply"],
)
def test_message_representation_matches_the_serializer_fields(fields):
    message = MessageFactory(**fields)
    message.refresh_from_db()
    assert message_representation(message) == drf_representation(message)
    assert dumps(message_representation(message)) == drf_bytes(message)


@pytest.mark.django_db
def test_created_at_matches_with_and_without_microseconds():
    message = MessageFactory()
    for moment in (
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 2, 3, 4, 5, 123, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 2, 4, 4, 5, 999999, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    ):
        message.created_at = moment
        assert message_representation(message) == drf_representation(message)
        assert json.loads(dumps(message_representation(message)))["created_at"].endswith("Z")


@pytest.mark.django_db
@settings(max_examples=60, deadline=None)
@given(
    content=st.text(st.characters(exclude_categories=["Cs"])),
    metadata=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
def test_any_text_renders_as_drf_renders_it(content, metadata):
    session = ChatSessionFactory.build()
    message = Message(session=session, seq=1, role="user", content=content, metadata=metadata)
    message.id = 7
    message.created_at = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert dumps(message_representation(message)) == drf_bytes(message)
