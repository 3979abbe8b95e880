"""The /v1/ endpoints: parse, call one openai_api (or conversations) service, render.

Errors are OpenAI's shape (errors.OpenAIView); auth, throttling, Idempotency-Key and
ownership are chatengine's own, as on /api/v1/.
"""

from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils import timezone
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from chatengine.exceptions import NotFound
from chatengine.request_id import get_request_id
from chatengine.validation import validated, validated_query
from conversations import selectors
from conversations import services as conversation_services
from conversations.idempotency import Checkpoint, idempotent
from llm import services as replies
from openai_api import compaction, schema, serializers, services, streaming
from openai_api.errors import OpenAIView


class View(OpenAIView):
    schema = schema.OpenAISchema()


def _items_page(messages, *, has_more: bool) -> dict:
    items = [item for message in messages for item in serializers.message_items(message)]
    return serializers.item_list(items, has_more=has_more)


class ConversationCreateView(View):
    @schema.conversation_create
    @idempotent(atomic=True)
    def post(self, request: Request) -> Response:
        data = validated(serializers.ConversationCreateInputSerializer, request.data)
        items = data.get("items")
        session = services.create_conversation(
            user=request.user,
            items=(
                serializers.parse_items(items, param="items", text=False)
                if items is not None
                else []
            ),
            metadata=data.get("metadata"),
        )
        return Response(serializers.conversation_object(session))


class ConversationDetailView(View):
    @schema.conversation_retrieve
    def get(self, request: Request, conversation_id: str) -> Response:
        session = services.get_conversation(user=request.user, conversation_id=conversation_id)
        return Response(serializers.conversation_object(session))

    @schema.conversation_update
    def post(self, request: Request, conversation_id: str) -> Response:
        session = services.get_conversation(user=request.user, conversation_id=conversation_id)
        data = validated(serializers.ConversationUpdateInputSerializer, request.data)
        session = conversation_services.update_session(session=session, metadata=data["metadata"])
        return Response(serializers.conversation_object(session))

    @schema.conversation_delete
    def delete(self, request: Request, conversation_id: str) -> Response:
        session = services.get_conversation(user=request.user, conversation_id=conversation_id)
        conversation_services.delete_session(session=session)
        return Response(serializers.deleted_object(object_id=conversation_id, kind="conversation"))


class ItemListCreateView(View):
    @schema.items_list
    def get(self, request: Request, conversation_id: str) -> Response:
        session = services.get_conversation(user=request.user, conversation_id=conversation_id)
        query = validated_query(serializers.ItemListQuerySerializer, request)
        bound = {}
        if query.get("after"):
            seq = services.get_item(session=session, item_id=query["after"]).seq
            bound = {"after": seq} if query["order"] == "asc" else {"before": seq}
        page = selectors.list_messages(
            session=session, limit=query["limit"], order=query["order"], **bound
        )
        return Response(_items_page(page.items, has_more=page.has_more))

    @schema.items_create
    @idempotent(atomic=True)
    def post(self, request: Request, conversation_id: str) -> Response:
        session = services.get_conversation(user=request.user, conversation_id=conversation_id)
        data = validated(serializers.ItemCreateInputSerializer, request.data)
        messages = services.add_items(
            session=session,
            items=serializers.parse_items(data["items"], param="items", text=False),
        )
        return Response(_items_page(messages, has_more=False))


class ItemDetailView(View):
    @schema.item_retrieve
    def get(self, request: Request, conversation_id: str, item_id: str) -> Response:
        session = services.get_conversation(user=request.user, conversation_id=conversation_id)
        message = services.get_item(session=session, item_id=item_id)
        found = [i for i in serializers.message_items(message) if i["id"] == item_id]
        if not found:
            raise NotFound("Item not found.")
        return Response(found[0])

    @schema.item_delete
    def delete(self, request: Request, conversation_id: str, item_id: str) -> Response:
        session = services.get_conversation(user=request.user, conversation_id=conversation_id)
        message = services.get_item(session=session, item_id=item_id)
        conversation_services.delete_message(message=message)
        session.refresh_from_db()
        return Response(serializers.conversation_object(session))


