import json
import uuid

import pytest

from conversations.models import ChatSession, Message
from conversations.tests.factories import ChatSessionFactory, MessageFactory

SESSIONS = "/api/v1/sessions/"


def messages_url(session_id) -> str:
    return f"{SESSIONS}{session_id}/messages/"


def assert_error(response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "details", "request_id"}
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    assert body["error"]["request_id"] == response["X-Request-ID"]
    return body["error"]


# --- Authentication -----------------------------------------------------------------------
@pytest.mark.django_db
class TestAuthentication:
    def test_every_endpoint_requires_authentication(self, api_client):
        sid = uuid.uuid4()
        for method, url in [
            ("get", SESSIONS),
            ("post", SESSIONS),
            ("get", f"{SESSIONS}{sid}/"),
            ("patch", f"{SESSIONS}{sid}/"),
            ("delete", f"{SESSIONS}{sid}/"),
            ("get", messages_url(sid)),
            ("post", messages_url(sid)),
        ]:
            response = getattr(api_client, method)(url, {}, format="json")
            assert_error(response, 401, "authentication_error")
            assert response["WWW-Authenticate"] == "Bearer"

    @pytest.mark.parametrize("scheme", ["Bearer", "Token", "bearer"])
    def test_token_is_accepted_with_bearer_or_token_scheme(self, api_client, user_token, scheme):
        api_client.credentials(HTTP_AUTHORIZATION=f"{scheme} {user_token}")
        assert api_client.get(SESSIONS).status_code == 200

    def test_a_wrong_token_is_an_authentication_error(self, api_client):
        api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-real-token")
        assert_error(api_client.get(SESSIONS), 401, "authentication_error")

    def test_session_login_works_for_the_browsable_api(self, api_client, user):
        api_client.force_login(user)
        assert api_client.get(SESSIONS).status_code == 200


# --- Sessions -----------------------------------------------------------------------------
SESSION_FIELDS = {
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
}


@pytest.mark.django_db
class TestCreateSession:
    def test_it_creates_a_session_with_all_fields(self, auth_client, user):
        response = auth_client.post(
            SESSIONS,
            {
                "title": "Trip",
                "system_prompt": "Be brief.",
                "model": "gpt-4o",
                "metadata": {"a": "b"},
            },
            format="json",
        )
        assert response.status_code == 201
        body = response.json()
        assert set(body) == SESSION_FIELDS
        assert body["title"] == "Trip"
        assert body["metadata"] == {"a": "b"}
        assert body["message_count"] == 0
        assert ChatSession.objects.get(pk=body["id"]).user == user

    def test_an_empty_body_creates_a_default_session(self, auth_client):
        response = auth_client.post(SESSIONS, {}, format="json")
        assert response.status_code == 201
        assert response.json()["title"] == ""

    @pytest.mark.parametrize(
        ("payload", "field"),
        [
            ({"title": "x" * 256}, "title"),
            ({"title": 5}, "title"),
            ({"model": ["gpt"]}, "model"),
            ({"metadata": []}, "metadata"),
            ({"metadata": {"k": 1}}, "metadata"),
            ({"surprise": True}, "surprise"),
        ],
    )
    def test_invalid_payloads_are_rejected(self, auth_client, payload, field):
        error = assert_error(
            auth_client.post(SESSIONS, payload, format="json"), 400, "validation_error"
        )
        assert field in error["details"]
        assert ChatSession.objects.count() == 0


@pytest.mark.django_db
class TestListSessions:
    def test_it_pages_the_callers_sessions_and_never_others(self, auth_client, user, other_user):
        mine = [ChatSessionFactory(user=user) for _ in range(3)]
        ChatSessionFactory(user=other_user)
        first = auth_client.get(SESSIONS, {"limit": 2}).json()
        assert len(first["results"]) == 2
        assert first["has_more"] is True
        assert first["next"].startswith("http://testserver/api/v1/sessions/?")
        second = auth_client.get(first["next"]).json()
        assert second["has_more"] is False
        assert second["next"] is None
        ids = [s["id"] for s in first["results"] + second["results"]]
        assert sorted(ids) == sorted(str(s.pk) for s in mine)

    def test_default_limit_is_20(self, auth_client, user):
        for _ in range(21):
            ChatSessionFactory(user=user)
        body = auth_client.get(SESSIONS).json()
        assert len(body["results"]) == 20
        assert body["has_more"] is True

    def test_archived_and_search_filters(self, auth_client, user):
        ChatSessionFactory(user=user, title="Old plans", archived=True)
        live = ChatSessionFactory(user=user, title="New plans")
        body = auth_client.get(SESSIONS, {"archived": "false", "search": "plans"}).json()
        assert [s["id"] for s in body["results"]] == [str(live.pk)]
        body = auth_client.get(SESSIONS, {"archived": "true"}).json()
        assert [s["title"] for s in body["results"]] == ["Old plans"]

    @pytest.mark.parametrize(
        "query", [{"limit": 0}, {"limit": 101}, {"limit": "x"}, {"cursor": "zz"}]
    )
    def test_bad_paging_values_are_validation_errors(self, auth_client, query):
        assert_error(auth_client.get(SESSIONS, query), 400, "validation_error")


