"""The Message field list: the one place that says which of a message's fields each surface shows.

Everything else derives from MESSAGE_FIELDS: the API's output (`MessageSerializer.Meta.fields`
and `message_representation`), the JSON Lines export and the field names the import accepts
(transfer.py), the admin's read-only detail fields (admin.py), and the history cache, which
stores a message as its API JSON and reads it back by key name (cache_encoding.py). Adding a
message column is: the model field, its migration, and one line here.
conversations/tests/test_fields.py fails when a column of Message is missing here.

The order is the API JSON's key order (and the export's, and the admin's).

A session's API fields are listed here too (SESSION_API_FIELDS), and its export keys derive
from them (session_export_names).

This module imports no model, so a test can extend the list before anything derives from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from django.utils import timezone

Kind = Literal["plain", "uuid", "datetime"]


@dataclass(frozen=True)
class MessageField:
    """One field of a message as the outside world sees it.

    `name`: the key in the API JSON and the export. `attr`: the model attribute it comes from.
    `kind`: how the value is written as JSON (plain JSON value, UUID as text, datetime as
    ISO 8601). Every field is in the API output, and so in the history cache (which stores the
    API JSON and must rebuild whole instances from it). `export`: in the JSON Lines export and
    accepted by the import. `admin`: the admin's read-only field showing it (its name on the
    admin when it is a display method), or None when the admin does not show it.
    """

    name: str
    attr: str = ""
    kind: Kind = "plain"
    export: bool = True
    admin: str | None = ""

    def __post_init__(self) -> None:
        if not self.attr:
            object.__setattr__(self, "attr", self.name)
        if self.admin == "":
            object.__setattr__(self, "admin", self.name)
        # Both end up in generated code (representation_function) and in JSON keys.
        if not (self.name.isidentifier() and self.attr.isidentifier()):
            raise ValueError(f"field names must be identifiers: {self.name!r}, {self.attr!r}")


MESSAGE_FIELDS: tuple[MessageField, ...] = (
    MessageField("id", admin=None),
    MessageField("session", attr="session_id", kind="uuid", export=False, admin="session_link"),
    MessageField("seq"),
    MessageField("role"),
    MessageField("content", admin="content_display"),
    MessageField("name"),
    MessageField("metadata", admin="metadata_display"),
    MessageField("token_count"),
    MessageField("tool_calls", admin="tool_calls_display"),
    MessageField("tool_call_id"),
    MessageField("pinned"),
    MessageField("model"),
    MessageField("usage"),
    MessageField("finish_reason"),
    MessageField("latency_ms"),
    MessageField("context", admin="context_display"),
    # How many answers stood at this seq (a regenerate adds one); the admin lists the earlier.
    MessageField("versions", admin="versions_display"),
    MessageField("created_at", kind="datetime"),
)


# A session's fields as the API shows them (SessionSerializer.Meta.fields), in order.
SESSION_API_FIELDS: tuple[str, ...] = (
    "id",
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
    "created_at",
    "updated_at",
)


def session_export_names() -> tuple[str, ...]:
    """A session's keys in the JSON Lines export (the import accepts the same): the API's, plus
    its owner (`user`, after `id`) and `last_seq` (after `last_message_at`), which an import
    needs to restore the session."""
    names: list[str] = []
    for name in SESSION_API_FIELDS:
        names.append(name)
        names += {"id": ["user"], "last_message_at": ["last_seq"]}.get(name, [])
    return tuple(names)


# --- what the surfaces derive ------------------------------------------------------------
def api_names(spec: Iterable[MessageField] | None = None) -> list[str]:
    """The API JSON's keys, in order (MessageSerializer.Meta.fields)."""
    return [f.name for f in _spec(spec)]


def export_names(spec: Iterable[MessageField] | None = None) -> tuple[str, ...]:
    """A message's keys in the JSON Lines export, in order; the import accepts the same."""
    return tuple(f.name for f in _spec(spec) if f.export)


def admin_names(spec: Iterable[MessageField] | None = None) -> tuple[str, ...]:
    """The admin's read-only fields of a message, in order."""
    return tuple(f.admin for f in _spec(spec) if f.admin)


def api_datetime(value: datetime) -> str:
    """A datetime as DRF's DateTimeField writes it (current time zone, `Z` for UTC)."""
    text = timezone.localtime(value).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def representation_function(spec: Iterable[MessageField] | None = None) -> Callable[[Any], dict]:
    """A function returning a message's API JSON (a dict) for the fields of `spec`.

    Generated as one dict display, as a hand-written function would be: every history page
    and append goes through it (DRF's field-by-field machinery cost ~60 us a message; a loop
    over the spec about twice this).
    """
    items = []
    for f in _spec(spec):
        value = f"m.{f.attr}"
        if f.kind == "uuid":
            value = f"str({value})"
        elif f.kind == "datetime":
            value = f"api_datetime({value})"
        items.append(f"{f.name!r}: {value}")
    return _compile("representation", "m", "{" + ", ".join(items) + "}", api_datetime)


def _compile(name: str, args: str, expression: str, *helpers: Callable) -> Callable:
    namespace: dict[str, Any] = {helper.__name__: helper for helper in helpers}
    exec(f"def {name}({args}):\n    return {expression}\n", namespace)
    return namespace[name]


def _spec(spec: Iterable[MessageField] | None) -> Iterable[MessageField]:
    # Read at call time, so a test that extends MESSAGE_FIELDS before the derivers run sees it.
    return MESSAGE_FIELDS if spec is None else spec
