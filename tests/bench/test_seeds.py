"""The benchmarks' seeds write messages through conversations.bulk.copy_messages, whose columns
are the model's: a seeded message reads back as a whole Message."""

import pytest

from conversations.models import Message
from conversations.tests.factories import ChatSessionFactory


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_history_cache_bench_fills_a_session_with_whole_messages():
    from bench.history_cache import fill

    session = ChatSessionFactory()
    fill(session, 3)
    messages = list(Message.objects.filter(session=session).order_by("seq"))
    assert [(m.seq, m.role, m.token_count) for m in messages] == [
        (1, "user", 60),
        (2, "assistant", 60),
        (3, "user", 60),
    ]
    default = Message()
    assert all(
        (m.metadata, m.tool_calls, m.usage) == (default.metadata, default.tool_calls, None)
        for m in messages
    )
    session.refresh_from_db()
    assert session.message_count == 3
