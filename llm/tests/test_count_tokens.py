"""count_tokens, through call_command: stored counts become what llm.tokens says."""

import io

import pytest
from django.core.management import CommandError, call_command

from conversations import selectors, services
from conversations.models import ChatSession, Message
from conversations.tests.cache_events import events
from conversations.tests.factories import ChatSessionFactory, MessageFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("count_tokens", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def expected(message: Message) -> int:
    return services.count_message_tokens(
        session=message.session,
        role=message.role,
        content=message.content,
        name=message.name,
        tool_calls=message.tool_calls,
        tool_call_id=message.tool_call_id,
    )


def corrupt(session: ChatSession, *, count: int = 1, total: int = 3) -> None:
    """Stored counts as another encoding would have left them (a plain UPDATE, no cache hook)."""
    Message.objects.filter(session=session).update(token_count=count)
    ChatSession.objects.filter(pk=session.pk).update(total_tokens=total)


def token_state(session: ChatSession) -> tuple[list[int], int]:
    session.refresh_from_db()
    counts = list(
        Message.objects.filter(session=session)
        .order_by("seq")
        .values_list("token_count", flat=True)
    )
    return counts, session.total_tokens


@pytest.fixture
def sessions():
    made = []
    for n in range(3):
        session = ChatSessionFactory()
        for i in range(5):
            MessageFactory(session=session, content=f"message {i} of session {n}, " * (i + 1))
        MessageFactory(
            session=session,
            role=Message.Role.ASSISTANT,
            content="",
            tool_calls=[
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                }
            ],
        )
        made.append(session)
    return made


def assert_exact(session: ChatSession) -> None:
    counts, total = token_state(session)
    messages = Message.objects.filter(session=session).select_related("session").order_by("seq")
    assert counts == [expected(m) for m in messages]
    assert total == sum(counts)


class TestCountTokens:
    def test_counts_become_what_llm_tokens_says_and_totals_follow(self, sessions):
        for session in sessions:
            corrupt(session)

        out = run("--batch-size", "4")  # several batches per session

        for session in sessions:
            assert_exact(session)
        assert "Scanned 18 message(s); changed 18; updated 3 session(s)." in out

    def test_a_second_run_changes_nothing(self, sessions):
        corrupt(sessions[0])
        run()
        before = [token_state(s) for s in sessions]

        out = run()

        assert [token_state(s) for s in sessions] == before
        assert "changed 0; updated 0 session(s)" in out

    def test_a_drifted_total_alone_is_repaired(self, sessions):
        ChatSession.objects.filter(pk=sessions[1].pk).update(total_tokens=999_999)

        out = run()

        assert_exact(sessions[1])
        assert "changed 0; updated 1 session(s)" in out

    def test_dry_run_reports_and_changes_nothing(self, sessions):
        corrupt(sessions[0])
        corrupt(sessions[2], count=2)
        before = [token_state(s) for s in sessions]

        out = run("--dry-run", "--batch-size", "4")

        assert [token_state(s) for s in sessions] == before
        assert "Dry run: scanned 18 message(s); 12 would change, in 2 session(s)." in out

    def test_session_option_limits_the_recount(self, sessions):
        for session in sessions:
            corrupt(session)
        untouched = token_state(sessions[2])

        out = run("--session", str(sessions[0].pk), "--session", str(sessions[1].pk))

        assert_exact(sessions[0])
        assert_exact(sessions[1])
        assert token_state(sessions[2]) == untouched
        assert "Scanned 12 message(s); changed 12; updated 2 session(s)." in out

    def test_updated_at_is_not_touched(self, sessions):
        corrupt(sessions[0])
        sessions[0].refresh_from_db()
        stamp = sessions[0].updated_at

        run()

        sessions[0].refresh_from_db()
        assert sessions[0].updated_at == stamp  # a recount is not activity (prune, ordering)

    @pytest.mark.redis
    def test_cache_readers_see_the_new_counts(
        self, sessions, settings, django_capture_on_commit_callbacks
    ):
        settings.CHATENGINE_CACHE_ENABLED = True
        events.reset()
        session = sessions[0]
        corrupt(session)
        session.refresh_from_db()
        # Warm the cached tail with the stale counts, and check it is what is served.
        selectors.list_messages(session=session, limit=50)
        page = selectors.list_messages(session=session, limit=50)
        assert [m.token_count for m in page.items] == [1] * 6
        assert events()["hit"] >= 1

        with django_capture_on_commit_callbacks(execute=True):
            run()

        session.refresh_from_db()
        page = selectors.list_messages(session=session, limit=50)
        assert [m.token_count for m in page.items] == token_state(session)[0]
        assert [m.token_count for m in page.items] != [1] * 6

    def test_quiet_at_verbosity_zero(self, sessions):
        corrupt(sessions[0])
        assert run("--verbosity", "0") == ""
        assert_exact(sessions[0])

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("--session", "not-a-uuid"), "is not a session id"),
            (("--session", "00000000-0000-0000-0000-000000000000"), "no such session"),
            (("--batch-size", "0"), "--batch-size must be at least 1"),
        ],
    )
    def test_bad_arguments_are_a_clear_error(self, args, message):
        with pytest.raises(CommandError, match=message):
            run(*args)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_shown_on_a_terminal(sessions):
    corrupt(sessions[0])
    out = _Terminal()
    call_command("count_tokens", "--batch-size", "4", stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    assert "\rScanned messages: 18/18 (100%)" in text
    assert "\rScanned messages: 4/18" in text
