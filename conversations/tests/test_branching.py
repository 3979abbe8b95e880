"""Forks and edits (conversations/branching.py) and the fork/versions endpoints."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations import branching, selectors, services
from conversations.models import ChatSession, Message, MessageVersion
from conversations.tests.factories import ChatSessionFactory, MessageFactory
from conversations.tests.test_api import assert_error

COPIED = ("role", "content", "name", "metadata", "token_count", "tool_calls", "tool_call_id")


def fork_url(session_id) -> str:
    return f"/api/v1/sessions/{session_id}/fork/"


def forks_url(session_id) -> str:
    return f"/api/v1/sessions/{session_id}/forks/"


def versions_url(session_id, seq) -> str:
    return f"/api/v1/sessions/{session_id}/messages/{seq}/versions/"


def history(session) -> list[tuple]:
    return list(
        Message.objects.filter(session=session)
        .order_by("seq")
        .values_list("id", "seq", *COPIED, "created_at")
    )


def conversation(user, n: int = 5, **session_fields) -> ChatSession:
    session = ChatSessionFactory(
        user=user,
        system_prompt="Be brief.",
        model="gpt-4o",
        metadata={"customer": "c-1"},
        **session_fields,
    )
    for i in range(1, n + 1):
        role = "user" if i % 2 else "assistant"
        MessageFactory(session=session, role=role, content=f"m{i}", metadata={"i": str(i)})
    session.refresh_from_db()
    return session


def snapshot(session) -> tuple:
    session.refresh_from_db()
    row = {
        f.attname: getattr(session, f.attname)
        for f in ChatSession._meta.concrete_fields
        if f.attname != "history_changed_at"
    }
    return row, history(session)


@pytest.mark.django_db
class TestFork:
    def test_fork_copies_exactly_messages_1_to_n_and_leaves_the_parent_unchanged(self, user):
        parent = conversation(user, 5)
        before = snapshot(parent)

        fork = branching.fork_session(session=parent, at_seq=3, title="Plan B")

        assert snapshot(parent) == before
        copies, originals = history(fork), history(parent)[:3]
        assert [row[1] for row in copies] == [1, 2, 3]
        assert [row[2:] for row in copies] == [row[2:] for row in originals]  # same content
        assert not {row[0] for row in copies} & {row[0] for row in originals}  # new ids
        fork.refresh_from_db()
        assert (fork.forked_from_id, fork.forked_at_seq, fork.user_id) == (parent.pk, 3, user.pk)
        assert fork.title == "Plan B"
        assert (fork.system_prompt, fork.model, fork.metadata) == (
            "Be brief.",
            "gpt-4o",
            {"customer": "c-1"},
        )
        assert fork.message_count == fork.last_seq == 3
        assert fork.total_tokens == sum(m.token_count for m in Message.objects.filter(session=fork))
        assert fork.last_message_at == Message.objects.get(session=parent, seq=3).created_at

    def test_a_fork_continues_its_own_gapless_seq(self, user):
        fork = branching.fork_session(session=conversation(user, 4), at_seq=2)
        message = services.append_message(session=fork, role="user", content="next")
        assert message.seq == 3

    def test_a_fork_of_a_history_with_a_deleted_message_has_no_gap(self, user):
        parent = conversation(user, 5)
        services.delete_message(message=Message.objects.get(session=parent, seq=2))
        fork = branching.fork_session(session=parent, at_seq=4)
        assert [
            (m.seq, m.content) for m in Message.objects.filter(session=fork).order_by("seq")
        ] == [
            (1, "m1"),
            (2, "m3"),
            (3, "m4"),
        ]
        fork.refresh_from_db()
        assert fork.message_count == fork.last_seq == 3

    def test_a_fork_keeps_the_pinned_messages_and_the_context_strategy(self, user):
        parent = conversation(user, 3)
        ChatSession.objects.filter(pk=parent.pk).update(context_strategy="summary")
        parent.refresh_from_db()
        Message.objects.filter(session=parent, seq=2).update(pinned=True)
        fork = branching.fork_session(session=parent, at_seq=3)
        assert fork.context_strategy == "summary"
        pinned = Message.objects.filter(session=fork, pinned=True).values_list("seq", flat=True)
        assert list(pinned) == [2]

    def test_a_fork_copies_only_the_current_answer(self, user):
        parent = conversation(user, 2)
        answer = Message.objects.get(session=parent, seq=2)
        branching.replace_answer(
            session=parent, seq=2, answer={"content": "second", "token_count": 3}
        )
        fork = branching.fork_session(session=parent, at_seq=2)
        copy = Message.objects.get(session=fork, seq=2)
        assert (copy.content, copy.versions) == ("second", 1)
        assert not MessageVersion.objects.filter(message=copy).exists()
        assert MessageVersion.objects.filter(message=answer).count() == 1

    @pytest.mark.postgres
    def test_a_fork_copies_the_messages_in_one_set_based_statement(self, user):
        parent = ChatSessionFactory(user=user)
        with connection.cursor() as cursor:
            # 2,000 messages straight into the table: the copy must not grow with them.
            cursor.execute(
                """INSERT INTO conversations_message (session_id, seq, role, content, name,
                       metadata, token_count, tool_call_id, versions, created_at)
                   SELECT %s, n, 'user', 'm' || n, '', '{}', 2, '', 1, now()
                   FROM generate_series(1, 2000) AS n""",
                [parent.pk],
            )
        ChatSession.objects.filter(pk=parent.pk).update(
            last_seq=2000, message_count=2000, total_tokens=4000
        )
        parent.refresh_from_db()

        with CaptureQueriesContext(connection) as ctx:
            fork = branching.fork_session(session=parent, at_seq=1999)

        statements = [q["sql"] for q in ctx.captured_queries]
        inserts = [s for s in statements if "INSERT INTO" in s and "conversations_message" in s]
        assert len(inserts) == 1
        assert "SELECT" in inserts[0]
        assert len(statements) <= 8  # savepoint/insert session/copy/count/refresh
        fork.refresh_from_db()
        assert (fork.message_count, fork.last_seq, fork.total_tokens) == (1999, 1999, 3998)

    def test_a_fork_at_0_holds_only_the_settings(self, user):
        fork = branching.fork_session(session=conversation(user, 3), at_seq=0)
        fork.refresh_from_db()
        assert fork.message_count == fork.last_seq == 0
        assert fork.system_prompt == "Be brief."


@pytest.mark.django_db
class TestForkApi:
    def test_it_answers_201_with_the_fork_and_lists_it_among_the_parents_forks(
        self, auth_client, user
    ):
        parent = conversation(user, 4)
        response = auth_client.post(fork_url(parent.pk), {"at_seq": 2}, format="json")
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["forked_from"] == str(parent.pk)
        assert body["forked_at_seq"] == 2
        assert body["message_count"] == 2
        assert body["title"] == parent.title
        listed = auth_client.get(forks_url(parent.pk)).json()
        assert [s["id"] for s in listed["results"]] == [body["id"]]
        assert auth_client.get(forks_url(body["id"])).json()["results"] == []
        messages = auth_client.get(f"/api/v1/sessions/{body['id']}/messages/").json()
        assert [m["content"] for m in messages["results"]] == ["m1", "m2"]

    def test_an_archived_session_may_be_forked(self, auth_client, user):
        parent = conversation(user, 2, archived=False)
        services.update_session(session=parent, archived=True)
        response = auth_client.post(fork_url(parent.pk), {"at_seq": 2}, format="json")
        assert response.status_code == 201, response.content
        assert response.json()["archived"] is False

    def test_another_users_session_is_a_404(self, auth_client, other_user):
        theirs = conversation(other_user, 2)
        assert_error(
            auth_client.post(fork_url(theirs.pk), {"at_seq": 1}, format="json"), 404, "not_found"
        )
        assert_error(auth_client.get(forks_url(theirs.pk)), 404, "not_found")
        assert not ChatSession.objects.filter(forked_from=theirs).exists()

    def test_a_seq_past_the_last_message_is_a_404(self, auth_client, user):
        parent = conversation(user, 2)
        assert_error(
            auth_client.post(fork_url(parent.pk), {"at_seq": 3}, format="json"), 404, "not_found"
        )

    @pytest.mark.parametrize("body", [{}, {"at_seq": -1}, {"at_seq": "2"}, {"at_seq": 1, "x": 1}])
    def test_a_bad_body_is_a_400(self, auth_client, user, body):
        parent = conversation(user, 2)
        assert_error(
            auth_client.post(fork_url(parent.pk), body, format="json"), 400, "validation_error"
        )

    def test_forks_of_another_users_fork_are_not_listed(self, auth_client, user, other_user):
        parent = conversation(user, 2)
        ChatSessionFactory(user=other_user, forked_from=parent, forked_at_seq=1)
        assert auth_client.get(forks_url(parent.pk)).json()["results"] == []

    def test_deleting_the_parent_keeps_the_fork_and_clears_its_link(self, auth_client, user):
        parent = conversation(user, 2)
        fork = branching.fork_session(session=parent, at_seq=2)
        services.delete_session(session=parent)
        fork.refresh_from_db()
        assert (fork.forked_from_id, fork.forked_at_seq, fork.message_count) == (None, 2, 2)


@pytest.mark.django_db
class TestEdit:
    def test_editing_message_k_gives_a_new_session_of_1_to_k_minus_1_plus_the_edit(self, user):
        parent = conversation(user, 5)
        before = snapshot(parent)

        fork, message = branching.edit_message(
            session=parent, message=Message.objects.get(session=parent, seq=3), content="m3, edited"
        )

        assert snapshot(parent) == before
        rows = Message.objects.filter(session=fork).order_by("seq")
        assert [(m.seq, m.role, m.content) for m in rows] == [
            (1, "user", "m1"),
            (2, "assistant", "m2"),
            (3, "user", "m3, edited"),
        ]
        assert message == rows[2]
        assert message.metadata == {"i": "3"}  # the original's, unless the edit sends its own
        fork.refresh_from_db()
        assert (fork.forked_from_id, fork.forked_at_seq, fork.message_count) == (parent.pk, 2, 3)

    def test_editing_the_first_message_forks_before_it(self, user):
        parent = conversation(user, 3)
        fork, _ = branching.edit_message(
            session=parent,
            message=Message.objects.get(session=parent, seq=1),
            content="new start",
            metadata={},
        )
        assert list(Message.objects.filter(session=fork).values_list("content", "metadata")) == [
            ("new start", {})
        ]

    def test_only_a_user_message_can_be_edited(self, user):
        parent = conversation(user, 3)
        with pytest.raises(Exception) as raised:
            branching.edit_message(
                session=parent, message=Message.objects.get(session=parent, seq=2), content="x"
            )
        assert raised.value.status_code == 409
        assert "assistant" in raised.value.message
        assert ChatSession.objects.filter(user=user).count() == 1

    def test_an_archived_session_refuses_an_edit(self, user):
        parent = conversation(user, 3, archived=False)
        services.update_session(session=parent, archived=True)
        with pytest.raises(Exception) as raised:
            branching.edit_message(
                session=parent, message=Message.objects.get(session=parent, seq=1), content="x"
            )
        assert raised.value.status_code == 409
        assert ChatSession.objects.filter(user=user).count() == 1


@pytest.mark.django_db
class TestVersionsApi:
    def test_a_message_never_regenerated_has_one_version_itself(self, auth_client, user):
        parent = conversation(user, 2)
        body = auth_client.get(versions_url(parent.pk, 2)).json()
        assert [(v["number"], v["current"], v["content"]) for v in body["results"]] == [
            (1, True, "m2")
        ]
        assert body["has_more"] is False

    def test_versions_list_the_replaced_answers_then_the_current_one_in_pages(
        self, auth_client, user
    ):
        parent = conversation(user, 2)
        for text in ("second", "third"):
            branching.replace_answer(
                session=parent, seq=2, answer={"content": text, "token_count": 1}
            )
        first = auth_client.get(versions_url(parent.pk, 2), {"limit": 2}).json()
        assert [(v["number"], v["current"], v["content"]) for v in first["results"]] == [
            (1, False, "m2"),
            (2, False, "second"),
        ]
        assert first["has_more"] is True
        rest = auth_client.get(first["next"]).json()
        assert [(v["number"], v["current"], v["content"]) for v in rest["results"]] == [
            (3, True, "third")
        ]
        assert rest["has_more"] is False
        message = auth_client.get(f"/api/v1/sessions/{parent.pk}/messages/").json()["results"][1]
        assert message["versions"] == 3

    def test_another_users_message_or_a_missing_seq_is_a_404(self, auth_client, user, other_user):
        theirs = conversation(other_user, 2)
        assert_error(auth_client.get(versions_url(theirs.pk, 2)), 404, "not_found")
        mine = conversation(user, 2)
        assert_error(auth_client.get(versions_url(mine.pk, 3)), 404, "not_found")

    def test_replacing_an_answer_moves_the_sessions_tokens_and_history_stamp(self, user):
        parent = conversation(user, 2)
        stamp, tokens = parent.history_changed_at, parent.total_tokens
        old = Message.objects.get(session=parent, seq=2).token_count
        branching.replace_answer(session=parent, seq=2, answer={"content": "x", "token_count": 50})
        parent.refresh_from_db()
        assert parent.total_tokens == tokens - old + 50
        assert parent.history_changed_at != stamp
        page = selectors.list_messages(session=parent, limit=5)
        assert page.items[1].content == "x"  # not a stale cached tail


@pytest.mark.django_db
class TestVersionsGoWithTheirMessage:
    def test_deleting_a_regenerated_message_deletes_its_versions(self, user):
        parent = conversation(user, 2)
        branching.replace_answer(session=parent, seq=2, answer={"content": "b", "token_count": 1})
        services.delete_message(message=Message.objects.get(session=parent, seq=2))
        assert not MessageVersion.objects.exists()

    def test_deleting_a_session_deletes_versions_without_loading_its_messages(self, user):
        parent = conversation(user, 2)
        branching.replace_answer(session=parent, seq=2, answer={"content": "b", "token_count": 1})
        with CaptureQueriesContext(connection) as ctx:
            services.delete_session(session=parent)
        reads = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith("SELECT")]
        assert not [sql for sql in reads if "conversations_message" in sql.split("FROM")[1]]
        assert not MessageVersion.objects.exists()
        assert not Message.objects.exists()
