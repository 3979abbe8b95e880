"""Reads of usage: the caller's report and quota, scoped to one user."""

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

from django.conf import settings
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from accounting.models import DailyUsage, UsageRecord

GroupBy = Literal["day", "model", "session"]


@dataclass(frozen=True)
class UsageGroup:
    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: Decimal
    unpriced_calls: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class QuotaStatus:
    limit: int | None  # None: no quota
    used: int
    resets_at: datetime


@dataclass(frozen=True)
class UsageReport:
    since: datetime
    until: datetime
    group_by: GroupBy
    totals: UsageGroup
    groups: list[UsageGroup]
    quota: QuotaStatus


def month_bounds(moment: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month holding `moment`: (its first instant, the next month's)."""
    moment = moment.astimezone(UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return start, datetime(year, month, 1, tzinfo=UTC)


def quota_status(*, user_id: int) -> QuotaStatus:
    """Tokens (input + output) the user spent this UTC month, from the day totals."""
    start, resets_at = month_bounds(timezone.now())
    used = DailyUsage.objects.filter(user_id=user_id, day__gte=start.date()).aggregate(
        used=Coalesce(Sum("input_tokens"), 0) + Coalesce(Sum("output_tokens"), 0)
    )["used"]
    limit = settings.CHATENGINE_MONTHLY_TOKEN_QUOTA or None
    return QuotaStatus(limit=limit, used=used, resets_at=resets_at)


_SUMS = {
    "calls": Count("pk"),
    "input_tokens": Coalesce(Sum("input_tokens"), 0),
    "output_tokens": Coalesce(Sum("output_tokens"), 0),
    # Not named "cost": an annotation of that name would shadow the column in the filter below.
    "cost_sum": Coalesce(Sum("cost"), Decimal(0)),
    "unpriced_calls": Count("pk", filter=Q(cost__isnull=True)),
}


def usage_report(
    *,
    user_id: int,
    group_by: GroupBy = "day",
    since: datetime | None = None,
    until: datetime | None = None,
) -> UsageReport:
    """The user's calls in [since, until) (default: this UTC month so far), summed by group.

    Read from the ledger, so a deleted session's calls still count (its id stays the key).
    """
    now = timezone.now()
    since = since or month_bounds(now)[0]
    until = until or now
    records = UsageRecord.objects.filter(
        user_id=user_id, created_at__gte=since, created_at__lt=until
    )
    rows = records.values(key=_group_key(group_by)).annotate(**_SUMS).order_by("key")
    groups = [_group(row) for row in rows]
    totals = _group({"key": "total", **records.aggregate(**_SUMS)})
    return UsageReport(
        since=since,
        until=until,
        group_by=group_by,
        totals=totals,
        groups=groups,
        quota=quota_status(user_id=user_id),
    )


def _group_key(group_by: GroupBy):
    if group_by == "day":
        return TruncDate("created_at", tzinfo=UTC)
    return F("model") if group_by == "model" else F("session_id")


def _group(row: dict) -> UsageGroup:
    key = row["key"]
    return UsageGroup(
        key=key.isoformat() if isinstance(key, date) else str(key),
        calls=row["calls"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cost=Decimal(row["cost_sum"]),
        unpriced_calls=row["unpriced_calls"],
    )
