"""Input serializers validate what callers send; output serializers shape what we return."""

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chatengine.openapi import document_metadata_field
from conversations.models import VERSIONED_FIELDS, ChatSession, Message
from llm.catalog import NOT_ALLOWED, is_allowed_model

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


MODEL_HELP = (
    "A model this server allows (`LLM_ALLOWED_MODELS`; by default `LLM_MODEL` and the models "
    "of `LLM_MODEL_CONTEXT_WINDOWS`); another name is a 400 `validation_error`."
)


class ModelNameField(StrictCharField):
    """A model name the server allows (llm.catalog); blank, where allowed, means the default."""

    default_error_messages = {"not_allowed": NOT_ALLOWED}

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 128)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value and not is_allowed_model(value):
            self.fail("not_allowed")
        return value


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only: no "5", no true. `5.0` is one (JSON Schema calls every number with
    no fractional part an integer, so clients and the schema's validators may send it)."""

    default_error_messages = {"invalid": "Expected an integer, got {input_type}."}

    def to_internal_value(self, data):
        if isinstance(data, float) and data.is_integer():
            data = int(data)
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid", input_type=type(data).__name__)
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
    model = ModelNameField(
        required=False,
        allow_blank=True,
        help_text="The model of this session's replies; blank: the server's `LLM_MODEL`. "
        + MODEL_HELP,
    )
    metadata = MetadataField(required=False)


class SessionUpdateInputSerializer(SessionCreateInputSerializer):
    archived = StrictBooleanField(required=False)


class SessionSerializer(serializers.ModelSerializer):
    metadata = MetadataField(read_only=True)
    forked_from = serializers.UUIDField(
        source="forked_from_id",
        read_only=True,
        allow_null=True,
        help_text="The session this one was forked from (a fork or an edit); null otherwise, "
        "or once that session is deleted.",
    )
    forked_at_seq = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="The parent's last message copied into this fork; null if not a fork.",
    )

    class Meta:
        model = ChatSession
        fields = [
            "id",
            "title",
            "system_prompt",
            "model",
            "metadata",
            "archived",
            "forked_from",
            "forked_at_seq",
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
MAX_TOOL_CALLS = 128
MAX_TOOL_CALL_ID_CHARS = 128
MAX_FUNCTION_NAME_CHARS = 64


# The shapes below document JSON fields (ToolCallsField and the reply fields of a message);
# ToolCallsField validates them itself, with messages that say which call is wrong.
class ToolCallFunctionSerializer(serializers.Serializer):
    rejects_unknown_fields = True
    name = serializers.CharField(
        max_length=MAX_FUNCTION_NAME_CHARS, help_text="The function the model calls."
    )
    arguments = serializers.CharField(
        allow_blank=True,
        trim_whitespace=False,
        help_text="Its arguments as JSON text, exactly as the model produced it (not parsed).",
    )


class ToolCallSerializer(serializers.Serializer):
    """One function call of an assistant message (OpenAI chat format)."""

    rejects_unknown_fields = True
    id = serializers.CharField(
        max_length=MAX_TOOL_CALL_ID_CHARS,
        help_text="Unique within the message; the `tool_call_id` of the tool message answering it.",
    )
    type = extend_schema_field({"type": "string", "const": "function"})(
        type("FunctionTypeField", (serializers.CharField,), {})
    )()
    function = ToolCallFunctionSerializer()


class UsageSerializer(serializers.Serializer):
    """Tokens the provider counted for one reply."""

    prompt_tokens = serializers.IntegerField(min_value=0)
    completion_tokens = serializers.IntegerField(min_value=0)
    total_tokens = serializers.IntegerField(min_value=0)


class ContextRecordSerializer(serializers.Serializer):
    """What went into a reply: which history was sent and its token count."""

    first_seq = serializers.IntegerField(
        allow_null=True, help_text="Oldest history message sent; null if none."
    )
    last_seq = serializers.IntegerField(allow_null=True, help_text="Newest one; null if none.")
    messages_included = serializers.IntegerField(min_value=0)
    messages_dropped = serializers.IntegerField(
        min_value=0, help_text="History messages left out to fit the budget."
    )
    tokens = serializers.IntegerField(min_value=0, help_text="Prompt tokens, as counted here.")
    budget = serializers.IntegerField(help_text="Prompt tokens the model's window allowed.")
    encoding = serializers.CharField(help_text="The tiktoken encoding used to count.")


TOOL_CALLS_HELP = (
    f"The tools an assistant message calls: 1 to {MAX_TOOL_CALLS} calls with distinct `id`s "
    "(JSON Schema cannot say `distinct`; a repeated id is refused with 400)."
)


@extend_schema_field(
    {
        "type": "array",
        "items": {"$ref": "#/components/schemas/ToolCall"},  # registered by MessageSerializer
        "minItems": 1,
        "maxItems": MAX_TOOL_CALLS,
        "description": TOOL_CALLS_HELP,
    }
)
class ToolCallsField(serializers.JSONField):
    """OpenAI chat-format tool calls: [{id, type: "function", function: {name, arguments}}]."""

    def to_internal_value(self, data):
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError("Expected a non-empty list of tool calls.")
        if len(data) > MAX_TOOL_CALLS:
            raise serializers.ValidationError(f"At most {MAX_TOOL_CALLS} tool calls.")
        ids = set()
        for i, call in enumerate(data):
            where = f"Tool call {i}"
            if not isinstance(call, dict) or set(call) != {"id", "type", "function"}:
                raise serializers.ValidationError(
                    f"{where}: expected exactly the keys id, type, function."
                )
            call_id, function = call["id"], call["function"]
            if not isinstance(call_id, str) or not 0 < len(call_id) <= MAX_TOOL_CALL_ID_CHARS:
                raise serializers.ValidationError(f"{where}: id must be a 1-128 character string.")
            if call_id in ids:
                raise serializers.ValidationError(f"{where}: duplicate id.")
            ids.add(call_id)
            if call["type"] != "function":
                raise serializers.ValidationError(f'{where}: type must be "function".')
            if not isinstance(function, dict) or set(function) != {"name", "arguments"}:
                raise serializers.ValidationError(
                    f"{where}: function must have exactly the keys name, arguments."
                )
            name = function["name"]
            if not isinstance(name, str) or not 0 < len(name) <= MAX_FUNCTION_NAME_CHARS:
                raise serializers.ValidationError(
                    f"{where}: function.name must be a 1-64 character string."
                )
            if not isinstance(function["arguments"], str):
                raise serializers.ValidationError(
                    f"{where}: function.arguments must be a string (JSON text)."
                )
            for value in (call_id, function["name"], function["arguments"]):
                _reject_unencodable(value)
                if "\x00" in value:
                    raise serializers.ValidationError("Null characters are not allowed.")
        return data


class MessageCreateInputSerializer(StrictInputSerializer):
    role = serializers.ChoiceField(choices=Message.Role.choices)
    # Blank content is allowed only for an assistant message that calls tools (checked below).
    content = StrictCharField(max_length=settings.CHATENGINE_MAX_MESSAGE_CHARS, allow_blank=True)
    name = StrictCharField(required=False, allow_blank=True, max_length=64)
    metadata = MetadataField(required=False)
    tool_calls = ToolCallsField(required=False)
    tool_call_id = StrictCharField(required=False, max_length=128)

    def validate(self, attrs):
        role = attrs["role"]
        if "tool_calls" in attrs and role != Message.Role.ASSISTANT:
            raise serializers.ValidationError(
                {"tool_calls": ["Only assistant messages call tools."]}
            )
        if role == Message.Role.TOOL and not attrs.get("tool_call_id"):
            raise serializers.ValidationError(
                {"tool_call_id": ["A tool message must say which call it answers."]}
            )
        if "tool_call_id" in attrs and role != Message.Role.TOOL:
            raise serializers.ValidationError(
                {"tool_call_id": ["Only tool messages answer a tool call."]}
            )
        if attrs["content"] == "" and "tool_calls" not in attrs:
            raise serializers.ValidationError({"content": ["This field may not be blank."]})
        return attrs


# The same rules as MessageCreateInputSerializer.validate, as one schema per role (documented
# as `oneOf`, discriminated by `role`), so that a client generator and the contract test's
# positive and negative data agree with the API. Schema only: the view validates with
# MessageCreateInputSerializer, whose messages say which rule was broken.
def _role_field(role: str) -> serializers.Field:
    field_class = type(f"{role.title()}RoleField", (serializers.ChoiceField,), {})
    return extend_schema_field({"type": "string", "const": role})(field_class)(choices=[role])


def _content_field(*, allow_blank: bool = False) -> serializers.Field:
    return StrictCharField(
        max_length=settings.CHATENGINE_MAX_MESSAGE_CHARS,
        allow_blank=allow_blank,
        help_text="The text, stored exactly as sent.",
    )


class _MessageInputVariant(StrictInputSerializer):
    content = _content_field()
    name = StrictCharField(
        required=False, allow_blank=True, max_length=64, help_text="Optional author name."
    )
    metadata = MetadataField(required=False)


class SystemMessageInputSerializer(_MessageInputVariant):
    """A system message: always sent to the model, however old."""

    role = _role_field(Message.Role.SYSTEM)


class UserMessageInputSerializer(_MessageInputVariant):
    """A message of the end user."""

    role = _role_field(Message.Role.USER)


# The assistant's two shapes are two complete schemas, not one with an `anyOf` of partial
# rules: a client generator (openapi-python-client) turned that into a type whose only field
# was `content: Any`.
class AssistantTextMessageInputSerializer(_MessageInputVariant):
    """A model's message in text (`content` not blank), calling no tool."""

    role = _role_field(Message.Role.ASSISTANT)


class AssistantToolCallsMessageInputSerializer(_MessageInputVariant):
    """A model's message calling tools; its `content` may be blank."""

    role = _role_field(Message.Role.ASSISTANT)
    content = _content_field(allow_blank=True)
    tool_calls = ToolCallsField()


class ToolMessageInputSerializer(_MessageInputVariant):
    """A tool's result, answering one call of the assistant message before it."""

    role = _role_field(Message.Role.TOOL)
    tool_call_id = StrictCharField(
        max_length=MAX_TOOL_CALL_ID_CHARS, help_text="The `id` of the tool call this answers."
    )


# Told apart by `role` and, for the assistant, by `tool_calls` (each variant refuses unknown
# fields, so exactly one matches): a `oneOf` without a discriminator, which maps a value to
# one schema only.
MESSAGE_INPUT_VARIANTS = [
    SystemMessageInputSerializer,
    UserMessageInputSerializer,
    AssistantTextMessageInputSerializer,
    AssistantToolCallsMessageInputSerializer,
    ToolMessageInputSerializer,
]


@extend_schema_field(UsageSerializer(allow_null=True))
class UsageField(serializers.JSONField):
    pass


@extend_schema_field(ContextRecordSerializer(allow_null=True))
class ContextRecordField(serializers.JSONField):
    pass


@extend_schema_field(
    ToolCallSerializer(many=True, allow_null=True, help_text="The tools it calls; null if none.")
)
class ToolCallsOutputField(serializers.JSONField):
    pass


def _api_datetime(value) -> str:
    """A datetime as DRF's DateTimeField writes it (current time zone, `Z` for UTC)."""
    text = timezone.localtime(value).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def message_representation(message: Message) -> dict:
    """A message as the API shows it: what MessageSerializer's fields produce, built directly.

    Every history page and append returns messages, and the cache stores them in this form
    (conversations/cache.py); DRF's field-by-field machinery cost ~60 us a message.
    conversations/tests/test_serializers.py checks it against the fields it stands for.
    """
    created_at = _api_datetime(message.created_at)
    return {
        "id": message.id,
        "session": str(message.session_id),
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "name": message.name,
        "metadata": message.metadata,
        "token_count": message.token_count,
        "tool_calls": message.tool_calls,
        "tool_call_id": message.tool_call_id,
        "model": message.model,
        "usage": message.usage,
        "finish_reason": message.finish_reason,
        "latency_ms": message.latency_ms,
        "context": message.context,
        "versions": message.versions,
        "created_at": created_at,
    }


class MessageSerializer(serializers.ModelSerializer):
    session = serializers.UUIDField(source="session_id", read_only=True)
    metadata = MetadataField(read_only=True)
    # JSON columns, documented with their shapes. Null unless the message has them: the reply
    # fields (model, usage, finish_reason, latency_ms, context) only on generated replies.
    tool_calls = ToolCallsOutputField(read_only=True)
    usage = UsageField(read_only=True, help_text="Null unless the engine generated it.")
    context = ContextRecordField(read_only=True, help_text="Null unless the engine generated it.")
    versions = serializers.IntegerField(
        read_only=True,
        min_value=1,
        help_text="How many answers have stood at this seq, this one included (1: never "
        "regenerated); the earlier ones are at `GET .../messages/{seq}/versions/`.",
    )

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
            "tool_calls",
            "tool_call_id",
            "model",
            "usage",
            "finish_reason",
            "latency_ms",
            "context",
            "versions",
            "created_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance: Message) -> dict:
        # The fields above document the shape (OpenAPI); message_representation produces it.
        return message_representation(instance)


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


# --- Branching ----------------------------------------------------------------------------
class ForkInputSerializer(StrictInputSerializer):
    at_seq = StrictIntegerField(
        min_value=0,
        max_value=MAX_SEQ,
        help_text="Copy the messages with seq 1..`at_seq` (0: none, only the session's "
        "settings). More than the session's last seq is a 404.",
    )
    title = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=255,
        help_text="The fork's title; default: the parent's.",
    )


