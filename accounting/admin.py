"""Usage for staff: every user's totals per day (filter by user and date), a CSV export, and
the ledger of single calls. Read-only: usage is what the provider reported, never edited."""

import csv
from collections.abc import Iterator

from django.contrib import admin
from django.db.models import Sum
from django.http import HttpRequest, StreamingHttpResponse

from accounting.models import DailyUsage, UsageRecord

CSV_COLUMNS = (
    "user",
    "day",
    "calls",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost",
    "unpriced_calls",
)


class _Echo:
    """A file-like whose write() returns the line: csv.writer into a streamed response."""

    def write(self, value: str) -> str:
        return value


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(DailyUsage)
class DailyUsageAdmin(ReadOnlyAdmin):
    list_display = (
        "day",
        "user",
        "calls",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "cost",
        "unpriced_calls",
    )
    list_filter = ("day",)
    date_hierarchy = "day"
    search_fields = ("user__username", "user__email")
    ordering = ("-day", "user__username")
    list_select_related = ("user",)
    actions = ("export_csv",)

    def changelist_view(self, request: HttpRequest, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            # The totals of every row the filters select (all pages), per user and overall.
            rows = changelist.queryset
            response.context_data["usage_totals"] = rows.aggregate(
                calls=Sum("calls"),
                input_tokens=Sum("input_tokens"),
                output_tokens=Sum("output_tokens"),
                cost=Sum("cost"),
            )
            response.context_data["usage_per_user"] = (
                rows.order_by()
                .values("user__username")
                .annotate(
                    calls=Sum("calls"),
                    input_tokens=Sum("input_tokens"),
                    output_tokens=Sum("output_tokens"),
                    cost=Sum("cost"),
                )
                .order_by("-cost", "-input_tokens")[:20]
            )
        return response

    @admin.action(description="Export selected days as CSV")
    def export_csv(self, request: HttpRequest, queryset) -> StreamingHttpResponse:
        writer = csv.writer(_Echo())

        def lines() -> Iterator[str]:
            yield writer.writerow(CSV_COLUMNS)
            for row in queryset.select_related("user").order_by("day", "user__username"):
                yield writer.writerow(
                    [
                        row.user.get_username(),
                        row.day.isoformat(),
                        row.calls,
                        row.input_tokens,
                        row.output_tokens,
                        row.total_tokens,
                        row.cost,
                        row.unpriced_calls,
                    ]
                )

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="usage.csv"'
        return response


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "user",
        "kind",
        "model",
        "input_tokens",
        "output_tokens",
        "cost",
        "session_id",
        "message_id",
    )
    list_filter = ("kind", "model")
    date_hierarchy = "created_at"
    search_fields = ("user__username",)
    list_select_related = ("user",)
    ordering = ("-created_at",)
