"""Input serializers validate what callers send; output serializers shape what we return."""

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

from chatengine.openapi import document_metadata_field
from conversations import fields as message_fields
from conversations.models import VERSIONED_FIELDS, ChatSession, Message, Summary
from llm.catalog import NOT_ALLOWED, is_allowed_model

METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512
MAX_SEQ = 2_147_483_647  # the seq column's range; larger cursors would overflow the query


def _column_max_length(model, name: str) -> int:
    # A text field's limit is its column's: stated once, in the model.
    return model._meta.get_field(name).max_length


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
        kwargs.setdefault("max_length", _column_max_length(ChatSession, "model"))
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
    title = StrictCharField(
        required=False, allow_blank=True, max_length=_column_max_length(ChatSession, "title")
    )
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
    context_strategy = serializers.ChoiceField(
        choices=ChatSession.ContextStrategy.choices,
        required=False,
        help_text="What a reply does with history that no longer fits: `window` leaves it "
        "out, `summary` folds it into a rolling summary sent in its place. Absent on create: "
        "the server's `LLM_CONTEXT_STRATEGY`.",
    )


class SessionUpdateInputSerializer(SessionCreateInputSerializer):
    archived = StrictBooleanField(required=False)


class SessionSerializer(serializers.ModelSerializer):
    metadata = MetadataField(read_only=True)
    title_source = serializers.ChoiceField(
        choices=ChatSession.TitleSource.choices,
        allow_null=True,
        read_only=True,
        help_text="`user`: you set the title (it is never replaced); `auto`: the engine named "
        "the session after its first reply; null: no title yet.",
    )
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
        fields = list(message_fields.SESSION_API_FIELDS)
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


class ToolCallFunctionSerializer(StrictInputSerializer):
    """The function a tool call calls, and its arguments."""

    name = StrictCharField(
        max_length=MAX_FUNCTION_NAME_CHARS, help_text="The function the model calls."
    )
    arguments = StrictCharField(
        allow_blank=True,
        help_text="Its arguments as JSON text, exactly as the model produced it (not parsed).",
    )


# Validates every call a message carries (ToolCallsField) and documents the calls of the
# message and context outputs (its docstring is the schema's description).
class ToolCallSerializer(StrictInputSerializer):
    """One function call of an assistant message (OpenAI chat format)."""

    id = StrictCharField(
        max_length=MAX_TOOL_CALL_ID_CHARS,
        help_text="Unique within the message; the `tool_call_id` of the tool message answering it.",
    )
    type = extend_schema_field({"type": "string", "const": "function"})(
        type("FunctionTypeField", (serializers.ChoiceField,), {})
    )(choices=["function"], error_messages={"invalid_choice": 'Must be "function".'})
    function = ToolCallFunctionSerializer()


class UsageSerializer(serializers.Serializer):
    """Tokens the provider counted for one reply."""

    prompt_tokens = StrictIntegerField(min_value=0)
    completion_tokens = StrictIntegerField(min_value=0)
    total_tokens = StrictIntegerField(min_value=0)


class SummaryRefSerializer(serializers.Serializer):
    """The rolling summary a context sent in place of messages 1..covers_to_seq."""

    id = StrictIntegerField(help_text="The summary's id (GET .../summaries/).")
    covers_from_seq = StrictIntegerField(help_text="Always 1: a summary covers 1..N.")
    covers_to_seq = StrictIntegerField(help_text="N: the last message it stands for.")
    tokens = StrictIntegerField(min_value=0, help_text="Tokens of the message sent.")


