"""Input and output shapes of the reply and context endpoints."""

from django.conf import settings
from rest_framework import serializers

from conversations.serializers import (
    MessageSerializer,
    MetadataField,
    StrictBooleanField,
    StrictCharField,
    StrictInputSerializer,
)
from llm.types import Context

MAX_OUTPUT_TOKENS_LIMIT = 1_000_000


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {"invalid": "Expected an integer, got {input_type}."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid", input_type=type(data).__name__)
        return super().to_internal_value(data)


class ReplyInputSerializer(StrictInputSerializer):
    content = StrictCharField(required=False, max_length=settings.CHATENGINE_MAX_MESSAGE_CHARS)
    stream = StrictBooleanField(required=False, default=False)
    model = StrictCharField(required=False, max_length=128)
    max_output_tokens = StrictIntegerField(
        required=False, min_value=1, max_value=MAX_OUTPUT_TOKENS_LIMIT
    )
    metadata = MetadataField(required=False)


class ContextQuerySerializer(serializers.Serializer):
    model = serializers.CharField(required=False, max_length=128)
    max_output_tokens = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_OUTPUT_TOKENS_LIMIT
    )


def context_summary(context: Context) -> dict:
    return {
        "tokens": context.tokens,
        "budget": context.budget,
        "messages_included": context.messages_included,
        "messages_dropped": context.messages_dropped,
    }


def reply_body(*, user_message, message, context: Context) -> dict:
    return {
        "user_message": MessageSerializer(user_message).data if user_message else None,
        "message": MessageSerializer(message).data,
        "context": context_summary(context),
    }


def context_preview_body(*, context: Context, model: str) -> dict:
    return {
        "model": model,
        "messages": [m.as_openai() for m in context.messages],
        **context_summary(context),
        "first_seq": context.first_seq,
        "last_seq": context.last_seq,
        "encoding": context.encoding,
    }
