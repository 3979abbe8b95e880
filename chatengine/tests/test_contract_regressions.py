"""Generated-input classes that found bugs, kept as plain regression tests.

Each block names the class of input, who found it, and what was wrong.
"""

import base64
import uuid

import pytest

from conversations.tests.factories import ChatSessionFactory

pytestmark = pytest.mark.django_db

SESSIONS = "/api/v1/sessions/"


def _assert_validation_error(response, field: str) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert field in error["details"]


# 1. Empty query parameter values (schemathesis, coverage phase: `?search=`, `?order=`).
# DRF read form-style query input leniently and took an empty value as "absent" (200 with the
# default), while the schema says each of these must be non-empty or one of an enum.
@pytest.mark.parametrize("param", ["limit", "cursor", "search"])
def test_empty_session_list_parameter_is_rejected(auth_client, param):
    _assert_validation_error(auth_client.get(f"{SESSIONS}?{param}="), param)


@pytest.mark.parametrize("param", ["limit", "after", "before", "order"])
def test_empty_history_parameter_is_rejected(auth_client, user, param):
    session = ChatSessionFactory(user=user)
    response = auth_client.get(f"{SESSIONS}{session.pk}/messages/?{param}=")
    _assert_validation_error(response, param)


def test_empty_archived_filter_still_means_no_filter(auth_client, user):
    # `archived` is documented as boolean or null; an empty value is the null.
    ChatSessionFactory(user=user, archived=True)
    ChatSessionFactory(user=user, archived=False)
    response = auth_client.get(f"{SESSIONS}?archived=")
    assert response.status_code == 200
    assert len(response.json()["results"]) == 2


# 2. Crafted session-list cursors (found reviewing what the fuzzer cannot reach: the cursor is
# opaque, so random strings only ever hit the "not base64" branch). A well-formed cursor with
# a naive timestamp ran a naive-datetime query; one whose timestamp leaves the datetime range
# when moved to UTC raised OverflowError in the SQLite adapter: a 500.
def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-01-01T00:00:00",  # naive
        "9999-12-31T23:59:59-14:00",  # past year 9999 in UTC
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    ],
)
def test_crafted_cursor_timestamp_is_a_validation_error(auth_client, user, stamp):
    ChatSessionFactory(user=user)
    response = auth_client.get(SESSIONS, {"cursor": _cursor(f"{stamp}|{uuid.uuid4()}")})
    _assert_validation_error(response, "cursor")


def test_cursor_from_next_still_pages_through(auth_client, user):
    for _ in range(3):
        ChatSessionFactory(user=user)
    first = auth_client.get(SESSIONS, {"limit": 2}).json()
    second = auth_client.get(first["next"]).json()
    assert len(first["results"]) == 2
    assert len(second["results"]) == 1
    assert second["next"] is None


# 3. Schema-valid bodies the API refused (schemathesis, positive_data_acceptance): the schema
# allowed what the serializers reject, so clients generated from it would send both.
#   a. A blank string where the field is not allow_blank (`{"role": "tool", "content": ""}`):
#      now documented as minLength 1 (ENFORCE_NON_BLANK_FIELDS). Since tool calls, blank content
#      is allowed for exactly one case, an assistant message carrying `tool_calls`: the
#      message body is documented per role (oneOf), the assistant's with
#      `anyOf: [required tool_calls, content minLength 1]`.
#   b. An unknown property (`{"": null, "role": ..., "content": ...}`): StrictInputSerializer
#      refuses it, now documented as additionalProperties: false.
@pytest.fixture(scope="module")
def components() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]


TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def _post_message(client, session, body):
    return client.post(f"{SESSIONS}{session.pk}/messages/", body, format="json")


@pytest.mark.parametrize("role", ["system", "user", "tool"])
def test_schema_says_content_may_not_be_blank_except_for_tool_calls(components, role):
    variant = components[f"{role.title()}MessageInput"]
    assert variant["properties"]["content"]["minLength"] == 1
    text = components["AssistantTextMessageInput"]
    assert text["properties"]["content"]["minLength"] == 1
    assert "tool_calls" not in text["properties"]
    calling = components["AssistantToolCallsMessageInput"]
    assert "minLength" not in calling["properties"]["content"]
    assert "tool_calls" in calling["required"]


@pytest.mark.parametrize(
    "body",
    [
        {"role": "system", "content": ""},
        {"role": "user", "content": ""},
        {"role": "tool", "content": "", "tool_call_id": "call_1"},
        {"role": "assistant", "content": ""},  # no tool_calls: nothing to carry
    ],
)
def test_blank_content_is_refused(auth_client, user, body):
    session = ChatSessionFactory(user=user)
    _assert_validation_error(_post_message(auth_client, session, body), "content")
    assert session.messages.count() == 0


def test_blank_content_is_stored_for_an_assistant_message_calling_tools(auth_client, user):
    session = ChatSessionFactory(user=user)
    response = _post_message(
        auth_client, session, {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]}
    )
    assert response.status_code == 201, response.content
    assert response.json()["content"] == ""
    assert response.json()["tool_calls"] == [TOOL_CALL]


@pytest.mark.parametrize(
    "component",
    [
        "SessionCreateInput",
        "PatchedSessionUpdateInput",
        "SystemMessageInput",
        "UserMessageInput",
        "AssistantTextMessageInput",
        "AssistantToolCallsMessageInput",
        "ToolMessageInput",
        "ToolCall",
        "ToolCallFunction",
        "ReplyInput",
        "ReplyStreamInput",
    ],
)
def test_schema_says_input_objects_take_no_unknown_property(components, component):
    assert components[component]["additionalProperties"] is False


