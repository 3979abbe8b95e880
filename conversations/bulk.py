"""Operations on many sessions at once, for the management commands: prune and seed."""

import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts import services as account_services
from chatengine.events import log_event
from conversations import services
from conversations.models import ChatSession, Message
from conversations.transfer import keep_updated_at

# --- Prune -------------------------------------------------------------------------------

PRUNE_BATCH = 500


def prunable_sessions(*, cutoff: datetime, archived_only: bool = False) -> QuerySet[ChatSession]:
    """Sessions with no activity (message or edit: `updated_at`) since `cutoff`."""
    qs = ChatSession.objects.filter(updated_at__lt=cutoff)
    if archived_only:
        qs = qs.filter(archived=True)
    return qs


@dataclass
class PruneResult:
    sessions: int = 0
    messages: int = 0
    batches: int = 0


def prune_sessions(
    *,
    older_than: timedelta,
    archived_only: bool = False,
    dry_run: bool = False,
    batch_size: int = PRUNE_BATCH,
    now: datetime | None = None,
    on_batch: Callable[[PruneResult], None] | None = None,
) -> PruneResult:
    """Delete sessions idle for longer than `older_than`, `batch_size` per transaction.

    The cutoff is fixed at the start, so a session that becomes active while the prune runs
    is spared (each batch re-checks the filter under lock) and the loop always ends.
    """
    cutoff = (now or timezone.now()) - older_than
    candidates = prunable_sessions(cutoff=cutoff, archived_only=archived_only)
    result = PruneResult()
    if dry_run:
        totals = candidates.aggregate(messages=Sum("message_count"))
        result.sessions = candidates.count()
        result.messages = totals["messages"] or 0
        return result

    last_pk = None
    while True:
        page = candidates.order_by("pk")
        if last_pk is not None:
            page = page.filter(pk__gt=last_pk)
        ids = list(page.values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        last_pk = ids[-1]
        sessions, messages = services.delete_sessions(sessions=candidates.filter(pk__in=ids))
        result.sessions += sessions
        result.messages += messages
        result.batches += 1
        if on_batch is not None:
            on_batch(result)
    log_event(
        "sessions.pruned",
        sessions=result.sessions,
        messages=result.messages,
        older_than_s=int(older_than.total_seconds()),
        archived_only=archived_only,
    )
    return result


# --- Seed --------------------------------------------------------------------------------

DEMO_USERNAME = "demo"
DEMO_TOKEN_NAME = "demo"
# Demo sessions have fixed ids (uuid5 of their slug), which is what makes seeding idempotent
# without marking the user's metadata.
_DEMO_NAMESPACE = uuid.UUID("6f1d8c52-2b0e-4f55-9a57-3c7e2b9f0d41")

_WEATHER_CALL = {
    "id": "call_demo_weather_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Porto", "unit": "celsius"}'},
}

# slug, title, system prompt, archived, messages (role, content, extra Message columns)
DEMO_SESSIONS: list[tuple[str, str, str, bool, list[tuple[str, str, dict[str, Any]]]]] = [
    (
        "lisbon",
        "Trip to Lisbon",
        "You are a concise travel guide.",
        False,
        [
            ("user", "Three things to see in Belém?", {}),
            (
                "assistant",
                "1. Jerónimos Monastery, for its Manueline cloisters.\n"
                "2. Belém Tower, on the riverbank.\n"
                "3. Pastéis de Belém, the original custard tarts since 1837.",
                {},
            ),
            ("user", "And how do I get there from Baixa?", {}),
            (
                "assistant",
                "Take tram 15E from Praça da Figueira or Praça do Comércio; about 25 minutes.",
                {},
            ),
        ],
    ),
    (
        "porto-weather",
        "Weather in Porto",
        "You are a helpful assistant. Use tools when you need live data.",
        False,
        [
            ("user", "Do I need an umbrella in Porto tomorrow?", {}),
            ("assistant", "", {"tool_calls": [_WEATHER_CALL]}),
            (
                "tool",
                '{"city": "Porto", "tomorrow": {"rain_mm": 6.5, "high_c": 17, "low_c": 11}}',
                {"tool_call_id": _WEATHER_CALL["id"], "name": "get_weather"},
            ),
            (
                "assistant",
                "Yes: about 6 mm of rain is expected tomorrow, with a high of 17 °C.",
                {},
            ),
        ],
    ),
    (
        "sql-review",
        "Reviewing a slow query",
        "You are a senior PostgreSQL engineer. Answer with short, concrete advice.",
        False,
        [
            ("user", "SELECT * FROM orders WHERE lower(email) = $1 is slow. Why?", {}),
            (
                "assistant",
                "An index on email cannot serve lower(email). Create an expression index: "
                "CREATE INDEX ON orders (lower(email));",
                {},
            ),
        ],
    ),
    (
        "flaky-test",
        "Debugging a flaky test",
        "You are a patient pair programmer.",
        True,
        [
            ("user", "My test passes alone but fails in the full suite.", {}),
            (
                "assistant",
                "Usually shared state: a module-level cache, a leaked setting or an ordering "
                "assumption. Run the suite with -p no:randomly and bisect the test order.",
                {},
            ),
            ("user", "It was a cache left warm by another test. Thanks!", {}),
            ("assistant", "Glad it's solved: clear the cache in a fixture.", {}),
        ],
    ),
]


def demo_session_id(slug: str) -> uuid.UUID:
    return uuid.uuid5(_DEMO_NAMESPACE, slug)


@dataclass
class DemoResult:
    user: AbstractBaseUser
    token: str
    user_created: bool
    password: str | None  # the password set by this run, None when left unchanged
    sessions_created: int = 0
    sessions_existing: int = 0


