"""The LangChain peer of the context build: what a LangChain app does on every turn.

`langchain_postgres.PostgresChatMessageHistory.messages` loads the session's whole history
(its own table: one JSONB row per message), then `langchain_core.messages.trim_messages`
keeps the newest messages that fit the same token budget chatengine uses. Tokens are counted
with chatengine's own counter (tiktoken, OpenAI's chat recipe: llm/tokens.py), per message,
passed to trim_messages as a callable; nothing is memoised, as the library does not.

Optional extras (bench/requirements.txt), imported only when the section runs.
"""

import json
import uuid

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    message_to_dict,
    trim_messages,
)
from langchain_postgres import PostgresChatMessageHistory

from llm.tokens import REPLY_PRIMING_TOKENS, TokenCounter

TABLE = "bench_langchain_message_store"
_OPENAI_ROLE = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def session_id_for(size: int) -> str:
    """A fixed session id per history size, so the seeded table is kept between runs."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"chatengine-bench/langchain/{size}"))


def ensure_history(conn, *, size: int, content: str) -> bool:
    """`size` alternating human/ai messages in LangChain's table for that size's session.
    Seeds (by COPY, in the library's own row format) only when the count differs; returns
    True when it seeded."""
    PostgresChatMessageHistory.create_tables(conn, TABLE)
    sid = session_id_for(size)
    count = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE session_id = %s", [sid]).fetchone()
    if count[0] == size:
        return False
    conn.execute(f"DELETE FROM {TABLE} WHERE session_id = %s", [sid])
    rows = {
        kind: json.dumps(message_to_dict(cls(content=content)))
        for kind, cls in (("human", HumanMessage), ("ai", AIMessage))
    }
    with conn.cursor() as cur, cur.copy(f"COPY {TABLE} (session_id, message) FROM STDIN") as copy:
        for seq in range(1, size + 1):
            copy.write_row((sid, rows["human" if seq % 2 else "ai"]))
    conn.commit()
    conn.execute(f"ANALYZE {TABLE}")
    conn.commit()
    return True


def per_message_counter(counter: TokenCounter):
    """A trim_messages token counter: one message's tokens, as chatengine counts them. The
    parameter is annotated BaseMessage so trim_messages sums it over a list itself."""

    def count(message: BaseMessage) -> int:
        return counter.count_message(
            role=_OPENAI_ROLE.get(message.type, message.type), content=message.text
        )

    return count


def turn(
    conn, *, size: int, system_prompt: str, budget: int, counter: TokenCounter
) -> list[BaseMessage]:
    """One turn's context, the LangChain way: load the history, prepend the system prompt,
    trim to the budget (less the reply priming chatengine's budget also holds)."""
    history = PostgresChatMessageHistory(TABLE, session_id_for(size), sync_connection=conn)
    messages = [SystemMessage(content=system_prompt), *history.messages]
    return trim_messages(
        messages,
        max_tokens=budget - REPLY_PRIMING_TOKENS,
        token_counter=per_message_counter(counter),
        strategy="last",
        include_system=True,
        start_on="human",
    )
