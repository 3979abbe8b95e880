"""OpenAPI documentation of /v1/ (the `openai` tag): operations, bodies, examples, and the
errors in OpenAI's shape (implied errors too, through `OpenAISchema`)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers as drf

from chatengine.openapi import ChatengineAutoSchema, Tags
from conversations.idempotency import OPENAPI_PARAMETER as IDEMPOTENCY_KEY
from openai_api import serializers

_ERROR_TEXT = {
    400: "A bad or unsupported parameter, in the body or the query (`param` names it).",
    401: "No token, or an unknown one.",
    403: "Not allowed (a CSRF failure with the browser session).",
    404: "No such conversation, item or response for this user (also one named in the body: "
    "`conversation`, `previous_response_id`, `after`).",
    406: "Unacceptable `Accept`.",
    409: "A conflict with the conversation's state (`x-should-retry: false` unless it is an "
    "Idempotency-Key still in progress).",
    413: "The body is too large.",
    422: "The input alone does not fit the model's context window.",
    429: "Throttled, or the LLM provider is rate limiting; `Retry-After` says when to retry.",
    500: "A bug on chatengine's side.",
    502: "The LLM provider failed.",
    503: "A service chatengine depends on is unavailable.",
    504: "The LLM provider did not answer in time.",
}


class OpenAIErrorDetailSerializer(drf.Serializer):
    message = drf.CharField()
    type = drf.CharField(help_text="OpenAI's category: invalid_request_error, ...")
    param = drf.CharField(allow_null=True, help_text="The offending parameter, when one is.")
    code = drf.CharField(help_text="chatengine's error type (not_found, context_overflow, ...).")


class OpenAIErrorSerializer(drf.Serializer):
    """Every /v1/ error: OpenAI's shape."""

    error = OpenAIErrorDetailSerializer()


def openai_error(status: int) -> OpenApiResponse:
    return OpenApiResponse(OpenAIErrorSerializer, _ERROR_TEXT[status])


class OpenAISchema(ChatengineAutoSchema):
    """Implied errors (401, 429, ...) documented in OpenAI's shape, not the /api/ envelope."""

    def _get_response_bodies(self, direction="response"):
        responses = super(ChatengineAutoSchema, self)._get_response_bodies(direction)
        for status in self.implied_error_statuses():
            if str(status) not in responses:
                responses[str(status)] = self._get_response_for_code(
                    openai_error(status), str(status), direction=direction
                )
        return dict(sorted(responses.items()))


def _errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return {status: openai_error(status) for status in statuses}


def _example(name: str, value, *, request: bool = False) -> OpenApiExample:
    return OpenApiExample(name, value=value, request_only=request, response_only=not request)


conversation_path = OpenApiParameter(
    "conversation_id", str, OpenApiParameter.PATH, description="`conv_…`: a chatengine session."
)
item_path = OpenApiParameter(
    "item_id", str, OpenApiParameter.PATH, description="`msg_…`, `fc_…_i` or `fco_…`."
)
response_path = OpenApiParameter("response_id", str, OpenApiParameter.PATH, description="`resp_…`.")

CONVERSATION = {
    "id": "conv_8f14e45fceea467a9c5f0b2a1d3e7c21",
    "object": "conversation",
    "created_at": 1767225600,
    "metadata": {"topic": "demo"},
}
USER_ITEM = {
    "type": "message",
    "id": "msg_41",
    "role": "user",
    "status": "completed",
    "content": [{"type": "input_text", "text": "Hi"}],
}
ASSISTANT_ITEM = {
    "type": "message",
    "id": "msg_42",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}],
}
ITEM_LIST = {
    "object": "list",
    "data": [USER_ITEM, ASSISTANT_ITEM],
    "first_id": "msg_41",
    "last_id": "msg_42",
    "has_more": False,
}
RESPONSE = {
    "id": "resp_43",
    "object": "response",
    "created_at": 1767225601,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "model": "gpt-4o-mini",
    "output": [{**ASSISTANT_ITEM, "id": "msg_44"}],
    "usage": {
        "input_tokens": 24,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 27,
    },
    "conversation": {"id": CONVERSATION["id"]},
    "previous_response_id": None,
    "store": True,
    "metadata": {},
}
RESPONSE_REQUEST = {
    "model": "gpt-4o-mini",
    "conversation": CONVERSATION["id"],
    "input": "And then?",
}