class ContextRecordSerializer(serializers.Serializer):
    """What went into a reply: which history was sent and its token count."""

    first_seq = StrictIntegerField(
        allow_null=True, help_text="Oldest history message sent; null if none."
    )
    last_seq = StrictIntegerField(allow_null=True, help_text="Newest one; null if none.")
    messages_included = StrictIntegerField(min_value=0)
    messages_dropped = StrictIntegerField(
        min_value=0, help_text="History messages left out to fit the budget."
    )
    tokens = StrictIntegerField(min_value=0, help_text="Prompt tokens, as counted here.")
    budget = StrictIntegerField(help_text="Prompt tokens the model's window allowed.")
    encoding = StrictCharField(help_text="The tiktoken encoding used to count.")
    strategy = serializers.ChoiceField(
        choices=ChatSession.ContextStrategy.choices,
        required=False,
        help_text="The session's context strategy then (absent on replies stored before it "
        "existed: `window`).",
    )
    summary = SummaryRefSerializer(
        allow_null=True,
        required=False,
        help_text="The summary sent in place of the older messages; null if none.",
    )


TOOL_CALLS_HELP = (
    f"The tools an assistant message calls: 1 to {MAX_TOOL_CALLS} calls with distinct `id`s "
    "(JSON Schema cannot say `distinct`; a repeated id is refused with 400)."
)


def error_lines(detail, where: str = "") -> list[str]:
    """A DRF error detail (nested dicts and lists) as flat lines, each naming where the
    problem is: `function.name: This field is required.`, `[2].id: Expected a string, got int.`"""
    if isinstance(detail, dict):
        return [
            line
            for key, value in detail.items()
            for line in error_lines(
                value,
                where if key == api_settings.NON_FIELD_ERRORS_KEY else f"{where}.{key}".lstrip("."),
            )
        ]
    if isinstance(detail, list) and any(isinstance(item, dict | list) for item in detail):
        # One entry per item of a list (empty for a valid item).
        return [
            line
            for index, item in enumerate(detail)
            for line in error_lines(item, f"{where}[{index}]")
        ]
    items = detail if isinstance(detail, list) else [detail]
    return [f"{where}: {item}" if where else str(item) for item in items]


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
    """OpenAI chat-format tool calls, each validated by ToolCallSerializer; plus what a
    serializer cannot say: their number and distinct ids. Each problem names its call."""

    def to_internal_value(self, data):
        calls = ToolCallSerializer(
            many=True, allow_empty=False, min_length=1, max_length=MAX_TOOL_CALLS
        )
        try:
            calls.run_validation(data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError(_tool_call_lines(exc.detail)) from None
        ids: set[str] = set()
        for index, call in enumerate(data):
            if call["id"] in ids:
                raise serializers.ValidationError(
                    f"Tool call {index}: id: {call['id'][:40]!r} is the id of an earlier call."
                )
            ids.add(call["id"])
        # The calls as sent: the serializer's validated form would be OrderedDicts of the same.
        return data


def _tool_call_lines(detail) -> list[str]:
    if isinstance(detail, dict) and all(isinstance(key, int) for key in detail):
        # The problems of each bad call, by its index: name the call.
        return [
            f"Tool call {index}: {line}"
            for index, problems in detail.items()
            for line in error_lines(problems)
        ]
    return error_lines(detail)  # the list itself: not a list, empty, too long


# --- A message's input: one schema per role, and the validator that dispatches to them ------
def _role_field(role: str) -> serializers.Field:
    role = str(role)  # the value, not the Message.Role member
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
        required=False,
        allow_blank=True,
        max_length=_column_max_length(Message, "name"),
        help_text="Optional author name.",
    )
    metadata = MetadataField(required=False)
    pinned = StrictBooleanField(
        required=False,
        help_text="Keep it in every context the session's replies send (counted first, "
        "never summarised); change it later with PATCH on the message.",
    )


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


TOOL_CALL_ID_MISSING = "A tool message must say which call it answers."


class ToolMessageInputSerializer(_MessageInputVariant):
    """A tool's result, answering one call of the assistant message before it."""

    role = _role_field(Message.Role.TOOL)
    tool_call_id = StrictCharField(
        max_length=MAX_TOOL_CALL_ID_CHARS,
        help_text="The `id` of the tool call this answers.",
        error_messages={"required": TOOL_CALL_ID_MISSING, "blank": TOOL_CALL_ID_MISSING},
    )