def test_unknown_property_is_rejected(auth_client, user):
    session = ChatSessionFactory(user=user)
    response = auth_client.post(
        f"{SESSIONS}{session.pk}/messages/",
        {"": None, "role": "user", "content": "hi"},
        format="json",
    )
    _assert_validation_error(response, "")


# 4. A whitespace-only search (found reviewing class 1: the same lenient path). `search` was
# trimmed, so "  " became blank and a 400, though the schema (minLength 1) calls it valid.
def test_whitespace_search_is_a_search_for_whitespace(auth_client, user):
    ChatSessionFactory(user=user, title="Trip  to Lisbon")
    ChatSessionFactory(user=user, title="Groceries")
    response = auth_client.get(SESSIONS, {"search": "  "})
    assert response.status_code == 200
    assert [s["title"] for s in response.json()["results"]] == ["Trip  to Lisbon"]


# 5. The role rules of a message body (reviewing the per-role schema; each row is a body one
# role's schema refuses, so the fuzzer's negative data expects a 400).
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "user", "content": "hi", "tool_calls": [TOOL_CALL]}, "tool_calls"),
        ({"role": "tool", "content": "42"}, "tool_call_id"),
        ({"role": "user", "content": "hi", "tool_call_id": "call_1"}, "tool_call_id"),
        ({"role": "assistant", "content": "x", "tool_calls": []}, "tool_calls"),
        (
            {"role": "assistant", "content": "x", "tool_calls": [{**TOOL_CALL, "extra": 1}]},
            "tool_calls",
        ),
    ],
)
def test_a_body_outside_its_roles_schema_is_refused(auth_client, user, body, field):
    session = ChatSessionFactory(user=user)
    _assert_validation_error(_post_message(auth_client, session, body), field)


# 6. Repeated tool-call ids: the one message rule JSON Schema cannot express (the schema's
# description says it; the contract test gives positive cases distinct ids).
def test_repeated_tool_call_ids_are_refused(auth_client, user):
    session = ChatSessionFactory(user=user)
    body = {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL, TOOL_CALL]}
    _assert_validation_error(_post_message(auth_client, session, body), "tool_calls")


# 7. No body at all for a message (schemathesis, positive_data_acceptance): documented as a
# oneOf per role, the request body lost `required: true` and an empty POST looked valid.
def test_schema_requires_a_message_body_and_the_api_refuses_none(auth_client, user):
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/sessions/{session_id}/messages/"]["post"]
    assert operation["requestBody"]["required"] is True
    session = ChatSessionFactory(user=user)
    _assert_validation_error(auth_client.post(f"{SESSIONS}{session.pk}/messages/"), "role")


# 8. An integral float for an integer (schemathesis, positive_data_acceptance on reply):
# JSON Schema calls `5.0` an integer; StrictIntegerField refused it as a float.
def test_integral_float_is_an_integer_and_a_fraction_is_not(auth_client, user):
    session = ChatSessionFactory(user=user)
    url = f"{SESSIONS}{session.pk}/reply/"
    response = auth_client.post(url, {"content": "hi", "max_output_tokens": 64.0}, format="json")
    assert response.status_code == 201, response.content
    response = auth_client.post(url, {"content": "hi", "max_output_tokens": 64.5}, format="json")
    _assert_validation_error(response, "max_output_tokens")


# 9. The streamed reply's status (schemathesis, status_code_conformance): the stream answered
# 200 where the JSON reply answers 201 for the same stored messages; now 201 for both.
def test_streamed_reply_is_201_like_the_json_one(auth_client, user):
    session = ChatSessionFactory(user=user)
    response = auth_client.post(
        f"{SESSIONS}{session.pk}/reply/stream/", {"content": "hi"}, format="json"
    )
    assert response.status_code == 201
    assert response["Content-Type"] == "text/event-stream"
    body = b"".join(response.streaming_content).decode()
    assert body.startswith("event: message.delta\n")
    assert "event: message.completed\n" in body


# 10. Empty query values on the context preview (reviewing it against class 1: it read the
# QueryDict leniently, so `?model=` was "absent" though the schema calls it invalid), and a
# whitespace model name, which the schema (minLength 1) calls valid.
@pytest.mark.parametrize("param", ["model", "max_output_tokens"])
def test_empty_context_parameter_is_rejected(auth_client, user, param):
    session = ChatSessionFactory(user=user)
    response = auth_client.get(f"{SESSIONS}{session.pk}/context/?{param}=")
    _assert_validation_error(response, param)


def test_whitespace_model_name_is_a_model_name(auth_client, user, settings):
    settings.LLM_ALLOWED_MODELS = ["*"]  # a name like any other where any name is allowed
    session = ChatSessionFactory(user=user)
    response = auth_client.get(f"{SESSIONS}{session.pk}/context/", {"model": "  "})
    assert response.status_code == 200, response.content
    assert response.json()["model"] == "  "


# 11. A reply with no content to a session with no messages (reviewing the reply schema: every
# field is optional, so `{}` is valid and must not be a 400). Nothing to reply to is a state
# conflict: 409, like an archived session; the same body succeeds once there is history.
def test_reply_to_an_empty_session_without_content_is_a_conflict(auth_client, user):
    session = ChatSessionFactory(user=user)
    response = auth_client.post(f"{SESSIONS}{session.pk}/reply/", {}, format="json")
    assert response.status_code == 409, response.content
    assert response.json()["error"]["type"] == "conflict"
    assert session.messages.count() == 0
    auth_client.post(
        f"{SESSIONS}{session.pk}/messages/", {"role": "user", "content": "hi"}, format="json"
    )
    assert auth_client.post(f"{SESSIONS}{session.pk}/reply/", {}, format="json").status_code == 201