def _response_request(data: dict) -> serializers.ResponseRequest:
    tools = serializers.function_tools(data.get("tools"))
    return serializers.ResponseRequest(
        model=data.get("model") or "",
        instructions=data.get("instructions") or None,
        previous_response_id=data.get("previous_response_id"),
        max_output_tokens=data.get("max_output_tokens"),
        temperature=data.get("temperature"),
        top_p=data.get("top_p"),
        tools=tools,
        store=data.get("store") is not False,
        metadata=data.get("metadata"),
        truncation=data.get("truncation") or "auto",
        compact_threshold=data.get("context_management"),
    )


class ResponseCreateView(View):
    throttle_scope = "replies"

    def perform_content_negotiation(self, request, force=False):
        # The body's `stream` decides the format (as on /api/v1/ replies), not `Accept`.
        return super().perform_content_negotiation(request, force=True)

    @schema.response_create
    @idempotent(atomic=False)  # never atomic: no transaction may span the LLM call
    def post(self, request: Request, checkpoint: Checkpoint | None):
        data = validated(serializers.ResponseCreateInputSerializer, request.data)
        spec = _response_request(data)
        plan = services.plan_response(
            user=request.user, data=data, request=spec, checkpoint=checkpoint
        )
        if not data.get("stream"):
            result = replies.complete_reply(plan.prepared)
            body = serializers.reply_response_object(
                response_id=plan.response_id,
                created_at=plan.created_at,
                request=spec,
                session=plan.prepared.session,
                reply=result.message,
            )
            return Response(body, status=status.HTTP_200_OK)
        request_id = get_request_id()
        if isinstance(request._request, ASGIRequest):
            body = streaming.async_body(plan, request_id)
        else:
            body = streaming.sync_body(plan, request_id)
        response = StreamingHttpResponse(body, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


class ResponseDetailView(View):
    @schema.response_retrieve
    def get(self, request: Request, response_id: str) -> Response:
        asked, reply = services.get_response(user=request.user, response_id=response_id)
        spec = serializers.ResponseRequest(
            model=reply.model or "", metadata=reply.metadata or asked.metadata or None
        )
        return Response(
            serializers.stored_response_object(
                response_id=response_id, asked=asked, reply=reply, request=spec
            )
        )

    @schema.response_delete
    def delete(self, request: Request, response_id: str) -> Response:
        services.delete_response(user=request.user, response_id=response_id)
        return Response(serializers.deleted_object(object_id=response_id, kind="response"))


class ResponseInputItemsView(View):
    @schema.response_input_items
    def get(self, request: Request, response_id: str) -> Response:
        _, reply = services.get_response(user=request.user, response_id=response_id)
        query = validated_query(serializers.ItemListQuerySerializer, request)
        page, has_more = services.response_input_messages(
            reply=reply, after=query.get("after"), limit=query["limit"], order=query["order"]
        )
        return Response(_items_page(page, has_more=has_more))


class ResponseCompactView(View):
    throttle_scope = "replies"  # it calls the model

    @schema.response_compact
    @idempotent(atomic=False)  # never atomic: no transaction may span the summarising calls
    def post(self, request: Request, checkpoint: Checkpoint | None) -> Response:
        data = validated(serializers.CompactInputSerializer, request.data)
        compacted = compaction.compact(user=request.user, data=data)
        return Response(
            serializers.compaction_object(
                compaction=compacted.compaction,
                kept=compacted.kept,
                usage=compacted.usage,
                created_at=int(timezone.now().timestamp()),
            )
        )


class InputTokensView(View):
    @schema.input_tokens
    def post(self, request: Request) -> Response:
        data = validated(serializers.InputTokensInputSerializer, request.data)
        spec = _response_request({**data, "stream": False})
        prepared = services.plan_unstored(user=request.user, data=data, request=spec)
        return Response(
            {"object": "response.input_tokens", "input_tokens": prepared.context.tokens}
        )
