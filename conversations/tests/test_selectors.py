import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chatengine.exceptions import NotFound, ValidationFailed
from conversations import selectors
from conversations.models import Message
from conversations.tests.factories import ChatSessionFactory, MessageFactory, UserFactory


@pytest.mark.django_db
class TestGetSessionForUser:
    def test_it_returns_the_users_session(self):
        session = ChatSessionFactory()
        assert (
            selectors.get_session_for_user(user=session.user, session_id=str(session.pk)) == session
        )

    @pytest.mark.parametrize("bad_id", ["nope", "123", "", str(uuid.uuid4())])
    def test_a_missing_or_malformed_id_is_not_found(self, bad_id):
        with pytest.raises(NotFound):
            selectors.get_session_for_user(user=UserFactory(), session_id=bad_id)

    def test_another_users_session_is_not_found(self):
        session = ChatSessionFactory()
        with pytest.raises(NotFound):
            selectors.get_session_for_user(user=UserFactory(), session_id=session.pk)


@pytest.mark.django_db
class TestListMessages:
    @pytest.fixture
    def session(self):
        session = ChatSessionFactory()
        for _ in range(7):
            MessageFactory(session=session)
        return session

    def test_ascending_pages_walk_every_message_once_in_order(self, session):
        seen, after = [], None
        while True:
            page = selectors.list_messages(session=session, limit=3, after=after)
            seen += [m.seq for m in page.items]
            if not page.has_more:
                assert page.next_params is None
                break
            after = int(page.next_params["after"])
        assert seen == [1, 2, 3, 4, 5, 6, 7]

    def test_descending_pages_walk_newest_first(self, session):
        seen, before = [], None
        while True:
            page = selectors.list_messages(session=session, limit=3, before=before, order="desc")
            seen += [m.seq for m in page.items]
            if not page.has_more:
                break
            before = int(page.next_params["before"])
        assert seen == [7, 6, 5, 4, 3, 2, 1]

    def test_after_and_before_bound_the_range_exclusively(self, session):
        page = selectors.list_messages(session=session, limit=50, after=2, before=6)
        assert [m.seq for m in page.items] == [3, 4, 5]
        assert page.has_more is False

    def test_a_page_that_exactly_fills_the_limit_has_no_more(self, session):
        page = selectors.list_messages(session=session, limit=7)
        assert len(page.items) == 7
        assert page.has_more is False

    def test_the_query_is_keyset_not_offset(self, session, settings):
        settings.CHATENGINE_CACHE_ENABLED = False  # the database path's SQL is under test
        with CaptureQueriesContext(connection) as ctx:
            selectors.list_messages(session=session, limit=3, after=3)
        sql = ctx.captured_queries[-1]["sql"].upper()
        assert "OFFSET" not in sql
        assert '"SEQ" >' in sql.replace("`", '"')


@pytest.mark.postgres
@pytest.mark.django_db
def test_history_reads_use_the_session_seq_index_on_postgres():
    session = ChatSessionFactory()
    MessageFactory(session=session)
    with connection.cursor() as cursor:
        # Small tables tempt the planner into a seq scan; forbid it to see which index fits.
        cursor.execute("SET LOCAL enable_seqscan = off")
        # Once autovacuum has analysed rows left by earlier tests, the planner may prefer the
        # session FK index plus a sort on a tiny table; forbid the sort too, so the plan shows
        # the index that serves ordered range reads.
        cursor.execute("SET LOCAL enable_sort = off")
        page_qs = selectors.Message.objects.filter(session=session, seq__gt=10).order_by("seq")[:51]
        plan = page_qs.explain()
    assert "message_session_seq_uniq" in plan


