"""Input and output shapes of the reply and context endpoints."""

from django.conf import settings
from rest_framework import serializers

from conversations.models import ChatSession, Message
from conversations.serializers import (
    MODEL_HELP,
    MessageSerializer,
    MetadataField,
    ModelNameField,
    SessionSerializer,
    StrictBooleanField,
    StrictCharField,
    StrictInputSerializer,
    StrictIntegerField,
    SummaryRefSerializer,
    ToolCallSerializer,
    UserMessageInputSerializer,
)
from llm.types import Context

MAX_OUTPUT_TOKENS_LIMIT = 1_000_000


STREAM_PATH = "/api/v1/sessions/{id}/reply/stream/"
STREAM_MOVED = f"Streaming has its own endpoint: POST {STREAM_PATH} (same body, no `stream`)."


def _user_message_field(name: str, **overrides) -> serializers.Field:
    """A copy of the user message input's field `name`, optional."""
    declared = UserMessageInputSerializer._declared_fields[name]
    return type(declared)(*declared._args, **{**declared._kwargs, "required": False, **overrides})


class _ReplyFields(StrictInputSerializer):
    """What a reply takes, streamed or not. Every field is optional; unknown fields are
    refused."""

    # A user message's own fields (one definition of content's length and metadata's limits),
    # optional here.
    content = _user_message_field(
        "content",
        help_text="A new user message, appended before replying. Leave it out to reply to the "
        "history as it is (the session must then have messages).",
    )
    model = ModelNameField(
        required=False,
        help_text="The model for this reply; default: the session's `model`, else the "
        "server's `LLM_MODEL`. " + MODEL_HELP,
    )
    max_output_tokens = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=MAX_OUTPUT_TOKENS_LIMIT,
        help_text="Tokens reserved for the reply (default `LLM_DEFAULT_MAX_OUTPUT_TOKENS`); "
        "the history sent gets the model's window minus this. More than the window leaves is "
        "a 422.",
    )
    metadata = _user_message_field("metadata")


class ReplyInputSerializer(_ReplyFields):
    """A reply answered as JSON once complete. Every field is optional; unknown fields are
    refused."""

    def to_internal_value(self, data):
        # The JSON reply had a `stream` flag before streaming got its own operation: say where
        # it went rather than just "Unknown field".
        if isinstance(data, dict) and "stream" in data:
            raise serializers.ValidationError({"stream": [STREAM_MOVED]})
        return super().to_internal_value(data)


class ReplyStreamInputSerializer(_ReplyFields):
    """A reply streamed as it is generated: the same fields as a JSON reply. Every field is
    optional; unknown fields are refused."""


class RegenerateInputSerializer(StrictInputSerializer):
    """A regenerate of the last answer, as JSON or streamed. Every field is optional;
    unknown fields are refused."""

    model = ModelNameField(
        required=False,
        help_text="The model for the new answer; default: the session's `model`, else the "
        "server's `LLM_MODEL`. " + MODEL_HELP,
    )
    max_output_tokens = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=MAX_OUTPUT_TOKENS_LIMIT,
        help_text="Tokens reserved for the answer, as for a reply.",
    )
    metadata = MetadataField(required=False, help_text="The new answer's metadata (default: none).")


class EditInputSerializer(StrictInputSerializer):
    """An edited user message: a new session (a fork before it) ends with it."""

    content = StrictCharField(
        max_length=settings.CHATENGINE_MAX_MESSAGE_CHARS,
        help_text="The edited text, stored exactly as sent.",
    )
    metadata = MetadataField(
        required=False, help_text="The edited message's metadata; default: the original's."
    )
    reply = StrictBooleanField(
        required=False,
        default=False,
        help_text="Also get the model's reply in the new session (as `POST .../reply/`).",
    )
    model = ModelNameField(
        required=False,
        help_text="With `reply`: the model for the reply, as for a reply. " + MODEL_HELP,
    )
    max_output_tokens = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=MAX_OUTPUT_TOKENS_LIMIT,
        help_text="With `reply`: tokens reserved for the reply, as for a reply.",
    )


