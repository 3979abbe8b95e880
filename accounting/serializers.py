from rest_framework import serializers


class UsageQuerySerializer(serializers.Serializer):
    since = serializers.DateTimeField(
        required=False,
        help_text="From this time, inclusive (ISO 8601); default: the start of this UTC month.",
    )
    until = serializers.DateTimeField(
        required=False,
        help_text="Up to this time, exclusive (ISO 8601); default: now. A range that ends "
        "before it starts is empty (zero totals).",
    )
    group_by = serializers.ChoiceField(
        choices=["day", "model", "session"],
        required=False,
        default="day",
        help_text="`day` (UTC date), `model` (as the provider reported it) or `session` (id).",
    )


class UsageGroupSerializer(serializers.Serializer):
    key = serializers.CharField(
        help_text="The group: a date (YYYY-MM-DD), a model name or a session id."
    )
    calls = serializers.IntegerField(help_text="LLM calls: replies and automatic titles.")
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost = serializers.DecimalField(
        max_digits=20,
        decimal_places=10,
        help_text="From LLM_PRICES, per million tokens; calls of a model without a price "
        "add nothing (see `unpriced_calls`). A decimal string.",
    )
    unpriced_calls = serializers.IntegerField(
        help_text="Calls of a model that has no price in LLM_PRICES."
    )


class QuotaSerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        allow_null=True, help_text="Tokens per UTC calendar month; null: no quota."
    )
    used = serializers.IntegerField(help_text="Tokens (input + output) used this month.")
    resets_at = serializers.DateTimeField(help_text="When the month, and the count, restart.")


class UsageReportSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    group_by = serializers.ChoiceField(choices=["day", "model", "session"])
    totals = UsageGroupSerializer(help_text="The whole range (`key`: `total`).")
    results = UsageGroupSerializer(many=True, source="groups", help_text="Sorted by `key`.")
    quota = QuotaSerializer()
