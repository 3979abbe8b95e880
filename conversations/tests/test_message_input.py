"""One validator for a message's input: the per-role variants (what the schema documents),
dispatched on `role`, with tool calls checked by ToolCallSerializer."""

import pytest

from conversations.serializers import (
    MAX_TOOL_CALLS,
    MESSAGE_INPUT_VARIANTS,
    MessageCreateInputSerializer,
    ToolCallSerializer,
)

CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}

# One valid body per variant, in MESSAGE_INPUT_VARIANTS order.
VALID_BODIES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hi", "name": "ana", "metadata": {"k": "v"}},
    {"role": "assistant", "content": "hello"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": "18C", "tool_call_id": "c1"},
]


def errors_of(body) -> dict:
    serializer = MessageCreateInputSerializer(data=body)
    assert not serializer.is_valid()
    return {field: [str(m) for m in messages] for field, messages in serializer.errors.items()}


@pytest.mark.parametrize(
    ("variant", "body"), list(zip(MESSAGE_INPUT_VARIANTS, VALID_BODIES, strict=True))
)
def test_each_documented_variant_accepts_what_the_validator_accepts(variant, body):
    serializer = MessageCreateInputSerializer(data=body)
    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data == body
    assert variant(data=body).is_valid()
    # The other variants refuse it: the documented oneOf matches exactly one.
    assert [v for v in MESSAGE_INPUT_VARIANTS if v(data=body).is_valid()] == [variant]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            {"role": "user", "content": "hi", "tool_calls": [CALL]},
            "tool_calls",
            "Only assistant messages carry this field, not user ones.",
        ),
        (
            {"role": "assistant", "content": "hi", "tool_call_id": "c1"},
            "tool_call_id",
            "Only tool messages carry this field, not assistant ones.",
        ),
        (
            {"role": "tool", "content": "18C"},
            "tool_call_id",
            "A tool message must say which call it answers.",
        ),
        (
            {"role": "tool", "content": "18C", "tool_call_id": ""},
            "tool_call_id",
            "A tool message must say which call it answers.",
        ),
        ({"role": "assistant", "content": ""}, "content", "This field may not be blank."),
        (
            {"role": "robot", "content": "hi"},
            "role",
            '"robot" is not a valid choice.',
        ),
        ({"role": "user", "content": "hi", "colour": "red"}, "colour", "Unknown field."),
    ],
)
def test_a_broken_role_rule_is_refused_saying_which(body, field, message):
    assert errors_of(body) == {field: [message]}


@pytest.mark.parametrize(
    ("calls", "message"),
    [
        ([CALL, 1], "Tool call 1: Invalid data. Expected a dictionary, but got int."),
        ([{**CALL, "id": 5}], "Tool call 0: id: Expected a string, got int."),
        ([{**CALL, "type": "code"}], 'Tool call 0: type: Must be "function".'),
        ([{**CALL, "extra": 1}], "Tool call 0: extra: Unknown field."),
        (
            [CALL, {**CALL, "id": "c2", "function": {"name": "f"}}],
            "Tool call 1: function.arguments: This field is required.",
        ),
        (
            [{**CALL, "function": {"name": "f", "arguments": {"a": 1}}}],
            "Tool call 0: function.arguments: Expected a string, got dict.",
        ),
        (
            [{**CALL, "function": {"name": "x" * 65, "arguments": ""}}],
            "Tool call 0: function.name: Ensure this field has no more than 64 characters.",
        ),
        ([{**CALL, "id": "c\x00"}], "Tool call 0: id: Null characters are not allowed."),
        (
            [{**CALL, "function": {"name": "f", "arguments": "\ud800"}}],
            "Tool call 0: function.arguments: Text must be valid Unicode (lone surrogate code "
            "points are not allowed).",
        ),
        ([CALL, CALL], "Tool call 1: id: 'c1' is the id of an earlier call."),
        ([], "This list may not be empty."),
        ({"id": "c1"}, 'Expected a list of items but got type "dict".'),
        (
            [{**CALL, "id": f"c{i}"} for i in range(MAX_TOOL_CALLS + 1)],
            f"Ensure this field has no more than {MAX_TOOL_CALLS} elements.",
        ),
    ],
)
def test_a_bad_tool_call_is_refused_naming_the_call_and_the_key(calls, message):
    body = {"role": "assistant", "content": "", "tool_calls": calls}
    assert errors_of(body) == {"tool_calls": [message]}


def test_tool_calls_are_validated_by_the_serializer_that_documents_them():
    # A rule added to ToolCallSerializer holds for the API input without restating it.
    fields = ToolCallSerializer().fields
    too_long = "x" * (fields["id"].max_length + 1)
    body = {"role": "assistant", "content": "", "tool_calls": [{**CALL, "id": too_long}]}
    assert errors_of(body)["tool_calls"][0].startswith("Tool call 0: id: Ensure this field")
    calls = [{**CALL, "id": f"c{i}"} for i in range(MAX_TOOL_CALLS)]
    body = {"role": "assistant", "content": "", "tool_calls": calls}
    assert MessageCreateInputSerializer(data=body).is_valid()
