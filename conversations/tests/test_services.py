import threading

import pytest
from django.db import close_old_connections, connection
from django.test.utils import CaptureQueriesContext

from chatengine.exceptions import Conflict
from conversations import cache as history_cache
from conversations import services
from conversations.models import ChatSession, IdempotencyKey, Message
from conversations.tests.factories import ChatSessionFactory, MessageFactory, UserFactory


@pytest.mark.django_db
class TestCreateSession:
    def test_it_creates_an_empty_session_owned_by_the_user(self):
        user = UserFactory()
        session = services.create_session(
            user=user, title="Trip", system_prompt="Be brief.", model="gpt-4o", metadata={"k": "v"}
        )
        session.refresh_from_db()
        assert session.user == user
        assert (session.title, session.system_prompt, session.model) == (
            "Trip",
            "Be brief.",
            "gpt-4o",
        )
        assert session.metadata == {"k": "v"}
        assert session.message_count == 0
        assert session.total_tokens == 0
        assert session.last_message_at is None
        assert session.archived is False

    def test_it_defaults_metadata_to_an_empty_object(self):
        session = services.create_session(user=UserFactory())
        assert session.metadata == {}


@pytest.fixture(params=["single_statement", "portable"])
def append_path(request, monkeypatch):
    """Run an append test on both implementations: on PostgreSQL the single-statement one is
    what runs by default, the portable ORM one is what SQLite (and any other database) gets,
    and what PostgreSQL runs too once its entry is taken out. The single statement exists
    only on PostgreSQL: elsewhere that variant is skipped, never run as the portable one."""
    if request.param == "single_statement":
        if connection.vendor not in services.APPEND_ROW_BY_VENDOR:
            pytest.skip(f"the single-statement append is PostgreSQL's, not {connection.vendor}'s")
    else:
        monkeypatch.delitem(services.APPEND_ROW_BY_VENDOR, connection.vendor, raising=False)
    return request.param


@pytest.mark.django_db
@pytest.mark.usefixtures("append_path")
class TestAppendMessage:
    def test_it_assigns_seq_from_one_and_updates_counters(self):
        session = ChatSessionFactory()
        first = services.append_message(session=session, role="user", content="hi", token_count=5)
        second = services.append_message(
            session=session, role="assistant", content="hello", token_count=7
        )
        session.refresh_from_db()
        assert (first.seq, second.seq) == (1, 2)
        assert session.message_count == 2
        assert session.total_tokens == 12
        assert session.last_message_at == second.created_at

    def test_it_keeps_the_callers_session_instance_in_step(self):
        session = ChatSessionFactory()
        services.append_message(session=session, role="user", content="hi", token_count=3)
        assert session.message_count == 1
        assert session.total_tokens == 3

    def test_seq_is_not_reused_after_a_message_is_deleted(self):
        session = ChatSessionFactory()
        MessageFactory(session=session)
        last = MessageFactory(session=session)
        last.delete()
        again = MessageFactory(session=session)
        assert again.seq == 3

    def test_an_archived_session_refuses_new_messages_and_stores_nothing(self):
        session = ChatSessionFactory(archived=True)
        with pytest.raises(Conflict):
            services.append_message(session=session, role="user", content="hi")
        assert Message.objects.filter(session=session).count() == 0
        session.refresh_from_db()
        assert session.message_count == 0

    def test_the_returned_message_is_the_stored_row(self):
        session = ChatSessionFactory()
        message = services.append_message(
            session=session,
            role="assistant",
            content="  é ✓\n",
            name="bot",
            metadata={"k": "v"},
            tool_calls=[
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}
            ],
            model="gpt-4o-mini",
            usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            finish_reason="stop",
            latency_ms=12,
            context={"first_seq": None},
        )
        stored = Message.objects.get(pk=message.pk)
        columns = [f.attname for f in Message._meta.concrete_fields]
        assert [getattr(message, c) for c in columns] == [getattr(stored, c) for c in columns]
        assert message._state.adding is False
        session.refresh_from_db()
        assert (session.last_message_at, session.total_tokens) == (
            message.created_at,
            message.token_count,
        )

    def test_an_unknown_field_is_a_type_error_and_stores_nothing(self):
        # On every database: the single statement must not drop what it has no column for.
        session = ChatSessionFactory()
        with pytest.raises(TypeError):
            services.append_message(session=session, role="user", content="hi", colour="red")
        assert not Message.objects.filter(session=session).exists()

    def test_a_deleted_session_is_not_found(self):
        session = ChatSessionFactory()
        ChatSession.objects.filter(pk=session.pk).delete()
        with pytest.raises(ChatSession.DoesNotExist):
            services.append_message(session=session, role="user", content="hi")
        assert not Message.objects.filter(session_id=session.pk).exists()

    def test_seq_is_per_session(self):
        a, b = ChatSessionFactory(), ChatSessionFactory()
        MessageFactory(session=a)
        MessageFactory(session=a)
        assert MessageFactory(session=b).seq == 1


def _session_with_messages(*token_counts: int) -> ChatSession:
    session = ChatSessionFactory()
    for i, count in enumerate(token_counts):
        services.append_message(session=session, role="user", content=f"m{i}", token_count=count)
    session.refresh_from_db()
    return session