@pytest.mark.django_db
class TestListSessions:
    def test_it_lists_only_the_users_sessions_newest_activity_first(self):
        user = UserFactory()
        old, new = ChatSessionFactory(user=user), ChatSessionFactory(user=user)
        ChatSessionFactory()  # someone else's
        MessageFactory(session=old)  # `old` now has the newest activity
        page = selectors.list_sessions(user=user, limit=10)
        assert [s.pk for s in page.items] == [old.pk, new.pk]

    def test_cursor_pages_visit_every_session_once(self):
        user = UserFactory()
        created = {ChatSessionFactory(user=user).pk for _ in range(5)}
        seen, cursor = [], None
        while True:
            page = selectors.list_sessions(user=user, limit=2, cursor=cursor)
            seen += [s.pk for s in page.items]
            if not page.has_more:
                break
            cursor = page.next_params["cursor"]
        assert len(seen) == 5
        assert set(seen) == created

    def test_filters_by_archived_and_title_search(self):
        user = UserFactory()
        ChatSessionFactory(user=user, title="Holiday plans", archived=True)
        kept = ChatSessionFactory(user=user, title="Work plans")
        ChatSessionFactory(user=user, title="Groceries")
        page = selectors.list_sessions(user=user, limit=10, archived=False, search="PLANS")
        assert [s.pk for s in page.items] == [kept.pk]

    def test_a_forged_cursor_is_a_validation_error(self):
        with pytest.raises(ValidationFailed):
            selectors.list_sessions(user=UserFactory(), limit=10, cursor="bm90IGEgY3Vyc29y")


@pytest.mark.django_db
class TestListContextMessages:
    CALLS = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]

    @pytest.fixture
    def session(self):
        session = ChatSessionFactory()
        MessageFactory(session=session, role="system", content="rules")
        for _ in range(3):
            MessageFactory(session=session)
        MessageFactory(session=session, role="assistant", content="", tool_calls=self.CALLS)
        MessageFactory(session=session, role="tool", content="42", tool_call_id="c1")
        MessageFactory(session=session, role="user", content="hi", name="ann")
        MessageFactory(role="system")  # another session's
        return session

    def expected(self, session, seqs):
        # The adapter the builder used on Message instances: the same values, field by field.
        from llm.services import history_message

        rows = Message.objects.filter(session=session, seq__in=seqs).order_by("-seq")
        return [history_message(m) for m in rows]

    def test_rows_are_the_stored_messages_as_the_context_builder_takes_them(self, session):
        rows = selectors.list_context_messages(session=session, limit=4)
        assert rows.newest == self.expected(session, [4, 5, 6, 7])
        assert rows.newest[2].tool_calls[0].name == "f"
        assert rows.newest[1].tool_call_id == "c1"
        assert rows.newest[0].name == "ann"
        assert rows.has_more is True
        assert rows.system == self.expected(session, [1])

    def test_older_batches_continue_below_a_seq_without_the_system_messages(self, session):
        rows = selectors.list_context_messages(session=session, limit=2, before=4)
        assert [m.seq for m in rows.newest] == [3, 2]
        assert rows.has_more is True
        assert rows.system == []
        last = selectors.list_context_messages(session=session, limit=3, before=2)
        assert [m.seq for m in last.newest] == [1]
        assert last.has_more is False

    def test_a_batch_that_holds_the_whole_history_has_no_more(self, session):
        rows = selectors.list_context_messages(session=session, limit=7)
        assert [m.seq for m in rows.newest] == [7, 6, 5, 4, 3, 2, 1]
        assert rows.has_more is False
        assert [m.seq for m in rows.system] == [1]

    def test_the_first_batch_brings_the_pinned_messages_with_the_system_ones(self, session):
        Message.objects.filter(session=session, seq__in=[2, 6]).update(pinned=True)
        with CaptureQueriesContext(connection) as queries:
            rows = selectors.list_context_messages(session=session, limit=2)
        assert len(queries.captured_queries) == 1
        assert [m.seq for m in rows.newest] == [7, 6]
        assert rows.system == self.expected(session, [6, 2, 1])[::-1]
