"""The wire shapes of /v1/: request bodies in, OpenAI objects out.

Input items become `NewMessage`s (what is appended, or sent without storing); stored messages
become items. The one mapping between OpenAI's items and chatengine's messages is here:
  message (user | system | developer | assistant)  <->  a message of that role
                                                       (developer is stored as system)
  function_call (consecutive ones: one message)     <->  an assistant message's tool_calls
  function_call_output                              <->  a tool message
  compaction (in)                                   ->   a system message carrying its summary
"""

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chatengine.exceptions import NotFound
from conversations.models import ChatSession, Message
from conversations.serializers import (
    MODEL_HELP,
    MetadataField,
    ModelNameField,
    StrictBooleanField,
    StrictCharField,
    StrictInputSerializer,
)
from llm.context import summary_message
from llm.serializers import MAX_OUTPUT_TOKENS_LIMIT, StrictIntegerField
from llm.types import ToolCall, Usage
from openai_api import ids
from openai_api.errors import InvalidParameter

MAX_ITEMS = 1000  # per request, as OpenAI's limit on conversation items created at once
TEXT_PARTS = ("input_text", "output_text")
INCOMPLETE_REASONS = {"length": "max_output_tokens", "interrupted": "interrupted"}


# --- Input items --------------------------------------------------------------------------
@dataclass(frozen=True)
class NewMessage:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    compaction: "Compaction | None" = None  # the compaction item this message carries


# --- Compaction items -------------------------------------------------------------------
# `encrypted_content` is signed, not encrypted (django.core.signing, SECRET_KEY): the client
# can read its summary but not alter it, and only the user it was made for may send it.
COMPACTION_SALT = "chatengine.openai_api.compaction"


@dataclass(frozen=True)
class Compaction:
    """A summary as a compaction item carries it: the text and how many messages it covers."""

    text: str
    covers_to_seq: int
    user_id: int
    session_id: str | None = None  # the stored conversation summarised, if any
    summary_id: int | None = None

    def encode(self) -> str:
        return signing.dumps(
            [self.text, self.covers_to_seq, self.user_id, self.session_id, self.summary_id],
            salt=COMPACTION_SALT,
            compress=True,
        )

    def item(self) -> dict[str, Any]:
        return {
            "type": "compaction",
            "id": ids.compaction_id(self.summary_id),
            "encrypted_content": self.encode(),
        }


def decode_compaction(value: Any, *, param: str, user_id: int) -> Compaction:
    """The compaction `value` carries; a 404 naming `param` unless chatengine made it for this
    user (another user's is as missing as an altered one)."""
    missing = NotFound(
        f"{param}: no compaction of this user's has this content (altered, or not made by "
        "chatengine).",
        details={param: ["No such compaction."]},
    )
    if not isinstance(value, str):
        raise missing
    try:
        text, covers_to_seq, owner, session_id, summary_id = signing.loads(
            value, salt=COMPACTION_SALT
        )
    except (signing.BadSignature, ValueError, TypeError):
        raise missing from None
    if owner != user_id:
        raise missing
    return Compaction(text, covers_to_seq, owner, session_id, summary_id)


MAX_CALL_ID_CHARS = 128  # Message.tool_call_id