class MessageVersionSerializer(serializers.Serializer):
    """One answer that stood at a message's seq: an earlier one, or the current one."""

    number = serializers.IntegerField(
        min_value=1, help_text="1 for the first answer, in the order they stood."
    )
    current = serializers.BooleanField(help_text="Whether this is the message's answer now.")
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)
    metadata = MetadataField(read_only=True)
    token_count = serializers.IntegerField(min_value=0)
    tool_calls = ToolCallsOutputField(read_only=True)
    model = serializers.CharField(allow_null=True)
    usage = UsageField(read_only=True)
    finish_reason = serializers.CharField(allow_null=True)
    latency_ms = serializers.IntegerField(allow_null=True, min_value=0)
    context = ContextRecordField(read_only=True, help_text="What this answer was generated from.")
    created_at = serializers.DateTimeField()

    def to_representation(self, instance) -> dict:
        # The fields above document the shape; VERSIONED_FIELDS is what a version holds.
        answer = instance.answer
        body = {"number": instance.number, "current": instance.current}
        body.update((name, getattr(answer, name)) for name in VERSIONED_FIELDS)
        body["created_at"] = _api_datetime(answer.created_at)
        return body


class VersionsQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        required=False, default=50, min_value=1, max_value=200, help_text="Page size."
    )
    after = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_SEQ,
        help_text="Only versions with a greater `number` (exclusive).",
    )


class ForksQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        required=False, default=20, min_value=1, max_value=100, help_text="Page size."
    )
    cursor = serializers.CharField(
        required=False, max_length=512, help_text="Opaque; copy it from a `next` URL."
    )
