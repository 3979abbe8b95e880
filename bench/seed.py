"""Fast bulk seeding for benchmarks: COPY into PostgreSQL, counters kept consistent."""

import uuid

import psycopg
from django.conf import settings

# ~300 characters: about 70 tokens, a realistic chat turn.
TURN = (
    "Lisbon's trams climb the hills of Alfama and Graça; line 28 passes the cathedral, the "
    "Miradouro de Santa Luzia and the castle gate. Go early, before the queues, or walk down "
    "from the castle through the lanes. Pastéis de nata are best warm, with cinnamon. "
)


SYSTEM_PROMPT = "You are a concise travel guide."


def connect() -> psycopg.Connection:
    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"]
    )


def seed_session(
    *, user_id: int, title: str, messages: int, token_count: int = 70, content: str = TURN
) -> str:
    """Create one session with `messages` alternating user/assistant turns; returns its id."""
    session_id = str(uuid.uuid4())
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO conversations_chatsession (id, user_id, title, system_prompt, model, "
            "metadata, archived, message_count, total_tokens, last_message_at, last_seq, "
            "created_at, updated_at) VALUES (%s, %s, %s, %s, '', "
            "'{}', false, %s, %s, now(), %s, now(), now())",
            [session_id, user_id, title, SYSTEM_PROMPT, messages, messages * token_count, messages],
        )
        with cur.copy(
            "COPY conversations_message (session_id, seq, role, content, name, metadata, "
            "token_count, tool_call_id, created_at) FROM STDIN"
        ) as copy:
            for seq in range(1, messages + 1):
                role = "user" if seq % 2 else "assistant"
                copy.write_row((session_id, seq, role, content, "", "{}", token_count, "", "now"))
        conn.commit()
    return session_id