def _text(value: Any, param: str, *, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise InvalidParameter(param, f"{param}: expected a string.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParameter(param, f"{param}: lone surrogates are not allowed.") from None
    if "\x00" in value:  # PostgreSQL cannot store it
        raise InvalidParameter(param, f"{param}: null characters are not allowed.")
    limit = max_length or settings.CHATENGINE_MAX_MESSAGE_CHARS
    if len(value) > limit:
        raise InvalidParameter(param, f"{param}: longer than {limit} characters.")
    return value


def _content(value: Any, param: str) -> str:
    """A message's content: a string, or a list of text parts (joined)."""
    if isinstance(value, str):
        return _text(value, param)
    if not isinstance(value, list):
        raise InvalidParameter(param, f"{param}: expected a string or a list of content parts.")
    texts = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS:
            raise InvalidParameter(
                f"{param}.{i}.type",
                f"{param}.{i}: content of type {kind!r} is not supported by chatengine "
                "(text only: input_text, output_text; no images, files or audio).",
            )
        texts.append(_text(part.get("text"), f"{param}.{i}.text"))
    return "".join(texts)


def parse_items(
    value: Any, *, param: str, text: bool = True, user_id: int | None = None
) -> list[NewMessage]:
    """OpenAI input items (or, if `text`, a string: one user message) as their messages.

    `user_id`: compaction items are accepted (a response's input), made for this user.
    """
    if text and isinstance(value, str):
        return [NewMessage(role=Message.Role.USER, content=_text(value, param))]
    if not isinstance(value, list):
        expected = "a string or a list of items" if text else "a list of items"
        raise InvalidParameter(param, f"{param}: expected {expected}.")
    if len(value) > MAX_ITEMS:
        raise InvalidParameter(param, f"{param}: at most {MAX_ITEMS} items.")
    out: list[NewMessage] = []
    for i, item in enumerate(value):
        at = f"{param}.{i}"
        if not isinstance(item, dict):
            raise InvalidParameter(at, f"{at}: expected an object.")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidParameter(
                    f"{at}.role", f"{at}.role: one of user, system, developer, assistant."
                )
            role = Message.Role.SYSTEM if role == "developer" else role
            out.append(
                NewMessage(role=role, content=_content(item.get("content"), f"{at}.content"))
            )
        elif kind == "function_call":
            call = ToolCall(
                id=_text(item.get("call_id"), f"{at}.call_id", max_length=MAX_CALL_ID_CHARS),
                name=_text(item.get("name"), f"{at}.name"),
                arguments=_text(item.get("arguments"), f"{at}.arguments"),
            )
            previous = out[-1] if out else None
            if previous is not None and previous.tool_calls and not previous.content:
                # Parallel calls of one model turn: one assistant message, as the model sent.
                out[-1] = NewMessage(
                    role=Message.Role.ASSISTANT, content="", tool_calls=(*previous.tool_calls, call)
                )
            else:
                out.append(NewMessage(role=Message.Role.ASSISTANT, content="", tool_calls=(call,)))
        elif kind == "function_call_output":
            out.append(
                NewMessage(
                    role=Message.Role.TOOL,
                    content=_content(item.get("output"), f"{at}.output"),
                    tool_call_id=_text(
                        item.get("call_id"), f"{at}.call_id", max_length=MAX_CALL_ID_CHARS
                    ),
                )
            )
        elif kind == "compaction" and user_id is not None:
            compaction = decode_compaction(
                item.get("encrypted_content"), param=f"{at}.encrypted_content", user_id=user_id
            )
            summary = summary_message(text=compaction.text, covers_to_seq=compaction.covers_to_seq)
            out.append(
                NewMessage(
                    role=Message.Role.SYSTEM,
                    content=summary.content,
                    compaction=compaction,
                )
            )
        else:
            also = ", compaction" if user_id is not None else ""
            raise InvalidParameter(
                f"{at}.type",
                f"{at}: items of type {kind!r} are not supported by chatengine (message, "
                f"function_call, function_call_output{also} are).",
            )
    return out


_TEXT = {"type": "string", "maxLength": settings.CHATENGINE_MAX_MESSAGE_CHARS}
_CALL_ID = {"type": "string", "maxLength": MAX_CALL_ID_CHARS}
_CONTENT = {
    "oneOf": [
        _TEXT,
        {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "text"],
                "properties": {"type": {"enum": list(TEXT_PARTS)}, "text": _TEXT},
            },
        },
    ],
    "description": "Text, or a list of text parts (`input_text`, `output_text`).",
}
# Items may carry more properties (`id`, `status`, ... of items read back): they are ignored.
ITEM_SCHEMA = {
    "anyOf": [
        {
            "type": "object",
            "title": "message",
            "required": ["role", "content"],
            "properties": {
                "type": {"enum": ["message"]},
                "role": {"enum": ["user", "system", "developer", "assistant"]},
                "content": _CONTENT,
            },
        },
        {
            "type": "object",
            "title": "function_call",
            "required": ["type", "call_id", "name", "arguments"],
            "properties": {
                "type": {"enum": ["function_call"]},
                "call_id": _CALL_ID,
                "name": _TEXT,
                "arguments": _TEXT,
            },
        },
        {
            "type": "object",
            "title": "function_call_output",
            "required": ["type", "call_id", "output"],
            "properties": {
                "type": {"enum": ["function_call_output"]},
                "call_id": _CALL_ID,
                "output": _CONTENT,
            },
        },
    ]
}
ITEMS_SCHEMA = {"type": "array", "maxItems": MAX_ITEMS, "items": ITEM_SCHEMA}
COMPACTION_ITEM_SCHEMA = {
    "type": "object",
    "title": "compaction",
    "required": ["type", "encrypted_content"],
    "properties": {
        "type": {"enum": ["compaction"]},
        "encrypted_content": {"type": "string", "description": "As chatengine made it."},
    },
}
INPUT_ITEMS_SCHEMA = {
    **ITEMS_SCHEMA,
    "items": {"anyOf": [*ITEM_SCHEMA["anyOf"], COMPACTION_ITEM_SCHEMA]},
}