# The role rules live here, once: the view validates with the variant the body's `role`
# selects (MessageCreateInputSerializer), the schema documents them as a `oneOf` without a
# discriminator (a discriminator maps a value to one schema only; the assistant has two, told
# apart by `tool_calls`; each variant refuses unknown fields, so exactly one matches).
MESSAGE_INPUT_VARIANTS = [
    SystemMessageInputSerializer,
    UserMessageInputSerializer,
    AssistantTextMessageInputSerializer,
    AssistantToolCallsMessageInputSerializer,
    ToolMessageInputSerializer,
]


def _variant_role(variant: type[serializers.Serializer]) -> str:
    return next(iter(variant._declared_fields["role"].choices))


class MessageCreateInputSerializer(serializers.Serializer):
    """A message body, validated by the one of `variants` its `role` selects.

    For a role with two variants (the assistant) the one that knows every field sent wins
    (the first if none does). A field that only other roles take is refused naming them.
    """

    variants = MESSAGE_INPUT_VARIANTS
    role = serializers.ChoiceField(choices=Message.Role.choices)

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            return super().to_internal_value(data)  # refuses it as not an object
        try:
            role = self.fields["role"].run_validation(self.fields["role"].get_value(data))
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"role": exc.detail}) from None
        candidates = [v for v in self.variants if _variant_role(v) == role]
        variant = max(candidates, key=lambda v: len(set(data) & set(v._declared_fields)))
        misplaced = {
            name: [f"Only {' and '.join(roles)} messages carry this field, not {role} ones."]
            for name in data
            if name not in variant._declared_fields and (roles := self.roles_taking(name))
        }
        if misplaced:
            raise serializers.ValidationError(misplaced)
        return variant().run_validation(data)

    @classmethod
    def roles_taking(cls, name: str) -> list[str]:
        return list(
            dict.fromkeys(_variant_role(v) for v in cls.variants if name in v._declared_fields)
        )

    @classmethod
    def field_names(cls) -> set[str]:
        """Every field some role takes."""
        return {name for v in cls.variants for name in v._declared_fields}


# --- A line of the import (conversations/import_format.py) --------------------------------
class GeneratedReplyInputSerializer(AssistantToolCallsMessageInputSerializer):
    """An assistant message the engine generated, as an import line carries it: its content is
    what the model said (blank, or longer than an appended message may be), with or without
    tool calls; the rest as an appended assistant message."""

    content = StrictCharField(allow_blank=True)
    tool_calls = ToolCallsField(required=False)


class AwareDateTimeField(serializers.Field):
    """An ISO 8601 date-time with its UTC offset, parsed exactly (no timezone guessed)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError(f"Expected a string, got {type(data).__name__}.")
        try:
            parsed = datetime.fromisoformat(data)
        except ValueError:
            raise serializers.ValidationError(
                f"Not an ISO 8601 date-time: {data[:40]!r}."
            ) from None
        if parsed.tzinfo is None:
            raise serializers.ValidationError("Needs a UTC offset (e.g. +00:00).")
        return parsed


class SessionRecordSerializer(SessionUpdateInputSerializer):
    """A session of an import line, without its messages: what the API takes for a session,
    validated as the API does (SessionUpdateInputSerializer: title, system_prompt, the model
    allow-list, metadata's limits, archived), and the columns only an import carries (declared
    here). `user` is the owner's username; the counters are checked against the messages."""

    id = StrictCharField()
    user = StrictCharField()
    message_count = StrictIntegerField(min_value=0, required=False, default=None)
    total_tokens = StrictIntegerField(min_value=0, required=False, default=None)
    last_seq = StrictIntegerField(min_value=0, required=False, default=None)
    last_message_at = AwareDateTimeField(allow_null=True, required=False, default=None)
    created_at = AwareDateTimeField()
    updated_at = AwareDateTimeField()
    # A fork's parent (its id) and where it began; an import drops a parent it does not hold.
    forked_from = StrictCharField(allow_null=True, required=False, default=None)
    forked_at_seq = StrictIntegerField(min_value=0, allow_null=True, required=False, default=None)
    # Absent (an export from before automatic titles): a title was the user's (see validate).
    title_source = serializers.ChoiceField(
        choices=ChatSession.TitleSource.choices, allow_null=True, required=False
    )

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        if "title_source" not in attrs:
            attrs["title_source"] = ChatSession.TitleSource.USER if attrs.get("title") else None
        return attrs

    def validate_id(self, value: str) -> uuid.UUID:
        try:
            return uuid.UUID(value)
        except ValueError:
            raise serializers.ValidationError(f"Not a UUID: {value[:40]!r}.") from None

    def validate_forked_from(self, value: str | None) -> uuid.UUID | None:
        return None if value is None else self.validate_id(value)

    def validate_user(self, value: str) -> str:
        User = get_user_model()
        max_length = User._meta.get_field(User.USERNAME_FIELD).max_length
        if max_length is not None and len(value) > max_length:
            raise serializers.ValidationError(
                f"Ensure this field has no more than {max_length} characters."
            )
        return value


