"""Input serializers validate what callers send; output serializers shape what we return."""

from django.conf import settings
from rest_framework import serializers

from chatengine.openapi import document_metadata_field
from conversations.models import ChatSession, Message

METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512
MAX_SEQ = 2_147_483_647  # the seq column's range; larger cursors would overflow the query


def _reject_unencodable(value: str) -> None:
    # json.loads accepts lone surrogates ("\ud800"); no database can store them.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise serializers.ValidationError(
            "Text must be valid Unicode (lone surrogate code points are not allowed)."
        ) from None


class StrictCharField(serializers.CharField):
    """A CharField that takes only JSON strings (no silent 123 -> "123") and keeps whitespace."""

    default_error_messages = {"not_a_string": "Expected a string, got {input_type}."}

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string", input_type=type(data).__name__)
        _reject_unencodable(data)
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Expected true or false, got {input_type}."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input_type=type(data).__name__)
        return data


@document_metadata_field
class MetadataField(serializers.JSONField):
    """Caller-owned metadata, with OpenAI's limits: <=16 keys, keys <=64 chars, string values
    <=512 chars."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(f"Expected a JSON object, got {type(data).__name__}.")
        if len(data) > METADATA_MAX_KEYS:
            raise serializers.ValidationError(f"At most {METADATA_MAX_KEYS} keys are allowed.")
        for key, value in data.items():
            _reject_unencodable(key)
            if len(key) > METADATA_MAX_KEY_CHARS:
                raise serializers.ValidationError(
                    f"Key '{key[:20]}...' is longer than {METADATA_MAX_KEY_CHARS} characters."
                )
            if not isinstance(value, str):
                raise serializers.ValidationError(
                    f"Value of '{key}' must be a string, got {type(value).__name__}."
                )
            _reject_unencodable(value)
            if "\x00" in key or "\x00" in value:
                raise serializers.ValidationError("Null characters are not allowed.")
            if len(value) > METADATA_MAX_VALUE_CHARS:
                raise serializers.ValidationError(
                    f"Value of '{key}' is longer than {METADATA_MAX_VALUE_CHARS} characters."
                )
        return data


class StrictInputSerializer(serializers.Serializer):
    """Rejects fields it does not know, so typos don't pass silently."""

    rejects_unknown_fields = True  # documented as additionalProperties: false

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


# --- Sessions -----------------------------------------------------------------------------
class SessionCreateInputSerializer(StrictInputSerializer):
    title = StrictCharField(required=False, allow_blank=True, max_length=255)
    system_prompt = StrictCharField(
        required=False, allow_blank=True, max_length=settings.CHATENGINE_MAX_MESSAGE_CHARS
    )
    model = StrictCharField(required=False, allow_blank=True, max_length=128)
    metadata = MetadataField(required=False)


class SessionUpdateInputSerializer(SessionCreateInputSerializer):
    archived = StrictBooleanField(required=False)


class SessionSerializer(serializers.ModelSerializer):
    metadata = MetadataField(read_only=True)

    class Meta:
        model = ChatSession
        fields = [
            "id",
            "title",
            "system_prompt",
            "model",
            "metadata",
            "archived",
            "message_count",
            "total_tokens",
            "last_message_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class SessionListQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        required=False, default=20, min_value=1, max_value=100, help_text="Page size."
    )
    cursor = serializers.CharField(
        required=False, max_length=512, help_text="Opaque; copy it from a `next` URL."
    )
    archived = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Only archived (`true`) or only active (`false`) sessions; both if unset.",
    )
    search = serializers.CharField(
        required=False,
        max_length=255,
        # Not trimmed: "  " is a valid search per the schema (minLength 1), not a blank one.
        trim_whitespace=False,
        help_text="Only sessions whose title contains this text (case-insensitive).",
    )


# --- Messages -----------------------------------------------------------------------------
class MessageCreateInputSerializer(StrictInputSerializer):
    role = serializers.ChoiceField(choices=Message.Role.choices)
    content = StrictCharField(max_length=settings.CHATENGINE_MAX_MESSAGE_CHARS)
    name = StrictCharField(required=False, allow_blank=True, max_length=64)
    metadata = MetadataField(required=False)


class MessageSerializer(serializers.ModelSerializer):
    session = serializers.UUIDField(source="session_id", read_only=True)
    metadata = MetadataField(read_only=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "session",
            "seq",
            "role",
            "content",
            "name",
            "metadata",
            "token_count",
            "created_at",
        ]
        read_only_fields = fields


class HistoryQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        required=False, default=50, min_value=1, max_value=200, help_text="Page size."
    )
    after = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_SEQ,
        help_text="Only messages with a greater `seq` (exclusive).",
    )
    before = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_SEQ,
        help_text="Only messages with a smaller `seq` (exclusive).",
    )
    order = serializers.ChoiceField(
        choices=["asc", "desc"],
        required=False,
        default="asc",
        help_text="`asc`: oldest first; `desc`: newest first.",
    )