@extend_schema_field(ITEMS_SCHEMA)
class ItemsField(serializers.JSONField):
    """OpenAI input items; validated by `parse_items` (errors name the item's field)."""


@extend_schema_field(
    {
        "oneOf": [_TEXT, INPUT_ITEMS_SCHEMA],
        "description": "A user message, or items (a `compaction` item from "
        "`/v1/responses/compact` too).",
    }
)
class InputField(ItemsField):
    pass


@extend_schema_field(
    {
        "type": "array",
        "maxItems": 1,
        "items": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"enum": ["compaction"]},
                "compact_threshold": {
                    "type": ["integer", "null"],
                    "minimum": settings.LLM_SUMMARY_MAX_TOKENS + 1,
                },
            },
        },
        "description": '`[{"type": "compaction", "compact_threshold": n}]`: this call '
        "uses rolling summaries, folding once its context would pass n tokens (default: the "
        "model's budget).",
    }
)
class ContextManagementField(serializers.JSONField):
    """OpenAI's `context_management`, as the ceiling for the context of a summarising call:
    `None` (not asked), else the compact_threshold (`0`: none given, the model's budget)."""

    def to_internal_value(self, data):
        param = "context_management"
        if not isinstance(data, list) or len(data) > 1:
            raise InvalidParameter(param, f"{param}: expected a list of at most one entry.")
        if not data:
            return None
        entry = data[0]
        if not isinstance(entry, dict) or entry.get("type") != "compaction":
            raise InvalidParameter(
                f"{param}.0.type", f"{param}.0.type: only 'compaction' is supported."
            )
        unknown = set(entry) - {"type", "compact_threshold"}
        if unknown:
            raise InvalidParameter(
                f"{param}.0", f"{param}.0: unknown properties {sorted(unknown)}."
            )
        threshold = entry.get("compact_threshold")
        if threshold is None:
            return 0
        floor = settings.LLM_SUMMARY_MAX_TOKENS + 1
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < floor:
            raise InvalidParameter(
                f"{param}.0.compact_threshold",
                f"{param}.0.compact_threshold: an integer of at least {floor} (more than a "
                "summary's own cap, LLM_SUMMARY_MAX_TOKENS).",
            )
        return threshold


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["type", "name"],
            "properties": {
                "type": {"enum": ["function"]},
                "name": _TEXT,
                "description": {"type": ["string", "null"]},
                "parameters": {"type": ["object", "null"]},
                "strict": {"type": ["boolean", "null"]},
            },
        },
        "description": "Function tools (passed to the model); built-in tools are refused.",
    }
)
class ToolsField(serializers.JSONField):
    pass


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


# --- Request bodies -------------------------------------------------------------------------
class ConversationCreateInputSerializer(StrictInputSerializer):
    items = ItemsField(required=False, allow_null=True, help_text="Initial items (at most 1000).")
    metadata = MetadataField(required=False, allow_null=True)


class ConversationUpdateInputSerializer(StrictInputSerializer):
    metadata = MetadataField(help_text="Replaces the conversation's metadata.")