class ContextQuerySerializer(serializers.Serializer):
    # Not trimmed: the schema (minLength 1) calls "  " a model name, not a blank one.
    model = ModelNameField(
        required=False,
        help_text="Preview for this model; default as for a reply. " + MODEL_HELP,
    )
    max_output_tokens = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_OUTPUT_TOKENS_LIMIT,
        help_text="Tokens to reserve for the reply, as in a reply request.",
    )


# --- Output shapes (documentation: the bodies are built by the functions below) -----------
class ContextSummarySerializer(serializers.Serializer):
    """How the history sent was chosen."""

    tokens = serializers.IntegerField(min_value=0, help_text="Prompt tokens, as counted here.")
    budget = serializers.IntegerField(help_text="Prompt tokens the model's window allows.")
    messages_included = serializers.IntegerField(
        min_value=0, help_text="History messages sent (the `system_prompt` not counted)."
    )
    messages_dropped = serializers.IntegerField(
        min_value=0,
        help_text="Older history messages left out to fit the budget (under the `summary` "
        "strategy, those the summary stands for count here too).",
    )
    strategy = serializers.ChoiceField(
        choices=ChatSession.ContextStrategy.choices, help_text="The session's context strategy."
    )
    summary = SummaryRefSerializer(
        allow_null=True,
        help_text="The summary sent in place of messages 1..covers_to_seq; null if none.",
    )


class ReplySerializer(serializers.Serializer):
    user_message = MessageSerializer(
        allow_null=True, help_text="The user message stored from `content`; null without it."
    )
    message = MessageSerializer(
        help_text="The assistant's reply, with `model`, `usage`, `finish_reason`, "
        "`latency_ms` and `context` filled in."
    )
    context = ContextSummarySerializer()


class EditSerializer(serializers.Serializer):
    session = SessionSerializer(help_text="The new session: a fork before the edited message.")
    user_message = MessageSerializer(help_text="The edited message, the new session's last.")
    message = MessageSerializer(
        allow_null=True, help_text="The reply in the new session; null without `reply`."
    )
    context = ContextSummarySerializer(
        allow_null=True, help_text="How the reply's history was chosen; null without `reply`."
    )


class RegenerateSerializer(serializers.Serializer):
    message = MessageSerializer(
        help_text="The message with its new answer (its `versions` one more); the one it "
        "replaced is at `GET .../messages/{seq}/versions/`."
    )
    context = ContextSummarySerializer()


class ContextMessageSerializer(serializers.Serializer):
    """One message as it would be sent (OpenAI chat format)."""

    role = serializers.ChoiceField(choices=Message.Role.choices)
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)
    name = serializers.CharField(required=False, help_text="Present only when set.")
    tool_calls = ToolCallSerializer(
        many=True, required=False, help_text="Present only on an assistant message calling tools."
    )
    tool_call_id = serializers.CharField(
        required=False, help_text="Present only on a tool message."
    )


class ContextPreviewSerializer(ContextSummarySerializer):
    model = serializers.CharField(help_text="The model the context was built for.")
    messages = ContextMessageSerializer(
        many=True,
        help_text="What would be sent, oldest first; the session's `system_prompt` first.",
    )
    first_seq = serializers.IntegerField(
        allow_null=True, help_text="Oldest history message included; null if none."
    )
    last_seq = serializers.IntegerField(
        allow_null=True, help_text="Newest history message included; null if none."
    )
    encoding = serializers.CharField(help_text="The tiktoken encoding used to count.")


def context_summary(context: Context) -> dict:
    return {
        "tokens": context.tokens,
        "budget": context.budget,
        "messages_included": context.messages_included,
        "messages_dropped": context.messages_dropped,
        "strategy": context.strategy,
        "summary": context.summary.as_record() if context.summary else None,
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


def edit_body(*, session, user_message, reply) -> dict:
    return {
        "session": SessionSerializer(session).data,
        "user_message": MessageSerializer(user_message).data,
        "message": MessageSerializer(reply.message).data if reply else None,
        "context": context_summary(reply.context) if reply else None,
    }


def regenerate_body(*, message, context: Context) -> dict:
    return {"message": MessageSerializer(message).data, "context": context_summary(context)}