@pytest.mark.django_db
class TestDeleteMessage:
    def test_it_takes_the_message_out_of_the_counters_and_keeps_last_seq(self):
        session = _session_with_messages(5, 7, 11)
        updated_at = session.updated_at

        services.delete_message(message=Message.objects.get(session=session, seq=2))

        session.refresh_from_db()
        assert list(
            Message.objects.filter(session=session).order_by("seq").values_list("seq", flat=True)
        ) == [
            1,
            3,
        ]
        assert (session.message_count, session.total_tokens, session.last_seq) == (2, 16, 3)
        assert session.updated_at == updated_at  # not activity: list order and prune stay

    def test_the_next_append_never_reuses_the_deleted_seq(self):
        session = _session_with_messages(1, 1, 1)
        services.delete_message(message=Message.objects.get(session=session, seq=3))
        again = services.append_message(session=session, role="user", content="x")
        assert again.seq == 4
        session.refresh_from_db()
        assert (session.message_count, session.last_seq) == (3, 4)

    def test_it_moves_the_stamp_a_cached_tail_is_checked_against(self):
        session = _session_with_messages(1, 1)
        before = history_cache.session_stamp(session)
        services.delete_message(message=Message.objects.get(session=session, seq=2))
        session.refresh_from_db()
        assert history_cache.session_stamp(session) != before

    def test_deleting_a_message_already_gone_changes_nothing(self):
        session = _session_with_messages(3, 4)
        message = Message.objects.get(session=session, seq=1)
        services.delete_message(message=message)
        services.delete_message(message=message)
        session.refresh_from_db()
        assert (session.message_count, session.total_tokens) == (1, 4)

    def test_any_message_delete_keeps_the_counters_of_every_session_it_touches(self):
        # The admin, a shell or a queryset: every path goes through the same delete.
        a = _session_with_messages(1, 2, 3)
        b = _session_with_messages(10, 20)
        Message.objects.filter(session__in=[a, b], seq__gte=2).delete()
        Message.objects.get(session=a, seq=1).delete()
        a.refresh_from_db()
        b.refresh_from_db()
        assert (a.message_count, a.total_tokens, a.last_seq) == (0, 0, 3)
        assert (b.message_count, b.total_tokens, b.last_seq) == (1, 10, 2)


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgresql_appends_with_one_statement():
    # What the fixture's "single_statement" variant promises it runs.
    session = ChatSessionFactory()
    with CaptureQueriesContext(connection) as queries:
        services.append_message(session=session, role="user", content="hi", token_count=1)
    (statement,) = [q["sql"] for q in queries.captured_queries]
    assert "FOR UPDATE" in statement
    assert "INSERT INTO" in statement


@pytest.mark.django_db
class TestDeleteSession:
    def test_it_deletes_the_messages_without_loading_them(self):
        session = _session_with_messages(1, 2, 3)
        with CaptureQueriesContext(connection) as queries:
            services.delete_session(session=session)
        table = Message._meta.db_table
        reads = [
            q["sql"]
            for q in queries.captured_queries
            if q["sql"].startswith("SELECT") and table in q["sql"]
        ]
        assert reads == []
        assert not Message.objects.filter(session_id=session.pk).exists()
        assert not ChatSession.objects.filter(pk=session.pk).exists()

    def test_delete_sessions_counts_sessions_and_messages_not_the_keys_that_go_too(self):
        a = _session_with_messages(1, 2)
        b = _session_with_messages(3)
        IdempotencyKey.objects.create(user=a.user, key="k", fingerprint="f", session=a)
        deleted = services.delete_sessions(sessions=ChatSession.objects.filter(pk__in=[a.pk, b.pk]))
        assert deleted == (2, 3)
        assert not IdempotencyKey.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("append_path")
def test_append_assigns_gapless_seq_under_concurrency():
    """20 threads, each on its own PostgreSQL connection, append to one session at once."""
    session = ChatSessionFactory()
    workers = 20
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def append(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            services.append_message(
                session=ChatSession.objects.get(pk=session.pk),
                role="user",
                content=f"m{i}",
                token_count=1,
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=append, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    seqs = sorted(Message.objects.filter(session=session).values_list("seq", flat=True))
    assert seqs == list(range(1, workers + 1))
    session.refresh_from_db()
    assert session.message_count == workers
    assert session.total_tokens == workers
    assert session.last_seq == workers


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("append_path")
def test_an_append_that_waited_for_the_lock_is_not_dated_before_the_write_it_waited_for():
    """The message's time is taken once the session row is locked, not before waiting."""
    import psycopg

    session = ChatSessionFactory()
    MessageFactory(session=session)
    db = connection.settings_dict

    def connect(**options) -> psycopg.Connection:
        return psycopg.connect(
            host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"], **options
        )

    # The watcher in autocommit: inside one transaction pg_stat_activity is a frozen snapshot.
    other, watcher = connect(), connect(autocommit=True)
    table = ChatSession._meta.db_table
    other.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE", [session.pk])
    appended: list = []

    def append() -> None:
        try:
            appended.append(
                services.append_message(
                    session=ChatSession.objects.get(pk=session.pk),
                    role="user",
                    content="waited",
                    token_count=1,
                )
            )
        finally:
            connection.close()

    thread = threading.Thread(target=append)
    thread.start()
    try:
        for _ in range(500):  # until the append waits for the row lock
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = %s AND wait_event_type = 'Lock'",
                [db["NAME"]],
            ).fetchone()[0]
            if waiting:
                break
            threading.Event().wait(0.01)
        assert waiting, "the append never waited for the lock"
        # What the write holding the lock does to the row: activity, later than the waiter
        # began.
        stamp = other.execute(
            f"UPDATE {table} SET last_message_at = clock_timestamp(), "
            "updated_at = clock_timestamp() WHERE id = %s RETURNING last_message_at",
            [session.pk],
        ).fetchone()[0]
        other.commit()
    finally:
        other.close()
        watcher.close()
        thread.join(timeout=30)

    (message,) = appended
    session.refresh_from_db()
    assert message.created_at >= stamp
    assert session.last_message_at == message.created_at
    assert session.updated_at >= stamp