class ItemCreateInputSerializer(StrictInputSerializer):
    items = ItemsField(help_text="Items to append, oldest first (at most 1000).")


class ItemListQuerySerializer(serializers.Serializer):
    after = serializers.CharField(required=False, help_text="An item id: list the items after it.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=20)
    order = serializers.ChoiceField(choices=["asc", "desc"], required=False, default="desc")
    include = serializers.CharField(
        required=False, help_text="Accepted; chatengine's items carry no optional fields."
    )


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {
                "type": "object",
                "required": ["id"],
                "properties": {"id": {"type": "string"}},
                "additionalProperties": False,
            },
        ],
        "description": '`"conv_…"` or `{"id": "conv_…"}`.',
    }
)
class ConversationParamField(serializers.JSONField):
    """`"conv_…"` or `{"id": "conv_…"}`."""

    def to_internal_value(self, data):
        if isinstance(data, dict) and set(data) == {"id"}:
            data = data["id"]
        if not isinstance(data, str):
            raise serializers.ValidationError('Expected "conv_…" or {"id": "conv_…"}.')
        return data


# The OpenAI parameters chatengine has no equivalent for: refused with a 400 naming them,
# except when sent with the value that means what chatengine does anyway.
UNSUPPORTED_UNLESS = {
    "background": (False,),
    "parallel_tool_calls": (True,),
    "tool_choice": ("auto",),
    "text": ({"format": {"type": "text"}},),
    "include": ([],),
}
UNSUPPORTED = (
    "prompt",
    "reasoning",
    "service_tier",
    "top_logprobs",
    "max_tool_calls",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "user",
    "stream_options",
    "prompt_cache_options",
    "image",
)


def without_unsupported(data: Any) -> Any:
    """`data` without OpenAI's parameters chatengine has no equivalent for, when they are
    null or mean what chatengine does anyway; a 400 naming any other."""
    if not isinstance(data, dict):
        return data
    for name in UNSUPPORTED:
        if data.get(name) is not None:
            raise InvalidParameter(name, f"{name}: not supported by chatengine.")
    for name, harmless in UNSUPPORTED_UNLESS.items():
        if data.get(name) is not None and data[name] not in harmless:
            raise InvalidParameter(
                name, f"{name}: only {json.dumps(harmless[0])} is supported by chatengine."
            )
    return {k: v for k, v in data.items() if k not in UNSUPPORTED and k not in UNSUPPORTED_UNLESS}


def function_tools(value: Any) -> tuple[dict[str, Any], ...]:
    """`tools` as chat-completions tools: function tools only."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidParameter("tools", "tools: expected a list.")
    tools = []
    for i, tool in enumerate(value):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise InvalidParameter(
                f"tools.{i}.type",
                f"tools.{i}: tools of type {kind!r} are not supported by chatengine (built-in "
                "tools such as web search are not; function tools are).",
            )
        function = {"name": _text(tool.get("name"), f"tools.{i}.name")}
        for key, kind in (("description", str), ("parameters", dict), ("strict", bool)):
            if tool.get(key) is None:
                continue
            if not isinstance(tool[key], kind):
                raise InvalidParameter(f"tools.{i}.{key}", f"tools.{i}.{key}: wrong type.")
            function[key] = tool[key]
        tools.append({"type": "function", "function": function})
    return tuple(tools)


class InputTokensInputSerializer(StrictInputSerializer):
    """What decides a response's input: counted (`/v1/responses/input_tokens`) or sent."""

    model = ModelNameField(required=False, allow_null=True, help_text=MODEL_HELP)
    input = InputField(required=False, allow_null=True)
    instructions = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=settings.CHATENGINE_MAX_MESSAGE_CHARS,
        help_text="A system message for this call only (after the session's system prompt); "
        "not stored, not carried over by `previous_response_id`.",
    )
    conversation = ConversationParamField(required=False, allow_null=True)
    previous_response_id = StrictCharField(required=False, allow_null=True)
    tools = ToolsField(required=False, allow_null=True)
    truncation = serializers.ChoiceField(
        choices=["auto", "disabled"], required=False, allow_null=True, default="auto"
    )
    context_management = ContextManagementField(required=False, allow_null=True)
    # Not both (a 400 naming previous_response_id); JSON Schema says it too.
    schema_extra = {
        "allOf": [
            {
                "not": {
                    "required": ["conversation", "previous_response_id"],
                    "properties": {
                        "conversation": {"not": {"type": "null"}},
                        "previous_response_id": {"type": "string"},
                    },
                }
            }
        ]
    }

    def to_internal_value(self, data):
        return super().to_internal_value(without_unsupported(data))

    def validate(self, attrs):
        if attrs.get("conversation") is not None and attrs.get("previous_response_id") is not None:
            raise InvalidParameter(
                "previous_response_id",
                "previous_response_id: send either conversation or previous_response_id, not both.",
            )
        return attrs


