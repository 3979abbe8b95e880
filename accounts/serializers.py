"""What a client sends to make a token, and what it gets back (the key only at creation)."""

from rest_framework import serializers

from accounts.models import TOKEN_NAME_MAX_CHARS, ApiToken
from conversations.serializers import StrictCharField, StrictInputSerializer

MAX_EXPIRY_DAYS = 3650


class TokenCreateInputSerializer(StrictInputSerializer):
    name = StrictCharField(
        max_length=TOKEN_NAME_MAX_CHARS,
        help_text="What the token is for, e.g. the client or machine that will use it.",
    )
    expires_in_days = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=1,
        max_value=MAX_EXPIRY_DAYS,
        help_text="Days until the key stops working; omitted or null: until revoked.",
    )


class TokenSerializer(serializers.ModelSerializer):
    prefix = serializers.CharField(
        source="token_key", help_text="The key's first characters, to tell keys apart."
    )
    created_at = serializers.DateTimeField(source="created")
    expires_at = serializers.DateTimeField(
        source="expiry", allow_null=True, help_text="When the key stops working; null: never."
    )
    last_used_at = serializers.DateTimeField(
        allow_null=True, help_text="Last authentication with it, to the minute; null: never."
    )

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "expires_at", "last_used_at"]
        read_only_fields = fields


class TokenCreatedSerializer(TokenSerializer):
    key = serializers.CharField(
        help_text="The key, for `Authorization: Bearer <key>`. Shown only in this response; "
        "only its digest is stored."
    )

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "key"]
        read_only_fields = fields
