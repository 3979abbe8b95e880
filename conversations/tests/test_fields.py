"""The Message field list (conversations/fields.py) is the one source every surface follows."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from chatengine.renderers import dumps
from conversations import fields, transfer
from conversations.admin import MessageAdmin
from conversations.cache_encoding import decode_message, encode_message
from conversations.models import Message
from conversations.serializers import MessageSerializer, message_representation

ROOT = Path(__file__).resolve().parents[2]


def test_every_message_column_is_in_the_field_list():
    # The cache rebuilds whole instances from the API JSON: a column missing from the list
    # would come back deferred (one query per message), and no surface would show it.
    columns = [f.attname for f in Message._meta.concrete_fields]
    assert [f.attr for f in fields.MESSAGE_FIELDS] == columns


def test_the_surfaces_use_the_field_list():
    assert MessageSerializer.Meta.fields == fields.api_names()
    assert list(MessageSerializer().fields) == fields.api_names()
    assert fields.export_names() == transfer.MESSAGE_FIELDS
    assert MessageAdmin.fields == MessageAdmin.readonly_fields == fields.admin_names()


def test_the_cache_decodes_by_key_name_whatever_the_key_order():
    session_id = uuid.uuid4()
    message = Message(
        id=7, session_id=session_id, seq=3, role="tool", content="42", name="calc",
        tool_call_id="c1", token_count=5, metadata={"k": "v"}, created_at=timezone.now(),
    )  # fmt: skip
    shuffled = dict(reversed(list(message_representation(message).items())))
    decoded = decode_message(dumps(shuffled), session_id=session_id)
    for f in Message._meta.concrete_fields:
        assert getattr(decoded, f.attname) == getattr(message, f.attname), f.attname
    assert decoded.get_deferred_fields() == set()


def test_the_cache_refuses_an_entry_with_a_key_missing_or_extra():
    session_id = uuid.uuid4()
    data = message_representation(Message(id=1, session_id=session_id, seq=1, role="user"))
    for broken in ({k: v for k, v in data.items() if k != "name"}, {**data, "extra": 1}):
        with pytest.raises(ValueError, match="different field layout"):
            decode_message(dumps(broken), session_id=session_id)


# Run in a fresh interpreter: the list is extended before any module derives from it, and the
# model gets the matching column, as a migration would give it. Nothing else is edited.
_ADD_A_FIELD = """
import json, os, uuid
os.environ["DJANGO_SETTINGS_MODULE"] = "chatengine.settings"
from conversations import fields
fields.MESSAGE_FIELDS = (*fields.MESSAGE_FIELDS, fields.MessageField("priority"))
import django
django.setup()
from django.db import models
from django.utils import timezone
from conversations.models import Message
Message.add_to_class("priority", models.PositiveSmallIntegerField(default=0))
from conversations import transfer
from conversations.admin import MessageAdmin
from conversations.cache_encoding import decode_message, encode_message
from conversations.serializers import MessageSerializer, message_representation
sid = uuid.uuid4()
m = Message(id=1, session_id=sid, seq=1, role="user", content="hi", priority=7,
            created_at=timezone.now())
print(json.dumps({
    "serializer_fields": list(MessageSerializer().fields),
    "representation": message_representation(m),
    "export": transfer.message_to_record(m),
    "import_accepts": list(transfer.MESSAGE_FIELDS),
    "admin": list(MessageAdmin.fields),
    "cache_round_trip": decode_message(encode_message(m), session_id=sid).priority,
}, default=str))
"""


def test_a_field_added_to_the_list_reaches_every_surface():
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    done = subprocess.run(
        [sys.executable, "-c", _ADD_A_FIELD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["serializer_fields"][-1] == "priority"  # and so the OpenAPI schema
    assert seen["representation"]["priority"] == 7
    assert list(seen["representation"]) == seen["serializer_fields"]
    assert seen["export"]["priority"] == 7
    assert "priority" in seen["import_accepts"]
    assert seen["admin"][-1] == "priority"
    assert seen["cache_round_trip"] == 7


def test_the_representation_is_the_field_lists_keys_in_order():
    message = Message(id=1, session_id=uuid.uuid4(), seq=1, role="user")
    message.created_at = timezone.now()
    assert list(message_representation(message)) == fields.api_names()
    assert json.loads(encode_message(message)).keys() == set(fields.api_names())


def test_a_sessions_export_keys_are_its_api_fields_plus_owner_and_last_seq():
    # The JSON Lines format (docs/commands.md) in its order: a file written before keeps importing.
    assert fields.session_export_names() == (
        "id",
        "user",
        "title",
        "title_source",
        "system_prompt",
        "model",
        "metadata",
        "archived",
        "context_strategy",
        "forked_from",
        "forked_at_seq",
        "message_count",
        "total_tokens",
        "last_message_at",
        "last_seq",
        "created_at",
        "updated_at",
    )
    assert fields.session_export_names() == transfer.SESSION_FIELDS