class ResponseCreateInputSerializer(InputTokensInputSerializer):
    max_output_tokens = StrictIntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_OUTPUT_TOKENS_LIMIT
    )
    temperature = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=1)
    store = StrictBooleanField(required=False, allow_null=True, default=True)
    metadata = MetadataField(required=False, allow_null=True)
    stream = StrictBooleanField(required=False, allow_null=True, default=False)
    schema_extra = {
        "allOf": [
            *InputTokensInputSerializer.schema_extra["allOf"],
            {
                # Streamed tool calls are not parsed yet: refused rather than lost.
                "not": {
                    "required": ["tools", "stream"],
                    "properties": {
                        "stream": {"const": True},
                        "tools": {"type": "array", "minItems": 1},
                    },
                }
            },
        ]
    }

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if attrs.get("tools") and attrs.get("stream"):
            raise InvalidParameter(
                "tools", "tools: not supported with stream: true by chatengine (yet)."
            )
        return attrs


class CompactInputSerializer(StrictInputSerializer):
    """`POST /v1/responses/compact`: a stored conversation, or `input` alone."""

    model = ModelNameField(
        allow_null=True,
        help_text=f"Writes the summary (null: the conversation's model). {MODEL_HELP}",
    )
    input = InputField(required=False, allow_null=True)
    previous_response_id = StrictCharField(required=False, allow_null=True)
    conversation = ConversationParamField(
        required=False, allow_null=True, help_text="chatengine's: compact this conversation."
    )
    # What to compact: `input`, or a stored conversation (not both; conversation and
    # previous_response_id not both either).
    schema_extra = {
        "allOf": [
            *InputTokensInputSerializer.schema_extra["allOf"],
            {
                "anyOf": [
                    {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                    for name in ("input", "conversation", "previous_response_id")
                ]
            },
            *(
                {
                    "not": {
                        "required": ["input", source],
                        "properties": {
                            "input": {"not": {"type": "null"}},
                            source: {"not": {"type": "null"}},
                        },
                    }
                }
                for source in ("conversation", "previous_response_id")
            ),
        ]
    }

    def to_internal_value(self, data):
        if isinstance(data, dict) and data.get("instructions") is not None:
            raise InvalidParameter(
                "instructions", "instructions: not supported on compact by chatengine."
            )
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "instructions"}
        return super().to_internal_value(without_unsupported(data))

    validate = InputTokensInputSerializer.validate


# --- Output objects -------------------------------------------------------------------------
def _timestamp(moment) -> int:
    return int(moment.timestamp())


def conversation_object(session: ChatSession) -> dict[str, Any]:
    return {
        "id": ids.conversation_id(session.pk),
        "object": "conversation",
        "created_at": _timestamp(session.created_at),
        "metadata": session.metadata or {},
    }


def message_items(message: Message) -> list[dict[str, Any]]:
    """The items one stored (or unsaved) message stands for."""
    if message.role == Message.Role.TOOL:
        return [
            {
                "type": "function_call_output",
                "id": ids.function_call_output_id(message.pk),
                "call_id": message.tool_call_id,
                "output": message.content,
                "status": "completed",
            }
        ]
    items: list[dict[str, Any]] = []
    calls = message.tool_calls or []
    if message.role != Message.Role.ASSISTANT:
        items.append(
            {
                "type": "message",
                "id": ids.message_id(message.pk),
                "role": message.role,
                "status": "completed",
                "content": [{"type": "input_text", "text": message.content}],
            }
        )
    elif message.content or not calls:
        items.append(output_message(message_id=ids.message_id(message.pk), message=message))
    for index, call in enumerate(calls):
        items.append(
            {
                "type": "function_call",
                "id": ids.function_call_id(message.pk, index),
                "call_id": call["id"],
                "name": call["function"]["name"],
                "arguments": call["function"]["arguments"],
                "status": "completed",
            }
        )
    return items


