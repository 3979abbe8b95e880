"""The LangChain peer of `make bench` builds the same context as chatengine from the same
history and budget, so the bench compares equal work (bench/langchain_peer.py)."""

import pytest

pytest.importorskip(
    "langchain_postgres", reason="bench extras: pip install -r bench/requirements.txt"
)

from bench import langchain_peer
from bench.seed import SYSTEM_PROMPT, TURN, connect
from conversations import services
from llm.services import build_context, resolve_model
from llm.tokens import REPLY_PRIMING_TOKENS, counter_for_model

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

SIZE = 30


@pytest.fixture
def langchain_conn(db):
    """A psycopg connection to the test database, as the library takes one; its table is
    dropped afterwards (Django's test teardown does not know it)."""
    conn = connect()
    yield conn
    conn.rollback()
    conn.execute(f"DROP TABLE IF EXISTS {langchain_peer.TABLE}")
    conn.commit()
    conn.close()


def test_seeding_writes_the_librarys_rows_once(langchain_conn):
    assert langchain_peer.ensure_history(langchain_conn, size=SIZE, content=TURN) is True
    assert langchain_peer.ensure_history(langchain_conn, size=SIZE, content=TURN) is False

    from langchain_postgres import PostgresChatMessageHistory

    history = PostgresChatMessageHistory(
        langchain_peer.TABLE, langchain_peer.session_id_for(SIZE), sync_connection=langchain_conn
    )
    messages = history.messages
    assert [m.type for m in messages[:3]] == ["human", "ai", "human"]
    assert len(messages) == SIZE
    assert {m.text for m in messages} == {TURN}


def test_langchain_turn_keeps_the_messages_chatengine_sends(langchain_conn, user):
    session = services.create_session(user=user, title="peer", system_prompt=SYSTEM_PROMPT)
    for seq in range(1, SIZE + 1):
        services.append_message(
            session=session, role="user" if seq % 2 else "assistant", content=TURN
        )
    langchain_peer.ensure_history(langchain_conn, size=SIZE, content=TURN)
    counter = counter_for_model(resolve_model(session=session))
    per_message = counter.count_message(role="user", content=TURN)
    # Room for the system prompt and exactly 10 turns (plus a little): a window inside the history.
    budget = (
        REPLY_PRIMING_TOKENS
        + counter.count_message(role="system", content=SYSTEM_PROMPT)
        + 10 * per_message
        + 5
    )

    engine = build_context(session, budget=budget)
    kept = langchain_peer.turn(
        langchain_conn, size=SIZE, system_prompt=SYSTEM_PROMPT, budget=budget, counter=counter
    )

    roles = {"system": "system", "human": "user", "ai": "assistant"}
    assert [(roles[m.type], m.text) for m in kept] == [(m.role, m.content) for m in engine.messages]
    assert engine.messages_included == len(kept) - 1 == 10