class MessageRecordSerializer(serializers.Serializer):
    """A message of an import line: what an appended message takes, validated as the API does
    (MessageCreateInputSerializer; a generated reply, one with a `finish_reason`, by
    GeneratedReplyInputSerializer), and the columns only an import carries (declared here).

    A line spells "no tool calls" and "answers no call" with the column's empty value, where
    the API input leaves the field out. `usage` and `context` are checked, then kept as sent.
    """

    id = StrictIntegerField(min_value=1, allow_null=True, required=False, default=None)
    seq = StrictIntegerField(min_value=1)
    token_count = StrictIntegerField(min_value=0, required=False, default=0)
    model = StrictCharField(
        max_length=_column_max_length(Message, "model"),
        allow_blank=True,
        allow_null=True,
        required=False,
        default=None,
    )
    usage = UsageSerializer(allow_null=True, required=False, default=None)
    finish_reason = StrictCharField(
        max_length=_column_max_length(Message, "finish_reason"),
        allow_blank=True,
        allow_null=True,
        required=False,
        default=None,
    )
    latency_ms = StrictIntegerField(min_value=0, allow_null=True, required=False, default=None)
    context = ContextRecordSerializer(allow_null=True, required=False, default=None)
    versions = StrictIntegerField(min_value=1, required=False, default=1)
    created_at = AwareDateTimeField()

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            return super().to_internal_value(data)
        input_names = MessageCreateInputSerializer.field_names()
        sent = {
            name: value
            for name, value in data.items()
            if name in input_names
            and not (
                name in ("tool_calls", "tool_call_id")
                and value == Message._meta.get_field(name).get_default()
            )
        }
        generated = data.get("finish_reason") is not None
        message_serializer = (
            GeneratedReplyInputSerializer() if generated else MessageCreateInputSerializer()
        )
        errors, values = {}, {}
        try:
            values.update(message_serializer.run_validation(sent))
        except serializers.ValidationError as exc:
            errors.update(exc.detail)
        try:
            values.update(
                super().to_internal_value({k: v for k, v in data.items() if k not in input_names})
            )
        except serializers.ValidationError as exc:
            errors.update(exc.detail)
        if errors:
            raise serializers.ValidationError(errors)
        for name in ("usage", "context"):
            values[name] = data.get(name)
        return values


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


# A message as the API shows it: what MessageSerializer's fields produce, built directly from
# the field list (conversations/fields.py). Every history page and append returns messages, and
# the cache stores them in this form (conversations/cache_encoding.py).
# conversations/tests/test_serializers.py checks it against the fields it stands for.
message_representation: Callable[[Message], dict] = message_fields.representation_function()


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
        fields = message_fields.api_names()
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


