"""OpenAPI documentation of the reply and context endpoints: the event stream's schema and
the examples (views.py says which operation uses which). The values are what the API returns
with the echo provider."""

import json

from drf_spectacular.utils import OpenApiExample

from conversations.schema import FORK, MESSAGE

USER_MESSAGE = {**MESSAGE, "id": 103, "seq": 3, "content": "And where do I eat?"}
ASSISTANT_MESSAGE = {
    **MESSAGE,
    "id": 104,
    "seq": 4,
    "role": "assistant",
    "content": "Echo: And where do I eat?",
    "token_count": 9,
    "model": "echo",
    "usage": {"prompt_tokens": 41, "completion_tokens": 8, "total_tokens": 49},
    "finish_reason": "stop",
    "latency_ms": 412,
    "context": {
        "first_seq": 1,
        "last_seq": 3,
        "messages_included": 3,
        "messages_dropped": 0,
        "tokens": 41,
        "budget": 7136,
        "encoding": "cl100k_base",
    },
    "created_at": "2026-11-27T09:16:11.032Z",
}
CONTEXT_SUMMARY = {"tokens": 41, "budget": 7136, "messages_included": 3, "messages_dropped": 0}

REPLY_REQUEST = OpenApiExample(
    "Ask and get the reply",
    value={"content": "And where do I eat?"},
    request_only=True,
)
REPLY_STREAM_REQUEST = OpenApiExample(
    "Ask and stream the reply",
    value={"content": "And where do I eat?", "max_output_tokens": 512},
    request_only=True,
)
REPLY_TO_HISTORY_REQUEST = OpenApiExample(
    "Reply to the history as it is, with another model",
    value={"model": "gpt-4o"},
    request_only=True,
)
REPLY_CREATED = OpenApiExample(
    "The stored messages",
    value={"user_message": USER_MESSAGE, "message": ASSISTANT_MESSAGE, "context": CONTEXT_SUMMARY},
    response_only=True,
    status_codes=["201"],
)


# --- The event stream ------------------------------------------------------------------------
def _event(name: str, data_schema: dict, description: str) -> dict:
    return {
        "type": "object",
        "title": name,
        "description": description,
        "properties": {
            "event": {"type": "string", "const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data_schema,
            },
        },
        "required": ["event", "data"],
    }


# One server-sent event. (OpenAPI 3.1 has no keyword for "each item of a stream"; as tools
# read it, and as 3.2's `itemSchema` says, this schema describes every event: schemathesis
# checks each event of a live stream against it.)
REPLY_STREAM_EVENT = {
    "description": "One server-sent event of the reply stream (`event:` and a JSON `data:`).",
    "oneOf": [
        _event(
            "message.delta",
            {
                "type": "object",
                "properties": {"delta": {"type": "string"}},
                "required": ["delta"],
                "additionalProperties": False,
            },
            "The next piece of the reply's text; concatenated, the deltas are its content.",
        ),
        _event(
            "message.completed",
            {"$ref": "#/components/schemas/Message"},
            "The last event of a reply that finished: the stored assistant message.",
        ),
        _event(
            "error",
            {
                "allOf": [
                    {"$ref": "#/components/schemas/ErrorEnvelope"},
                    {
                        "type": "object",
                        "properties": {
                            "retry_after": {
                                "type": "integer",
                                "minimum": 1,
                                "description": "Seconds to wait before retrying, when the "
                                "error says (an upstream `rate_limited`): what a JSON reply "
                                "sends as `Retry-After`.",
                            }
                        },
                    },
                ]
            },
            "The last event of a reply that failed once streaming had started: the error "
            "envelope (`llm_upstream_error`, `llm_timeout`, `rate_limited`, "
            "`context_overflow`), with `retry_after` when the provider said how long to wait. "
            "What had arrived is stored with `finish_reason` `interrupted`.",
        ),
    ],
}


# The body as documented: one event (above), or the whole stream's text. The last branch is
# what a client without a server-sent-events parser reads: openapi-python-client, given only
# the event objects, parsed the stream's text as one of them and crashed; with it, its
# generated operation returns the text. A parsed event is an object, so it never matches it.
REPLY_STREAM_BODY = {
    "description": REPLY_STREAM_EVENT["description"],
    "oneOf": [
        *REPLY_STREAM_EVENT["oneOf"],
        {
            "type": "string",
            "title": "stream text",
            "description": "The whole stream as text (`event:` and `data:` lines, a blank line "
            "after each event), as a client that does not parse server-sent events reads it.",
        },
    ],
}


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


