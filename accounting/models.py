"""What the LLM calls cost: one ledger row per call, and the totals kept from it.

The totals (per session, per user and day) move in the same transaction as the ledger row,
which is the same transaction as the reply it paid for (accounting/services.py): they can
never disagree with the ledger or with the stored messages' `usage`.
"""

from django.conf import settings
from django.db import models


class CallKind(models.TextChoices):
    REPLY = "reply"
    TITLE = "title"
    SUMMARY = "summary"


class UsageRecord(models.Model):
    """One LLM call's tokens and cost, as the provider reported them."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_records"
    )
    # Kept when the session (or message) is deleted: the tokens were spent all the same, and
    # the monthly quota still counts them. No constraint and no cascade, so deleting a
    # session never has to visit its ledger. Null: a reply stored nowhere (the OpenAI-style
    # API's `store: false`).
    session = models.ForeignKey(
        "conversations.ChatSession",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    message_id = models.BigIntegerField(null=True, blank=True)  # the reply; null for a title
    kind = models.CharField(max_length=16, choices=CallKind.choices)
    model = models.CharField(max_length=128)
    input_tokens = models.PositiveIntegerField()
    output_tokens = models.PositiveIntegerField()
    # Null: the model has no price in LLM_PRICES (never a guess).
    cost = models.DecimalField(max_digits=20, decimal_places=10, null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["user", "created_at"], name="usage_user_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.model} {self.input_tokens}+{self.output_tokens}"


class SessionUsage(models.Model):
    """A session's running totals over its ledger rows."""

    session = models.OneToOneField(
        "conversations.ChatSession",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="usage_totals",
    )
    calls = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=20, decimal_places=10, default=0)
    unpriced_calls = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.session_id}: {self.input_tokens}+{self.output_tokens}"


class DailyUsage(models.Model):
    """A user's totals for one UTC day: the admin's report and the monthly quota read these."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="daily_usage"
    )
    day = models.DateField()
    calls = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=20, decimal_places=10, default=0)
    unpriced_calls = models.PositiveIntegerField(
        default=0, help_text="Calls of a model without a price (not in the cost)."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "day"], name="daily_usage_user_day_uniq"),
        ]
        verbose_name_plural = "daily usage"

    def __str__(self) -> str:
        return f"{self.user_id} {self.day}"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens
