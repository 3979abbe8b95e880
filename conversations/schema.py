"""OpenAPI examples for the conversations endpoints (views.py says which operation uses which).

Kept out of views.py so the views stay thin; the values are what the API really returns.
"""

from drf_spectacular.utils import OpenApiExample

SESSION_ID = "0b6b3a52-6c1e-4f1b-9a55-2f3f1f0c9d11"
BASE = "http://127.0.0.1:8000/api/v1"

SESSION = {
    "id": SESSION_ID,
    "title": "Trip to Lisbon",
    "title_source": "user",
    "system_prompt": "You are a concise travel guide.",
    "model": "",
    "metadata": {"customer": "c-1042"},
    "archived": False,
    "context_strategy": "window",
    "forked_from": None,
    "forked_at_seq": None,
    "message_count": 2,
    "total_tokens": 0,
    "last_message_at": "2026-11-27T09:15:02.417Z",
    "created_at": "2026-11-27T09:14:40.101Z",
    "updated_at": "2026-11-27T09:15:02.420Z",
}

MESSAGE = {
    "id": 101,
    "session": SESSION_ID,
    "seq": 1,
    "role": "user",
    "content": "Three things to see in Belém?",
    "name": "",
    "metadata": {},
    "token_count": 0,
    "tool_calls": None,
    "tool_call_id": "",
    "pinned": False,
    "model": None,
    "usage": None,
    "finish_reason": None,
    "latency_ms": None,
    "context": None,
    "versions": 1,
    "created_at": "2026-11-27T09:15:02.417Z",
}

SESSION_CREATE_REQUEST = OpenApiExample(
    "Create a session",
    value={
        "title": "Trip to Lisbon",
        "system_prompt": "You are a concise travel guide.",
        "metadata": {"customer": "c-1042"},
    },
    request_only=True,
)
SESSION_CREATED = OpenApiExample(
    "The new session",
    value={**SESSION, "message_count": 0, "last_message_at": None},
    response_only=True,
    status_codes=["201"],
)
SESSION_OK = OpenApiExample("A session", value=SESSION, response_only=True, status_codes=["200"])
SESSION_PAGE = OpenApiExample(
    "A page of sessions",
    value={
        "results": [SESSION],
        "next": f"{BASE}/sessions/?limit=1&cursor=MjAyNi0xMS0yN1QwOTox",
        "has_more": True,
    },
    response_only=True,
    status_codes=["200"],
)
SESSION_UPDATE_REQUEST = OpenApiExample(
    "Archive and rename",
    value={"title": "Lisbon, May", "archived": True},
    request_only=True,
)
SESSION_UPDATED = OpenApiExample(
    "The changed session",
    value={**SESSION, "title": "Lisbon, May", "archived": True},
    response_only=True,
    status_codes=["200"],
)
MESSAGE_CREATE_REQUEST = OpenApiExample(
    "Append a user message",
    value={"role": "user", "content": "Three things to see in Belém?"},
    request_only=True,
)
TOOL_CALL_REQUEST = OpenApiExample(
    "Append an assistant message calling a tool",
    value={
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_7Qp2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
            }
        ],
    },
    request_only=True,
)
TOOL_RESULT_REQUEST = OpenApiExample(
    "Append the tool's result",
    value={"role": "tool", "tool_call_id": "call_7Qp2", "content": '{"temp_c": 21}'},
    request_only=True,
)
MESSAGE_CREATED = OpenApiExample(
    "The stored message", value=MESSAGE, response_only=True, status_codes=["201"]
)
MESSAGE_PAGE = OpenApiExample(
    "A page of history",
    value={
        "results": [
            MESSAGE,
            {
                **MESSAGE,
                "id": 102,
                "seq": 2,
                "role": "assistant",
                "content": "The Jerónimos Monastery, Belém Tower and the Pastéis de Belém.",
            },
        ],
        "next": f"{BASE}/sessions/{SESSION_ID}/messages/?limit=2&after=2",
        "has_more": True,
    },
    response_only=True,
    status_codes=["200"],
)
SEARCH_PAGE = OpenApiExample(
    "A page of hits",
    value={
        "results": [
            {
                "kind": "message",
                "session": SESSION_ID,
                "session_title": "Trip to Lisbon",
                "message": 102,
                "seq": 2,
                "role": "assistant",
                "snippet": "The Jerónimos Monastery, <mark>Belém</mark> Tower and the Pastéis "
                "de <mark>Belém</mark>.",
                "rank": 0.0991,
                "created_at": "2026-11-27T09:15:04.102Z",
            }
        ],
        "next": f"{BASE}/search/?q=bel%C3%A9m&limit=1&cursor=MC4wOTkxfG0wMDAwMDAwMDAw",
        "has_more": True,
    },
    response_only=True,
    status_codes=["200"],
)