_TAG = {"tags": [Tags.OPENAI]}

conversation_create = extend_schema(
    operation_id="openai_conversations_create",
    summary="Create a conversation",
    description="A new chatengine session, with `items` appended in order (all or nothing).",
    request=serializers.ConversationCreateInputSerializer,
    responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "The conversation."), **_errors(409)},
    examples=[
        _example(
            "create",
            {"items": [{"type": "message", "role": "user", "content": "Hi"}]},
            request=True,
        ),
        _example("conversation", CONVERSATION),
    ],
    **_TAG,
)
conversation_retrieve = extend_schema(
    operation_id="openai_conversations_retrieve",
    summary="Retrieve a conversation",
    description="The session as a conversation object.",
    parameters=[conversation_path],
    responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "The conversation.")},
    examples=[_example("conversation", CONVERSATION)],
    **_TAG,
)
conversation_update = extend_schema(
    operation_id="openai_conversations_update",
    summary="Update a conversation",
    description="Replaces the session's metadata.",
    parameters=[conversation_path],
    request=serializers.ConversationUpdateInputSerializer,
    responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "The conversation.")},
    examples=[
        _example("update", {"metadata": {"topic": "demo"}}, request=True),
        _example("conversation", CONVERSATION),
    ],
    **_TAG,
)
conversation_delete = extend_schema(
    operation_id="openai_conversations_delete",
    summary="Delete a conversation",
    description="Deletes the session and its messages.",
    parameters=[conversation_path],
    responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "Deleted.")},
    examples=[
        _example(
            "deleted",
            {"id": CONVERSATION["id"], "object": "conversation.deleted", "deleted": True},
        )
    ],
    **_TAG,
)
items_list = extend_schema(
    operation_id="openai_conversation_items_list",
    summary="List a conversation's items",
    description="The session's messages as items, newest first by default; `after` is an "
    "item id, `limit` counts messages (an assistant message with tool calls is one "
    "`function_call` item per call). `include` is accepted and changes nothing.",
    parameters=[conversation_path, serializers.ItemListQuerySerializer],
    responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "A page of items."), **_errors(400)},
    examples=[_example("items", ITEM_LIST)],
    **_TAG,
)
items_create = extend_schema(
    operation_id="openai_conversation_items_create",
    summary="Add items to a conversation",
    description="Appends the items' messages in order, all or nothing.",
    parameters=[conversation_path, IDEMPOTENCY_KEY],
    request=serializers.ItemCreateInputSerializer,
    responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "The items added."), **_errors(409)},
    examples=[
        _example("add", {"items": [{"role": "user", "content": "Hi"}]}, request=True),
        _example("items", {**ITEM_LIST, "data": [USER_ITEM], "last_id": "msg_41"}),
    ],
    **_TAG,
)
item_retrieve = extend_schema(
    operation_id="openai_conversation_items_retrieve",
    summary="Retrieve an item",
    description="One item of the conversation.",
    parameters=[conversation_path, item_path],
    responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "The item.")},
    examples=[_example("item", USER_ITEM)],
    **_TAG,
)
item_delete = extend_schema(
    operation_id="openai_conversation_items_delete",
    summary="Delete an item",
    description="Deletes the item's message (all of an assistant message's function calls "
    "go with it); answers the conversation, as OpenAI does.",
    parameters=[conversation_path, item_path],
    responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "The conversation.")},
    examples=[_example("conversation", CONVERSATION)],
    **_TAG,
)
response_create = extend_schema(
    operation_id="openai_responses_create",
    summary="Create a response",
    description="A reply from the model chatengine is configured for, in a conversation "
    "(`conversation`), continuing a response (`previous_response_id`), or in a new "
    "conversation. The input is stored before the model is called; the reply after. "
    "`stream: true` answers a `text/event-stream` of Responses events.",
    request=serializers.ResponseCreateInputSerializer,
    responses={
        (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, "The response."),
        (200, "text/event-stream"): OpenApiResponse(
            OpenApiTypes.STR,
            "Responses events (`stream: true`), each `event: <type>` and `data: <JSON with "
            "type and sequence_number>`.",
            examples=[
                OpenApiExample(
                    "stream",
                    value='event: response.output_text.delta\ndata: {"type": '
                    '"response.output_text.delta", "sequence_number": 4, "item_id": '
                    '"msg_pending_43", "output_index": 0, "content_index": 0, "delta": "Hel"}'
                    "\n\n",
                    response_only=True,
                    media_type="text/event-stream",
                )
            ],
        ),
        **_errors(404, 409, 422, 502, 504),
    },
    examples=[
        _example("create", RESPONSE_REQUEST, request=True),
        _example("response", RESPONSE),
    ],
    **_TAG,
)
response_retrieve = extend_schema(
    operation_id="openai_responses_retrieve",
    summary="Retrieve a response",
    description="A stored response, from its input and reply messages.",
    parameters=[response_path],
    responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "The response.")},
    examples=[_example("response", RESPONSE)],
    **_TAG,
)
response_delete = extend_schema(
    operation_id="openai_responses_delete",
    summary="Delete a response",
    description="Deletes the response's reply message; its input stays in the conversation.",
    parameters=[response_path],
    responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "Deleted.")},
    examples=[
        _example("deleted", {"id": "resp_43", "object": "response.deleted", "deleted": True})
    ],
    **_TAG,
)
response_input_items = extend_schema(
    operation_id="openai_responses_input_items",
    summary="List a response's input items",
    description="The history the reply was sent (its context window), as items.",
    parameters=[response_path, serializers.ItemListQuerySerializer],
    responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "A page of items."), **_errors(400)},
    examples=[_example("items", ITEM_LIST)],
    **_TAG,
)
input_tokens = extend_schema(
    operation_id="openai_responses_input_tokens",
    summary="Count input tokens",
    description="chatengine's exact count of what a response with this body would send "
    "(history, instructions and input); nothing is stored or sent.",
    request=serializers.InputTokensInputSerializer,
    responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "The count."), **_errors(404, 409, 422)},
    examples=[
        _example("count", RESPONSE_REQUEST, request=True),
        _example("count", {"object": "response.input_tokens", "input_tokens": 24}),
    ],
    **_TAG,
)
response_compact = extend_schema(
    operation_id="openai_responses_compact",
    summary="Compact a conversation",
    description="Folds a stored conversation (`previous_response_id`, or chatengine's "
    "`conversation`) into its rolling summary and switches it to the `summary` context "
    "strategy: the responses that continue it send the summary in place of the messages it "
    "covers (which stay stored). Or summarises `input` alone, storing nothing. The output "
    "ends with a `compaction` item, which a later response's `input` may carry.",
    request=serializers.CompactInputSerializer,
    responses={
        200: OpenApiResponse(OpenApiTypes.OBJECT, "The compaction."),
        **_errors(404, 409, 422),
    },
    examples=[
        _example(
            "compact",
            {"model": "gpt-4o-mini", "previous_response_id": RESPONSE["id"]},
            request=True,
        ),
        _example(
            "compaction",
            {
                "id": "cmp_7",
                "object": "response.compaction",
                "created_at": 1767225700,
                "output": [
                    {"type": "compaction", "id": "cmp_7", "encrypted_content": "eJw...:1v2x:..."}
                ],
                "usage": {**RESPONSE["usage"], "input_tokens": 310, "total_tokens": 313},
            },
        ),
    ],
    **_TAG,
)
