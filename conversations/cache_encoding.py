"""How the history cache writes a message and a session's version, and reads a message back.

Each message is stored as its API JSON (serializers.message_representation, written as the
renderer writes it), so a history page served from the cache goes out without being parsed or
serialized again (chatengine/renderers.py). Readers that need model instances (list_messages)
parse it back by key name (conversations/fields.py says which key is which attribute);
created_at round-trips exactly (ISO 8601 with microseconds).

The field list is part of every stamp (LAYOUT), so a tail written by a process with another
field list never matches and is rebuilt: changing a field needs no key-prefix bump.
"""

from __future__ import annotations

import json
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Protocol

from django.db import DEFAULT_DB_ALIAS

from chatengine.renderers import dumps
from conversations import fields as message_fields
from conversations.models import Message
from conversations.serializers import message_representation

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SPEC = [f for f in message_fields.MESSAGE_FIELDS]
_KEYS = frozenset(f.name for f in _SPEC)
_ATTRS = [f.attr for f in _SPEC]
_RENDERED_START = dumps({_SPEC[0].name: 0})[:-2]  # b'{"id":'

LAYOUT = format(zlib.crc32(",".join(f"{f.name}={f.attr}:{f.kind}" for f in _SPEC).encode()), "x")


def _loader():
    # One generated expression per field, as for message_representation: this runs for every
    # message of every page of instances read from the cache. The session is the tail's own (the key
    # says which), so its id is not parsed back.
    values = []
    for f in _SPEC:
        if f.attr == "session_id":
            values.append("session_id")
        elif f.kind == "datetime":
            values.append(f"fromisoformat(data[{f.name!r}])")
        elif f.kind == "uuid":
            values.append(f"UUID(data[{f.name!r}])")
        else:
            values.append(f"data[{f.name!r}]")
    namespace = {"fromisoformat": datetime.fromisoformat, "UUID": uuid.UUID}
    exec(f"def load(data, session_id):\n    return [{', '.join(values)}]\n", namespace)
    return namespace["load"]


_load = _loader()


class SessionVersion(Protocol):
    """What a stamp is made of: a ChatSession row, or an append's before/after counters."""

    last_seq: int
    message_count: int
    updated_at: datetime
    history_changed_at: datetime | None


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def session_stamp(session: SessionVersion) -> str:
    """The version of a session row (and of the field list) a cached tail must match."""
    changed = _micros(session.history_changed_at) if session.history_changed_at else 0
    return (
        f"{session.last_seq}:{session.message_count}:{_micros(session.updated_at)}:{changed}"
        f":{LAYOUT}"
    )


def encode_message(message: Message) -> bytes:
    """The message's API JSON, as stored in the tail and sent in history pages."""
    return dumps(message_representation(message))


def decode_message(raw: bytes, *, session_id: uuid.UUID) -> Message:
    """A Message instance from its API JSON; ValueError if the keys are not the field list's."""
    data = json.loads(raw)
    if not isinstance(data, dict) or data.keys() != _KEYS:
        raise ValueError("cached message has a different field layout")
    # from_db builds the instance exactly as a queryset would (saved state, no defaults run).
    return Message.from_db(DEFAULT_DB_ALIAS, _ATTRS, _load(data, session_id))


def looks_rendered(raw: bytes) -> bool:
    """What a page served as stored relies on: every entry is one of our JSON objects.

    A full parse would cost what serving them as stored saves; the shape check catches the
    real risk, entries written in another layout (and the stamp's LAYOUT keeps those out).
    """
    return raw.startswith(_RENDERED_START) and raw.endswith(b"}")
