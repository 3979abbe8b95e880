"""fetch_instance returns what the ORM's .get() returns, and fetch_values what .values_list()
returns, on SQLite and on PostgreSQL."""

import uuid

import pytest
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext

from chatengine.db import Read, fetch_instance, fetch_instances, fetch_values
from conversations.models import ChatSession, Message
from conversations.tests.factories import ChatSessionFactory, MessageFactory

pytestmark = pytest.mark.django_db


def columns(instance) -> list:
    return [getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields]


def test_the_instance_equals_the_orms_in_every_column():
    session = ChatSessionFactory(metadata={"k": "é"}, title="t")
    MessageFactory(session=session)  # moves last_message_at and the counters
    ChatSession.objects.filter(pk=session.pk).update(archived=True)
    got = fetch_instance(ChatSession, where=("id", "user_id"), params=[session.pk, session.user_id])
    expected = ChatSession.objects.get(pk=session.pk)
    assert columns(got) == columns(expected)
    assert got._state.adding is False
    assert got._state.db == expected._state.db


def test_json_columns_are_decoded():
    message = MessageFactory(metadata={"a": "b"}, usage={"prompt_tokens": 1})
    got = fetch_instance(Message, where=("id",), params=[message.pk])
    assert columns(got) == columns(Message.objects.get(pk=message.pk))
    assert got.metadata == {"a": "b"}
    assert got.usage == {"prompt_tokens": 1}


def test_no_match_is_none():
    session = ChatSessionFactory()
    assert fetch_instance(ChatSession, where=("id",), params=[uuid.uuid4()]) is None
    other_user = session.user_id + 1000
    assert (
        fetch_instance(ChatSession, where=("id", "user_id"), params=[session.pk, other_user])
        is None
    )


def test_more_than_one_match_is_an_error_as_with_get():
    session = ChatSessionFactory()
    ChatSessionFactory(user=session.user)
    with pytest.raises(ChatSession.MultipleObjectsReturned):
        fetch_instance(ChatSession, where=("user_id",), params=[session.user_id])


def test_a_list_comes_back_in_order_as_the_orm_returns_it():
    session = ChatSessionFactory()
    for role in ("system", "user", "system", "assistant", "system"):
        MessageFactory(session=session, role=role, content=f"{role} text")
    MessageFactory(role="system")  # another session's

    got = fetch_instances(
        Message, where=("session_id", "role"), params=[session.pk, "system"], order_by=("seq",)
    )
    expected = Message.objects.filter(session=session, role="system").order_by("seq")
    assert [columns(m) for m in got] == [columns(m) for m in expected]
    assert [m.seq for m in got] == [1, 3, 5]


def test_an_empty_list_when_nothing_matches():
    session = ChatSessionFactory()
    assert (
        fetch_instances(
            Message, where=("session_id", "role"), params=[session.pk, "system"], order_by=("seq",)
        )
        == []
    )


def test_lookups_descending_order_and_limit_match_the_orm():
    session = ChatSessionFactory()
    for i in range(8):
        MessageFactory(session=session, content=f"m{i}")

    got = fetch_instances(
        Message,
        where=("session_id", "seq__gt", "seq__lte"),
        params=[session.pk, 2, 7],
        order_by=("-seq",),
        limit=3,
    )
    expected = Message.objects.filter(session=session, seq__gt=2, seq__lte=7).order_by("-seq")[:3]
    assert [columns(m) for m in got] == [columns(m) for m in expected]
    assert [m.seq for m in got] == [7, 6, 5]
    for lookup, bound, seqs in [("seq__lt", 3, [1, 2]), ("seq__gte", 7, [7, 8])]:
        rows = fetch_instances(
            Message, where=("session_id", lookup), params=[session.pk, bound], order_by=("seq",)
        )
        assert [m.seq for m in rows] == seqs


COLUMNS = ("seq", "role", "content", "tool_calls", "token_count")


def test_values_equal_the_orms_values_list_with_json_decoded():
    session = ChatSessionFactory()
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    MessageFactory(session=session, role="assistant", content="", tool_calls=calls)
    MessageFactory(session=session, content="é")
    (got,) = fetch_values(
        Message,
        columns=COLUMNS,
        reads=[Read(where=("session_id",), params=[session.pk], order_by=("seq",))],
    )
    expected = Message.objects.filter(session=session).order_by("seq").values_list(*COLUMNS)
    assert got == list(expected)
    assert got[0][3] == calls


def test_several_reads_come_back_each_in_its_own_order_in_one_query():
    session = ChatSessionFactory()
    for role in ("system", "user", "system", "assistant", "user", "assistant"):
        MessageFactory(session=session, role=role)
    MessageFactory(role="system")  # another session's
    newest = Read(where=("session_id",), params=[session.pk], order_by=("-seq",), limit=3)
    system = Read(where=("session_id", "role"), params=[session.pk, "system"], order_by=("seq",))
    older = Read(
        where=("session_id", "seq__lt"), params=[session.pk, 3], order_by=("-seq",), limit=5
    )
    with CaptureQueriesContext(connection) as queries:
        got = fetch_values(Message, columns=("seq", "role"), reads=[newest, system, older])
    assert len(queries.captured_queries) == 1
    assert got == [
        [(6, "assistant"), (5, "user"), (4, "assistant")],
        [(1, "system"), (3, "system")],
        [(2, "user"), (1, "system")],
    ]


def test_a_tuple_in_where_is_one_condition_any_of_whose_entries_may_hold():
    session = ChatSessionFactory()
    MessageFactory(session=session, role="system")
    MessageFactory(session=session, role="user")
    MessageFactory(session=session, role="user", pinned=True)
    MessageFactory(session=session, role="assistant")
    MessageFactory(role="system", pinned=True)  # another session's: the AND still holds
    (got,) = fetch_values(
        Message,
        columns=("seq", "role"),
        reads=[
            Read(
                where=("session_id", ("role", "pinned")),
                params=[session.pk, "system", True],
                order_by=("seq",),
            )
        ],
    )
    expected = (
        Message.objects.filter(session=session)
        .filter(Q(role="system") | Q(pinned=True))
        .order_by("seq")
        .values_list("seq", "role")
    )
    assert got == list(expected) == [(1, "system"), (3, "user")]


def test_a_read_run_more_than_five_times_on_a_connection_is_prepared_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's (DB_PREPARED_STATEMENTS)")
    session = ChatSessionFactory()
    MessageFactory(session=session, content="a")
    read = Read(where=("session_id",), params=[session.pk], order_by=("-seq",), limit=10)

    def prepared() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                ['%FROM "conversations_message" WHERE "session_id" = $1%'],
            )
            return cursor.fetchone()[0]

    assert prepared() == 0
    for _ in range(5):
        (rows,) = fetch_values(Message, columns=("seq", "content"), reads=[read])
    assert rows == [(1, "a")]
    assert prepared() == 0  # psycopg's prepare_threshold: prepared from the sixth run
    fetch_values(Message, columns=("seq", "content"), reads=[read])
    assert prepared() == 1