def output_message(*, message_id: str, message: Message | None = None, text: str = ""):
    status = "completed"
    if message is not None:
        text = message.content
        status = "incomplete" if message.finish_reason in INCOMPLETE_REASONS else "completed"
    return {
        "type": "message",
        "id": message_id,
        "role": "assistant",
        "status": status,
        "content": [output_text(text)],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def item_list(items: list[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def usage_object(*, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def reply_usage(reply: Message) -> dict[str, Any]:
    """From the provider when it reported usage, else chatengine's own count."""
    if reply.usage:
        return usage_object(
            input_tokens=int(reply.usage.get("prompt_tokens", 0)),
            output_tokens=int(reply.usage.get("completion_tokens", 0)),
        )
    return usage_object(
        input_tokens=int((reply.context or {}).get("tokens", 0)), output_tokens=reply.token_count
    )


@dataclass(frozen=True)
class ResponseRequest:
    """What a response was asked with, echoed in the response object."""

    model: str
    instructions: str | None = None
    previous_response_id: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: tuple[dict[str, Any], ...] = ()
    store: bool = True
    metadata: dict[str, str] | None = None
    truncation: str = "auto"
    # `context_management` compaction: None (not asked), 0 (the model's budget) or the
    # compact_threshold, the ceiling of this call's context.
    compact_threshold: int | None = None


def response_object(
    *,
    response_id: str,
    created_at: int,
    request: ResponseRequest,
    session: ChatSession | None,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    model: str | None = None,
    error: dict[str, Any] | None = None,
    incomplete_reason: str | None = None,
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": model or request.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": request.previous_response_id,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "tool_choice": "auto",
        "tools": [{"type": "function", "strict": None, **t["function"]} for t in request.tools],
        "truncation": request.truncation,
        "store": request.store,
        "text": {"format": {"type": "text"}},
        "usage": usage,
        "metadata": request.metadata or {},
        "conversation": (
            {"id": ids.conversation_id(session.pk)}
            if session is not None and request.store
            else None
        ),
    }


def reply_response_object(
    *,
    response_id: str,
    created_at: int,
    request: ResponseRequest,
    session: ChatSession | None,
    reply: Message,
) -> dict[str, Any]:
    """A finished response: its output and usage from the reply message (stored or not)."""
    reason = INCOMPLETE_REASONS.get(reply.finish_reason or "")
    return response_object(
        response_id=response_id,
        created_at=created_at,
        request=request,
        session=session,
        status="incomplete" if reason else "completed",
        output=message_items(reply),
        usage=reply_usage(reply),
        model=reply.model,
        incomplete_reason=reason,
    )


def stored_response_object(
    *, response_id: str, asked: Message, reply: Message, request: ResponseRequest
) -> dict[str, Any]:
    """A response from its rows: `asked` (the newest message it answered) and `reply`."""
    return reply_response_object(
        response_id=response_id,
        created_at=_timestamp(asked.created_at),
        request=request,
        session=reply.session,
        reply=reply,
    )


def compaction_object(
    *, compaction: Compaction, kept: list[Message], usage: Usage, created_at: int
) -> dict[str, Any]:
    """A `response.compaction`: the user messages kept (compacted input), then the compaction."""
    item = compaction.item()
    return {
        "id": item["id"],
        "object": "response.compaction",
        "created_at": created_at,
        "output": [*(i for m in kept for i in message_items(m)), item],
        "usage": usage_object(
            input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens
        ),
    }


def deleted_object(*, object_id: str, kind: str) -> dict[str, Any]:
    return {"id": object_id, "object": f"{kind}.deleted", "deleted": True}