# --- Branching ------------------------------------------------------------------------------
FORK_ID = "5d2e8f61-0a3b-4c7d-9e1f-7b6a5c4d3e21"
FORK = {
    **SESSION,
    "id": FORK_ID,
    "forked_from": SESSION_ID,
    "forked_at_seq": 1,
    "message_count": 1,
    "last_message_at": "2026-11-27T09:14:58.002Z",
    "created_at": "2026-11-27T09:20:03.511Z",
    "updated_at": "2026-11-27T09:20:03.511Z",
}
FORK_REQUEST = OpenApiExample(
    "Fork after the first message",
    value={"at_seq": 1, "title": "Lisbon, plan B"},
    request_only=True,
)
FORK_CREATED = OpenApiExample(
    "The fork",
    value={**FORK, "title": "Lisbon, plan B"},
    response_only=True,
    status_codes=["201"],
)
FORK_PAGE = OpenApiExample(
    "A page of forks",
    value={"results": [FORK], "next": None, "has_more": False},
    response_only=True,
    status_codes=["200"],
)
_ANSWER = {
    "content": "The Jerónimos Monastery, Belém Tower and the Pastéis de Belém.",
    "metadata": {},
    "token_count": 21,
    "tool_calls": None,
    "model": "gpt-4o-mini",
    "usage": {"prompt_tokens": 27, "completion_tokens": 14, "total_tokens": 41},
    "finish_reason": "stop",
    "latency_ms": 388,
    "context": {
        "first_seq": 1,
        "last_seq": 1,
        "messages_included": 1,
        "messages_dropped": 0,
        "tokens": 27,
        "budget": 126944,
        "encoding": "o200k_base",
    },
}
VERSION_PAGE = OpenApiExample(
    "Two answers, the second current",
    value={
        "results": [
            {"number": 1, "current": False, **_ANSWER, "created_at": "2026-11-27T09:15:02.417Z"},
            {
                "number": 2,
                "current": True,
                **_ANSWER,
                "content": "Belém Tower, the MAAT and the Jerónimos Monastery.",
                "token_count": 17,
                "latency_ms": 402,
                "created_at": "2026-11-27T09:16:40.120Z",
            },
        ],
        "next": None,
        "has_more": False,
    },
    response_only=True,
    status_codes=["200"],
)


SUMMARY_PAGE = OpenApiExample(
    "A page of summaries",
    value={
        "results": [
            {
                "id": 12,
                "covers_from_seq": 1,
                "covers_to_seq": 40,
                "text": "Ana is planning a day in Lisbon: Belém in the morning, Alfama after.",
                "token_count": 41,
                "model": "gpt-4o-mini",
                "usage": {"prompt_tokens": 612, "completion_tokens": 24, "total_tokens": 636},
                "created_at": "2026-03-01T10:15:00Z",
            }
        ],
        "next": None,
        "has_more": False,
    },
    response_only=True,
    status_codes=["200"],
)


MESSAGE_PIN_REQUEST = OpenApiExample("Pin a message", value={"pinned": True}, request_only=True)
MESSAGE_OK = OpenApiExample(
    "The message", value={**MESSAGE, "pinned": True}, response_only=True, status_codes=["200"]
)
