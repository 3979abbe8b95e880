"""Writes of usage: a call's ledger row and the totals it moves, in the caller's transaction."""

from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounting import prices, selectors
from accounting.models import CallKind, DailyUsage, SessionUsage, UsageRecord
from chatengine.exceptions import QuotaExceeded
from llm.types import Usage


def record_usage(
    *,
    user_id: int,
    session_id,
    kind: CallKind,
    model: str,
    usage: Usage | None,
    message_id: int | None = None,
    at: datetime | None = None,
) -> UsageRecord | None:
    """Store one call's usage and add it to the session's (if any) and the user's day totals.

    Joins the caller's transaction (a reply stores its message and this together), else
    runs in its own. A call without reported usage records nothing.
    """
    if usage is None:
        return None
    at = at or timezone.now()
    input_tokens, output_tokens = usage.prompt_tokens, usage.completion_tokens
    cost = prices.cost_of(model=model, input_tokens=input_tokens, output_tokens=output_tokens)
    with transaction.atomic(savepoint=False):
        record = UsageRecord.objects.create(
            user_id=user_id,
            session_id=session_id,
            message_id=message_id,
            kind=kind,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
            created_at=at,
        )
        amounts = [1, input_tokens, output_tokens, cost or 0, 0 if cost is not None else 1]
        if session_id is not None:
            _add(SessionUsage, key={"session_id": session_id}, amounts=amounts)
        _add(DailyUsage, key={"user_id": user_id, "day": at.date()}, amounts=amounts)
    return record


_COUNTERS = ("calls", "input_tokens", "output_tokens", "cost", "unpriced_calls")


def _add(model, *, key: dict, amounts: list) -> None:
    """Add `amounts` to the row at `key`, creating it: one INSERT ... ON CONFLICT statement
    (PostgreSQL and SQLite), so concurrent calls add up and never lose one another's."""
    table = connection.ops.quote_name(model._meta.db_table)
    fields = [model._meta.get_field(name) for name in (*key, *_COUNTERS)]
    values = [
        field.get_db_prep_value(value, connection)
        for field, value in zip(fields, [*key.values(), *amounts], strict=True)
    ]
    columns = [field.column for field in fields]
    keys = columns[: len(key)]
    increments = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in _COUNTERS)
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {increments}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)


def check_quota(*, user_id: int) -> None:
    """Raise QuotaExceeded (429) when the user's tokens this month reach the quota."""
    limit = settings.CHATENGINE_MONTHLY_TOKEN_QUOTA
    if not limit:
        return
    status = selectors.quota_status(user_id=user_id)
    if status.used >= limit:
        wait = max(1, int((status.resets_at - timezone.now()).total_seconds()))
        raise QuotaExceeded(
            f"The monthly token quota ({limit} tokens) is used up; it resets at "
            f"{status.resets_at.isoformat()}.",
            details={
                "limit": limit,
                "used": status.used,
                "resets_at": status.resets_at.isoformat(),
            },
            headers={"Retry-After": str(wait)},
        )