@pytest.mark.django_db
class TestSessionDetail:
    def test_read(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        body = auth_client.get(f"{SESSIONS}{session.pk}/").json()
        assert body["id"] == str(session.pk)
        assert set(body) == SESSION_FIELDS

    def test_patch_updates_the_editable_fields(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        response = auth_client.patch(
            f"{SESSIONS}{session.pk}/",
            {"title": "Renamed", "archived": True, "metadata": {"x": "y"}, "model": "gpt-4o"},
            format="json",
        )
        assert response.status_code == 200
        session.refresh_from_db()
        assert (session.title, session.archived, session.metadata, session.model) == (
            "Renamed",
            True,
            {"x": "y"},
            "gpt-4o",
        )

    @pytest.mark.parametrize(
        "payload", [{"message_count": 5}, {"archived": "yes"}, {"id": str(uuid.uuid4())}]
    )
    def test_patch_rejects_read_only_unknown_or_mistyped_fields(self, auth_client, user, payload):
        session = ChatSessionFactory(user=user)
        assert_error(
            auth_client.patch(f"{SESSIONS}{session.pk}/", payload, format="json"),
            400,
            "validation_error",
        )

    def test_put_is_not_allowed(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        assert_error(
            auth_client.put(f"{SESSIONS}{session.pk}/", {}, format="json"),
            405,
            "method_not_allowed",
        )

    def test_delete_cascades_to_messages(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        MessageFactory(session=session)
        response = auth_client.delete(f"{SESSIONS}{session.pk}/")
        assert response.status_code == 204
        assert not ChatSession.objects.filter(pk=session.pk).exists()
        assert not Message.objects.filter(session_id=session.pk).exists()

    @pytest.mark.parametrize("method", ["get", "patch", "delete"])
    def test_another_users_session_is_404_like_a_missing_one(self, auth_client, other_user, method):
        theirs = ChatSessionFactory(user=other_user)
        for sid in (theirs.pk, uuid.uuid4(), "not-a-uuid"):
            response = getattr(auth_client, method)(f"{SESSIONS}{sid}/", {}, format="json")
            assert_error(response, 404, "not_found")
        theirs.refresh_from_db()
        assert theirs.title.startswith("Conversation")


# --- Messages -----------------------------------------------------------------------------
MESSAGE_FIELDS = {
    "id",
    "session",
    "seq",
    "role",
    "content",
    "name",
    "metadata",
    "token_count",
    "tool_calls",
    "tool_call_id",
    "model",
    "usage",
    "finish_reason",
    "latency_ms",
    "context",
    "versions",
    "created_at",
}


@pytest.mark.django_db
class TestAppendMessage:
    def test_it_appends_and_returns_the_message(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        response = auth_client.post(
            messages_url(session.pk),
            {"role": "user", "content": "  Hello\n", "name": "alice", "metadata": {"k": "v"}},
            format="json",
        )
        assert response.status_code == 201
        body = response.json()
        assert set(body) >= MESSAGE_FIELDS
        assert body["seq"] == 1
        assert body["session"] == str(session.pk)
        assert body["content"] == "  Hello\n"  # stored byte-for-byte, whitespace included
        session.refresh_from_db()
        assert session.message_count == 1

    @pytest.mark.parametrize("role", ["system", "user", "assistant", "tool"])
    def test_each_role_is_accepted(self, auth_client, user, role):
        session = ChatSessionFactory(user=user)
        payload = {"role": role, "content": "x"}
        if role == "tool":
            payload["tool_call_id"] = "call_1"  # a tool message answers one call
        response = auth_client.post(messages_url(session.pk), payload, format="json")
        assert response.status_code == 201, response.content

    def test_engine_fields_are_null_on_appended_messages(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        body = auth_client.post(
            messages_url(session.pk), {"role": "user", "content": "hi"}, format="json"
        ).json()
        for field in ("tool_calls", "model", "usage", "finish_reason", "latency_ms", "context"):
            assert body[field] is None
        assert body["tool_call_id"] == ""
        assert body["token_count"] > 0

    def test_a_tool_call_exchange_is_stored_and_returned(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        calls = [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Lisbon"}'},
            }
        ]
        call = auth_client.post(
            messages_url(session.pk),
            {"role": "assistant", "content": "", "tool_calls": calls},
            format="json",
        )
        assert call.status_code == 201, call.content
        assert call.json()["tool_calls"] == calls
        result = auth_client.post(
            messages_url(session.pk),
            {"role": "tool", "content": "18C", "tool_call_id": "call_1"},
            format="json",
        )
        assert result.status_code == 201, result.content
        assert result.json()["tool_call_id"] == "call_1"
        assert Message.objects.get(seq=1, session=session).tool_calls == calls

    _CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}

    @pytest.mark.parametrize(
        ("payload", "field"),
        [
            ({"role": "tool", "content": "18C"}, "tool_call_id"),
            ({"role": "tool", "content": "18C", "tool_call_id": ""}, "tool_call_id"),
            ({"role": "user", "content": "hi", "tool_call_id": "c1"}, "tool_call_id"),
            ({"role": "user", "content": "hi", "tool_calls": [_CALL]}, "tool_calls"),
            ({"role": "assistant", "content": "", "tool_calls": []}, "tool_calls"),
            ({"role": "assistant", "content": "", "tool_calls": {"id": "c1"}}, "tool_calls"),
            (
                {"role": "assistant", "content": "", "tool_calls": [{**_CALL, "type": "code"}]},
                "tool_calls",
            ),
            (
                {"role": "assistant", "content": "", "tool_calls": [{**_CALL, "extra": 1}]},
                "tool_calls",
            ),
            (
                {"role": "assistant", "content": "", "tool_calls": [{**_CALL, "id": ""}]},
                "tool_calls",
            ),
            ({"role": "assistant", "content": "", "tool_calls": [_CALL, _CALL]}, "tool_calls"),
            (
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{**_CALL, "function": {"name": "f", "arguments": {"a": 1}}}],
                },
                "tool_calls",
            ),
            (
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{**_CALL, "function": {"name": "f"}}],
                },
                "tool_calls",
            ),
            ({"role": "assistant", "content": ""}, "content"),
        ],
    )
    def test_invalid_tool_fields_are_rejected_and_nothing_is_stored(
        self, auth_client, user, payload, field
    ):
        session = ChatSessionFactory(user=user)
        error = assert_error(
            auth_client.post(messages_url(session.pk), payload, format="json"),
            400,
            "validation_error",
        )
        assert field in error["details"]
        assert Message.objects.count() == 0

    @pytest.mark.parametrize(
        ("payload", "field"),
        [
            ({"content": "hi"}, "role"),
            ({"role": "wizard", "content": "hi"}, "role"),
            ({"role": "user"}, "content"),
            ({"role": "user", "content": ""}, "content"),
            ({"role": "user", "content": 42}, "content"),
            ({"role": "user", "content": None}, "content"),
            ({"role": "user", "content": "a\x00b"}, "content"),
            ({"role": "user", "content": "\ud800"}, "content"),
            ({"role": "user", "content": "hi", "name": "n" * 65}, "name"),
            ({"role": "user", "content": "hi", "metadata": "str"}, "metadata"),
            (
                {"role": "user", "content": "hi", "metadata": {f"k{i}": "v" for i in range(17)}},
                "metadata",
            ),
            ({"role": "user", "content": "hi", "metadata": {"k" * 65: "v"}}, "metadata"),
            ({"role": "user", "content": "hi", "metadata": {"k": "v" * 513}}, "metadata"),
            ({"role": "user", "content": "hi", "metadata": {"k": {"nested": "x"}}}, "metadata"),
            ({"role": "user", "content": "hi", "seq": 9}, "seq"),
        ],
    )
    def test_invalid_messages_are_rejected_and_nothing_is_stored(
        self, auth_client, user, payload, field
    ):
        session = ChatSessionFactory(user=user)
        # json.dumps escapes a lone surrogate as \ud800, as a real client would send it.
        body = json.dumps(payload)
        error = assert_error(
            auth_client.post(messages_url(session.pk), body, content_type="application/json"),
            400,
            "validation_error",
        )
        assert field in error["details"]
        assert Message.objects.count() == 0

    def test_metadata_at_the_limits_is_accepted(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        metadata = {f"{i:0>64}": "v" * 512 for i in range(16)}
        response = auth_client.post(
            messages_url(session.pk),
            {"role": "user", "content": "x", "metadata": metadata},
            format="json",
        )
        assert response.status_code == 201
        assert response.json()["metadata"] == metadata

    def test_content_length_limit_follows_the_setting(self, settings, auth_client, user):
        session = ChatSessionFactory(user=user)
        limit = settings.CHATENGINE_MAX_MESSAGE_CHARS
        ok = auth_client.post(
            messages_url(session.pk), {"role": "user", "content": "a" * limit}, format="json"
        )
        assert ok.status_code == 201
        too_long = auth_client.post(
            messages_url(session.pk), {"role": "user", "content": "a" * (limit + 1)}, format="json"
        )
        assert_error(too_long, 400, "validation_error")

    def test_archived_session_is_a_conflict(self, auth_client, user):
        session = ChatSessionFactory(user=user, archived=True)
        response = auth_client.post(
            messages_url(session.pk), {"role": "user", "content": "x"}, format="json"
        )
        assert_error(response, 409, "conflict")
        assert Message.objects.count() == 0

    def test_another_users_session_is_404_and_unchanged(self, auth_client, other_user):
        theirs = ChatSessionFactory(user=other_user)
        response = auth_client.post(
            messages_url(theirs.pk), {"role": "user", "content": "x"}, format="json"
        )
        assert_error(response, 404, "not_found")
        assert_error(auth_client.get(messages_url(theirs.pk)), 404, "not_found")
        assert Message.objects.count() == 0


@pytest.mark.django_db
class TestHistory:
    @pytest.fixture
    def session(self, user):
        session = ChatSessionFactory(user=user)
        for i in range(5):
            MessageFactory(session=session, content=f"m{i + 1}")
        return session

    def test_default_is_ascending_by_seq(self, auth_client, session):
        body = auth_client.get(messages_url(session.pk)).json()
        assert [m["seq"] for m in body["results"]] == [1, 2, 3, 4, 5]
        assert body["has_more"] is False
        assert body["next"] is None
        assert set(body["results"][0]) >= MESSAGE_FIELDS

    def test_following_next_visits_every_message_once_while_appends_happen(
        self, auth_client, session
    ):
        seen, url, appended = [], messages_url(session.pk) + "?limit=2", 0
        while url:
            body = auth_client.get(url).json()
            seen += [m["seq"] for m in body["results"]]
            url = body["next"]
            if appended < 3:  # new messages arrive while the client is paging
                MessageFactory(session=session)
                appended += 1
        assert seen == list(range(1, 9))

    def test_desc_order_pages_newest_first(self, auth_client, session):
        seen, url = [], messages_url(session.pk) + "?order=desc&limit=2"
        while url:
            body = auth_client.get(url).json()
            seen += [m["seq"] for m in body["results"]]
            url = body["next"]
        assert seen == [5, 4, 3, 2, 1]

    def test_after_and_before(self, auth_client, session):
        body = auth_client.get(messages_url(session.pk), {"after": 1, "before": 4}).json()
        assert [m["content"] for m in body["results"]] == ["m2", "m3"]

    @pytest.mark.parametrize(
        "query",
        [
            {"limit": 0},
            {"limit": 201},
            {"limit": -1},
            {"after": -1},
            {"before": "abc"},
            {"order": "sideways"},
            {"after": 10**30},
        ],
    )
    def test_bad_paging_values_are_validation_errors(self, auth_client, session, query):
        assert_error(auth_client.get(messages_url(session.pk), query), 400, "validation_error")

    def test_limit_up_to_200_is_accepted(self, auth_client, session):
        assert auth_client.get(messages_url(session.pk), {"limit": 200}).status_code == 200