def seed_demo_user(*, password: str | None = None) -> DemoResult:
    """The `demo` user with an API token and the demo sessions, created once.

    Re-running creates nothing twice: the user is reused, a demo session whose (fixed) id
    exists is left alone, and the `demo` token is replaced (only a new key can be printed:
    just its digest is stored). A password is set when the user is new (generated unless
    given) or when one is given; otherwise the existing one is kept.
    """
    User = get_user_model()
    with transaction.atomic():
        user, created = User.objects.get_or_create(**{User.USERNAME_FIELD: DEMO_USERNAME})
        if created or password is not None:
            password = password if password is not None else secrets.token_urlsafe(12)
            user.set_password(password)
            user.save(update_fields=["password"])
        account_services.revoke_tokens_named(user=user, name=DEMO_TOKEN_NAME)
        _, key = account_services.create_token(user=user, name=DEMO_TOKEN_NAME)
    result = DemoResult(user=user, token=key, user_created=created, password=password)

    for slug, title, system_prompt, archived, messages in DEMO_SESSIONS:
        session_id = demo_session_id(slug)
        with transaction.atomic():
            if ChatSession.objects.filter(pk=session_id).exists():
                result.sessions_existing += 1
                continue
            session = ChatSession.objects.create(
                id=session_id, user=user, title=title, system_prompt=system_prompt
            )
            for role, content, extra in messages:
                services.append_message(session=session, role=role, content=content, **extra)
            if archived:
                # Archived last: append_message refuses archived sessions.
                services.update_session(session=session, archived=True)
        result.sessions_created += 1
    log_event(
        "demo.seeded",
        user_created=created,
        sessions_created=result.sessions_created,
    )
    return result


SEED_BATCH = 5000

_LOAD_TURNS = [
    ("user", "Can you summarise the main points of the last meeting?"),
    (
        "assistant",
        "Sure: the release moves to Thursday, QA owns the smoke tests, and the migration "
        "runs on Wednesday night.",
    ),
    ("user", "What are the risks of moving the migration?"),
    (
        "assistant",
        "Mainly lock contention on the orders table and a longer rollback window; run it in "
        "batches and keep the old column until Friday.",
    ),
]


@dataclass
class LoadResult:
    sessions: int = 0
    messages: int = 0


def seed_load_data(
    *,
    user: AbstractBaseUser,
    sessions: int,
    messages_per_session: int,
    batch_size: int = SEED_BATCH,
    now: datetime | None = None,
    on_batch: Callable[[LoadResult], None] | None = None,
) -> LoadResult:
    """Bulk-insert `sessions` sessions of `messages_per_session` alternating messages each.

    For load tests: rows go in with bulk_create, `batch_size` messages per transaction, and
    each session's counters (message_count, last_seq, last_message_at, total_tokens) are set
    from the messages inserted with it. Activity is spread over the last 180 days, one
    session every few minutes, so filters by date (export, prune) have something to select.
    token_count stays 0 (no tokenizer here); `count_tokens` fills it when it matters.
    """
    now = now or timezone.now()
    result = LoadResult()
    per_session = max(messages_per_session, 0)
    sessions_per_batch = max(1, batch_size // max(per_session, 1))
    span = timedelta(days=180)
    step = span / max(sessions, 1)
    gap = timedelta(seconds=30)

    start_index = 0
    while start_index < sessions:
        stop = min(sessions, start_index + sessions_per_batch)
        session_rows, message_rows = [], []
        for i in range(start_index, stop):
            created = now - span + step * i
            last_at = created + gap * per_session if per_session else None
            session = ChatSession(
                id=uuid.uuid4(),
                user=user,
                title=f"Load session {i + 1}",
                system_prompt="You are a helpful assistant.",
                message_count=per_session,
                last_seq=per_session,
                total_tokens=0,
                last_message_at=last_at,
                created_at=created,
                updated_at=last_at or created,
            )
            session_rows.append(session)
            for seq in range(1, per_session + 1):
                role, content = _LOAD_TURNS[(seq - 1) % len(_LOAD_TURNS)]
                message_rows.append(
                    Message(
                        session=session,
                        seq=seq,
                        role=role,
                        content=content,
                        created_at=created + gap * seq,
                    )
                )
        with transaction.atomic():
            ChatSession.objects.bulk_create(session_rows)
            ids = [row.id for row in session_rows]
            for first in range(0, len(ids), 500):  # bounded IN lists (SQLite's limit)
                keep_updated_at(  # as built above: the last message's time, else the creation's
                    ChatSession.objects.filter(pk__in=ids[first : first + 500]),
                    Coalesce("last_message_at", "created_at"),
                )
            if connection.vendor == "postgresql":
                copy_messages(message_rows)
            else:
                Message.objects.bulk_create(message_rows, batch_size=batch_size)
        result.sessions += len(session_rows)
        result.messages += len(message_rows)
        if on_batch is not None:
            on_batch(result)
        start_index = stop
    log_event("load.seeded", sessions=result.sessions, messages=result.messages)
    return result


def copy_messages(rows: Iterable[Message]) -> None:
    """COPY the rows in (PostgreSQL): several times faster than INSERTs for load data (and
    the benchmarks' seeds).

    Every column but the id, as the model declares them (bulk_create's own list): the rows
    were built by Message(), so each holds its model default.
    """
    columns = [f for f in Message._meta.concrete_fields if not f.primary_key]
    names = ", ".join(connection.ops.quote_name(f.column) for f in columns)
    with connection.cursor() as cursor:
        sql = f"COPY {connection.ops.quote_name(Message._meta.db_table)} ({names}) FROM STDIN"
        with cursor.cursor.copy(sql) as copy:
            for m in rows:
                copy.write_row(
                    [f.get_db_prep_save(getattr(m, f.attname), connection) for f in columns]
                )
