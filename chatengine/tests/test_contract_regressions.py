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
#      now documented as minLength 1 (ENFORCE_NON_BLANK_FIELDS).
#   b. An unknown property (`{"": null, "role": ..., "content": ...}`): StrictInputSerializer
#      refuses it, now documented as additionalProperties: false.
@pytest.fixture(scope="module")
def components() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]


def test_schema_says_message_content_may_not_be_blank(components, auth_client, user):
    assert components["MessageCreateInput"]["properties"]["content"]["minLength"] == 1
    session = ChatSessionFactory(user=user)
    response = auth_client.post(
        f"{SESSIONS}{session.pk}/messages/", {"role": "tool", "content": ""}, format="json"
    )
    _assert_validation_error(response, "content")


@pytest.mark.parametrize(
    "component", ["SessionCreateInput", "PatchedSessionUpdateInput", "MessageCreateInput"]
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
