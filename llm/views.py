"""Reply and context-preview endpoints. Thin: validate, call llm.services, render."""

import json
from collections.abc import AsyncIterator, Iterator

from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatengine.exceptions import error_body
from chatengine.request_id import get_request_id
from conversations import selectors
from conversations.idempotency import idempotent
from conversations.serializers import MessageSerializer
from llm import services
from llm.serializers import (
    ContextQuerySerializer,
    ReplyInputSerializer,
    context_preview_body,
    reply_body,
)


def _validated(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _render(event: services.StreamEvent) -> bytes:
    if isinstance(event, services.Delta):
        return sse("message.delta", {"delta": event.text})
    if isinstance(event, services.Completed):
        return sse("message.completed", MessageSerializer(event.message).data)
    exc = event.error
    return sse(
        "error", error_body(error_type=exc.error_type, message=exc.message, details=exc.details)
    )


async def _async_body(
    prepared: services.PreparedReply, request_id: str | None
) -> AsyncIterator[bytes]:
    events = services.bind_request_id(services.astream_reply(prepared), request_id=request_id)
    async for event in events:
        yield _render(event)


def _sync_body(prepared: services.PreparedReply, request_id: str | None) -> Iterator[bytes]:
    events = services.bind_request_id_sync(services.stream_reply(prepared), request_id=request_id)
    for event in events:
        yield _render(event)


class ReplyView(APIView):
    throttle_scope = "replies"

    def perform_content_negotiation(self, request, force=False):
        # `Accept: text/event-stream` must not be a 406: the body decides (`stream`), and
        # errors raised before streaming starts are still rendered as JSON.
        return super().perform_content_negotiation(request, force=True)

    @idempotent(atomic=False)  # never atomic: no transaction may span the LLM call
    def post(self, request: Request, session_id: str):
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        data = _validated(ReplyInputSerializer, request.data)
        stream = data.pop("stream")
        prepared = services.prepare_reply(session=session, **data)
        if not stream:
            result = services.complete_reply(prepared)
            body = reply_body(
                user_message=result.user_message, message=result.message, context=result.context
            )
            return Response(body, status=status.HTTP_201_CREATED)
        # Under ASGI an async body holds no thread while the model talks, and Django cancels
        # it when the client disconnects; under WSGI a sync body streams just as incrementally.
        # The body runs after the middleware returned: hand it the request id now.
        request_id = get_request_id()
        if isinstance(request._request, ASGIRequest):
            body = _async_body(prepared, request_id)
        else:
            body = _sync_body(prepared, request_id)
        response = StreamingHttpResponse(body, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
        return response


class ContextPreviewView(APIView):
    def get(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        query = _validated(ContextQuerySerializer, request.query_params)
        model = services.resolve_model(session=session, model=query.get("model"))
        context = services.build_context(
            session, model=model, max_output_tokens=query.get("max_output_tokens")
        )
        return Response(context_preview_body(context=context, model=model))