# --- Search -------------------------------------------------------------------------------
class SearchQuerySerializer(serializers.Serializer):
    q = serializers.CharField(
        max_length=500,
        # Documented as the schema's `pattern`: a q without a letter or digit has nothing to
        # find. (One whose words are all excluded, or stop words, is a 400 too: see search.)
        validators=[RegexValidator(r"[^\W_]", "Give at least one letter or digit.")],
        help_text='What to find: words (all must match), `"exact phrase"`, `prefix*`, '
        "`-excluded`. Case-insensitive. A query with no searchable word (no letter or "
        "digit, only exclusions) is a 400.",
    )
    session = serializers.UUIDField(
        required=False, help_text="Only this session (one of yours; another id is a 404)."
    )
    role = serializers.ChoiceField(
        choices=Message.Role.choices,
        required=False,
        help_text="Only messages of this role (session titles are left out).",
    )
    since = serializers.DateTimeField(
        required=False, help_text="Only hits created at or after this time (ISO 8601)."
    )
    until = serializers.DateTimeField(
        required=False, help_text="Only hits created before this time (ISO 8601)."
    )
    limit = serializers.IntegerField(
        required=False, default=20, min_value=1, max_value=100, help_text="Page size."
    )
    cursor = serializers.CharField(
        required=False, max_length=512, help_text="Opaque; copy it from a `next` URL."
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
        body["created_at"] = message_fields.api_datetime(answer.created_at)
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


class SearchHitSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=["message", "session"],
        help_text="`message`: a message's content matched; `session`: the session's title.",
    )
    session = serializers.UUIDField(source="session_id")
    session_title = serializers.CharField()
    message = serializers.IntegerField(
        source="message_id", allow_null=True, help_text="The message's id (null for a title)."
    )
    seq = serializers.IntegerField(allow_null=True, help_text="Null for a title.")
    role = serializers.ChoiceField(
        choices=Message.Role.choices, allow_null=True, help_text="Null for a title."
    )
    snippet = serializers.CharField(
        help_text="The matching passage as HTML: the text escaped, each match in `<mark>…</mark>`."
    )
    rank = serializers.FloatField(
        help_text="Relevance (`ts_rank`), higher is better; 0 on the substring fallback."
    )
    created_at = serializers.DateTimeField()


class SummaryListQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        required=False, default=50, min_value=1, max_value=200, help_text="Page size."
    )
    after = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_SEQ,
        help_text="Only summaries with a greater `covers_to_seq` (exclusive).",
    )


class SummarySerializer(serializers.ModelSerializer):
    """A stored rolling summary of messages 1..covers_to_seq."""

    usage = UsageField(read_only=True, help_text="The summarising call's own usage.")

    class Meta:
        model = Summary
        fields = [
            "id",
            "covers_from_seq",
            "covers_to_seq",
            "text",
            "token_count",
            "model",
            "usage",
            "created_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "covers_from_seq": {
                "help_text": "The first message this summary newly folded (the previous "
                "one covered 1..covers_from_seq-1); it stands for 1..covers_to_seq."
            },
            "token_count": {"help_text": "Tokens of the system message that carries it."},
        }


class MessageUpdateInputSerializer(StrictInputSerializer):
    pinned = StrictBooleanField(
        required=False,
        help_text="`true`: the message is sent in every context of the session's replies "
        "(like a system message, counted first); `false`: it goes back to the window. "
        "Absent: unchanged.",
    )


class MessageVersionRecordSerializer(serializers.Serializer):
    """One earlier answer of a regenerated message in an import line (its `earlier_versions`),
    numbered from 1 in the order the answers stood."""

    number = StrictIntegerField(min_value=1)
    content = StrictCharField(allow_blank=True, trim_whitespace=False)
    metadata = serializers.DictField(required=False, default=dict)
    token_count = StrictIntegerField(min_value=0, required=False, default=0)
    tool_calls = serializers.ListField(allow_null=True, required=False, default=None)
    model = StrictCharField(
        max_length=_column_max_length(Message, "model"),
        allow_blank=True,
        allow_null=True,
        required=False,
        default=None,
    )
    usage = serializers.DictField(allow_null=True, required=False, default=None)
    finish_reason = StrictCharField(
        max_length=_column_max_length(Message, "finish_reason"),
        allow_blank=True,
        allow_null=True,
        required=False,
        default=None,
    )
    latency_ms = StrictIntegerField(min_value=0, allow_null=True, required=False, default=None)
    context = serializers.JSONField(allow_null=True, required=False, default=None)
    created_at = AwareDateTimeField()