SAMPLE_STREAM = (
    _sse("message.delta", {"delta": "Echo:"})
    + _sse("message.delta", {"delta": " And"})
    + "…\n\n"
    + _sse("message.completed", ASSISTANT_MESSAGE)
)
REPLY_STREAM_DESCRIPTION = (
    "Events, each an `event:` line and one JSON `data:` line:\n\n"
    '- `message.delta`: `{"delta": "..."}`, the next piece of text;\n'
    "- `message.completed`: the stored assistant message (`Message`), last;\n"
    "- `error`: the error envelope, last, when the provider fails mid-stream; with "
    "`retry_after` (seconds) when it is rate limiting.\n\n"
    "A sample stream:\n\n```\n" + SAMPLE_STREAM + "```"
)


def _stream_example(title: str, event: str, data: dict) -> OpenApiExample:
    return OpenApiExample(
        title,
        value={"event": event, "data": json.dumps(data, separators=(",", ":"))},
        response_only=True,
        status_codes=["201"],
        media_type="text/event-stream",
    )


REPLY_STREAM_EVENTS = [
    _stream_example("A message.delta event", "message.delta", {"delta": " And"}),
    _stream_example("The message.completed event", "message.completed", ASSISTANT_MESSAGE),
    _stream_example(
        "An error event of an upstream rate limit",
        "error",
        {
            "error": {
                "type": "rate_limited",
                "message": "The LLM provider is rate limiting the engine; retry later.",
                "details": {"category": "rate_limited", "upstream_status": 429},
                "request_id": "4f0c2a9e8b7d4c61a3e5f9b2d1c0e7a4",
            },
            "retry_after": 7,
        },
    ),
    _stream_example(
        "An error event",
        "error",
        {
            "error": {
                "type": "llm_timeout",
                "message": "The LLM provider did not answer in time.",
                "details": {"category": "timeout"},
                "request_id": "4f0c2a9e8b7d4c61a3e5f9b2d1c0e7a4",
            }
        },
    ),
]

CONTEXT_OK = OpenApiExample(
    "The context a reply would send",
    value={
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a concise travel guide."},
            {"role": "user", "content": "Three things to see in Belém?"},
            {
                "role": "assistant",
                "content": "The Jerónimos Monastery, Belém Tower and the Pastéis de Belém.",
            },
        ],
        "tokens": 41,
        "budget": 126944,
        "messages_included": 2,
        "messages_dropped": 0,
        "first_seq": 1,
        "last_seq": 2,
        "encoding": "o200k_base",
    },
    response_only=True,
    status_codes=["200"],
)


# --- Regenerate and edit -----------------------------------------------------------------------
REGENERATED_MESSAGE = {
    **ASSISTANT_MESSAGE,
    "content": "Echo: And where do I eat? (again)",
    "token_count": 12,
    "versions": 2,
    "created_at": "2026-11-27T09:17:30.208Z",
}
REGENERATE_REQUEST = OpenApiExample(
    "Ask again, with another model", value={"model": "gpt-4o"}, request_only=True
)
REGENERATED = OpenApiExample(
    "The message with its new answer",
    value={"message": REGENERATED_MESSAGE, "context": CONTEXT_SUMMARY},
    response_only=True,
    status_codes=["201"],
)
REGENERATE_STREAM_EVENTS = [
    _stream_example("A message.delta event", "message.delta", {"delta": " And"}),
    _stream_example("The message.completed event", "message.completed", REGENERATED_MESSAGE),
]
EDIT_REQUEST = OpenApiExample(
    "Edit message 3 and get a reply",
    value={"content": "And where do I eat fish?", "reply": True},
    request_only=True,
)
EDITED = OpenApiExample(
    "The new session with the edit and its reply",
    value={
        "session": {**FORK, "forked_at_seq": 2, "message_count": 4},
        "user_message": {
            **USER_MESSAGE,
            "session": FORK["id"],
            "content": "And where do I eat fish?",
        },
        "message": {
            **ASSISTANT_MESSAGE,
            "session": FORK["id"],
            "content": "Echo: And where do I eat fish?",
        },
        "context": CONTEXT_SUMMARY,
    },
    response_only=True,
    status_codes=["201"],
)
