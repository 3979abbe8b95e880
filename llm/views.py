"""Reply and context-preview endpoints. Thin: validate, call llm.services, render."""

import json
from collections.abc import AsyncIterator, Iterator

from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatengine.exceptions import error_body, log_error
from chatengine.openapi import Tags, error_responses, seq_parameter, session_id_parameter
from chatengine.request_id import bind_request_id, get_request_id
from chatengine.validation import validated, validated_query
from conversations import selectors
from conversations.idempotency import Checkpoint, idempotent
from conversations.serializers import MessageSerializer
from llm import branching, schema, services
from llm.serializers import (
    ContextPreviewSerializer,
    ContextQuerySerializer,
    EditInputSerializer,
    EditSerializer,
    RegenerateInputSerializer,
    RegenerateSerializer,
    ReplyInputSerializer,
    ReplySerializer,
    ReplyStreamInputSerializer,
    context_preview_body,
    edit_body,
    regenerate_body,
    reply_body,
)


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _render(event: services.StreamEvent, view: str) -> bytes:
    if isinstance(event, services.Delta):
        return sse("message.delta", {"delta": event.text})
    if isinstance(event, services.Completed):
        return sse("message.completed", MessageSerializer(event.message).data)
    exc = event.error
    # The status line (201) went out before the failure: log it as the envelope handler logs
    # an error response, so chatengine.errors has every error with its category either way.
    log_error(
        error_type=exc.error_type,
        status=exc.status_code,
        message=exc.message,
        exc=exc,
        view=view,
        streamed=True,
    )
    body = error_body(error_type=exc.error_type, message=exc.message, details=exc.details)
    # What the JSON answer says in its Retry-After header; a stream has no headers left to set.
    retry_after = exc.headers.get("Retry-After")
    if retry_after is not None:
        body["retry_after"] = int(retry_after)
    return sse("error", body)


async def _async_body(
    prepared: services.PreparedReply, request_id: str | None, view: str
) -> AsyncIterator[bytes]:
    events = bind_request_id(services.astream_reply(prepared), request_id=request_id)
    async for event in events:
        yield _render(event, view)


def _sync_body(
    prepared: services.PreparedReply, request_id: str | None, view: str
) -> Iterator[bytes]:
    events = bind_request_id(services.stream_reply(prepared), request_id=request_id)
    for event in events:
        yield _render(event, view)


REPLY_ERRORS = error_responses(
    400,
    409,
    422,
    429,
    502,
    504,
    descriptions={
        400: "A bad body: an unknown field, a value of the wrong JSON type or out of range.",
        409: "The session is archived, or it has no messages and no `content` was sent "
        "(nothing to reply to). Nothing is stored.",
        422: "The newest message alone does not fit the model's context window, or "
        "`max_output_tokens` leaves no room for it (`details`: `tokens`, `budget`, `over_by`). "
        "Nothing is stored.",
        429: "Too many replies (the `replies` rate), or the LLM provider is rate limiting "
        "the engine. `Retry-After` says how many seconds to wait. Or `quota_exceeded`: your "
        "monthly token quota is used up (`details`: `limit`, `used`, `resets_at`); nothing "
        "is stored, appends still work.",
        502: "The LLM provider failed (`details.category`: `upstream_error`, `credentials`, "
        "`connection_error`, `malformed_response`). The user message stays stored.",
        504: "The LLM provider did not answer within `LLM_TIMEOUT_S`. The user message stays "
        "stored.",
    },
)


REPLY_DESCRIPTION = (
    "Appends `content` (if given) as a user message, sends the session's history, newest "
    "first within the model's context window (the `system_prompt` and `system` messages "
    "always, a tool result never without the call it answers), to the LLM, and stores its "
    "reply as an assistant message. The database is never locked while the model talks.\n\n"
    "A request refused before the LLM is called stores nothing; once the LLM is called the "
    "user message stays, even if the LLM fails. The `replies` rate limit applies."
)


class ReplyingView(APIView):
    """A view that calls the model: the `replies` rate, and its format fixed by the path
    (JSON, or the event stream), never negotiated: an `Accept` left over from the other one
    is not a 406, and errors raised before a stream starts are still JSON."""

    throttle_scope = "replies"

    def perform_content_negotiation(self, request, force=False):
        return super().perform_content_negotiation(request, force=True)


@extend_schema(parameters=[session_id_parameter])
class ReplyView(ReplyingView):
    @extend_schema(
        operation_id="sessions_reply",
        summary="Get an LLM reply",
        description=REPLY_DESCRIPTION + "\n\nThe answer is JSON, once the reply is complete. "
        "To receive it as it is generated, use `POST /api/v1/sessions/{id}/reply/stream/` "
        "(`sessions_reply_stream`); a `stream` field here is a 400 naming that path.",
        tags=[Tags.REPLIES],
        request=ReplyInputSerializer,
        responses={
            201: OpenApiResponse(
                ReplySerializer, "The stored user message (if `content` was sent) and reply."
            ),
            **REPLY_ERRORS,
        },
        examples=[
            schema.REPLY_REQUEST,
            schema.REPLY_TO_HISTORY_REQUEST,
            schema.REPLY_CREATED,
        ],
    )
    @idempotent(atomic=False)  # never atomic: no transaction may span the LLM call
    def post(self, request: Request, session_id: str, checkpoint: Checkpoint | None) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        data = validated(ReplyInputSerializer, request.data)
        prepared = services.prepare_reply(session=session, checkpoint=checkpoint, **data)
        result = services.complete_reply(prepared)
        body = reply_body(
            user_message=result.user_message, message=result.message, context=result.context
        )
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[session_id_parameter])
class ReplyStreamView(ReplyingView):
    @extend_schema(
        operation_id="sessions_reply_stream",
        summary="Stream an LLM reply",
        description=REPLY_DESCRIPTION + "\n\nThe same request as `POST .../reply/`; the "
        "answer is a `text/event-stream` (HTTP 201 once the reply starts) of `message.delta` "
        "events, then `message.completed` (or `error`). Errors found before the LLM is called "
        "(400, 404, 409, 422, 429) are JSON, as everywhere. `Accept` is not negotiated.",
        tags=[Tags.REPLIES],
        request=ReplyStreamInputSerializer,
        responses={
            (201, "text/event-stream"): OpenApiResponse(
                schema.REPLY_STREAM_BODY,
                "The reply as server-sent events. " + schema.REPLY_STREAM_DESCRIPTION,
            ),
            **REPLY_ERRORS,
        },
        examples=[
            schema.REPLY_STREAM_REQUEST,
            schema.REPLY_TO_HISTORY_REQUEST,
            *schema.REPLY_STREAM_EVENTS,
        ],
    )
    @idempotent(atomic=False)  # never atomic: no transaction may span the LLM call
    def post(
        self, request: Request, session_id: str, checkpoint: Checkpoint | None
    ) -> StreamingHttpResponse:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        data = validated(ReplyStreamInputSerializer, request.data)
        prepared = services.prepare_reply(session=session, checkpoint=checkpoint, **data)
        return _stream_response(prepared, request, self)


def _stream_response(
    prepared: services.PreparedReply, request: Request, view: APIView
) -> StreamingHttpResponse:
    """The reply of `prepared` as server-sent events (a reply's or a regenerate's)."""
    # Under ASGI an async body holds no thread while the model talks, and Django cancels
    # it when the client disconnects; under WSGI a sync body streams just as incrementally.
    # The body runs after the middleware returned: hand it the request id now.
    request_id = get_request_id()
    if isinstance(request._request, ASGIRequest):
        body = _async_body(prepared, request_id, type(view).__name__)
    else:
        body = _sync_body(prepared, request_id, type(view).__name__)
    # 201 like the JSON answer: the same request stores the same messages.
    response = StreamingHttpResponse(
        body, content_type="text/event-stream", status=status.HTTP_201_CREATED
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


REGENERATE_ERRORS = error_responses(
    400,
    404,
    409,
    422,
    429,
    502,
    504,
    descriptions={
        400: "A bad body: an unknown field, a value of the wrong JSON type or out of range.",
        404: "No such session, or no message at `seq`.",
        409: "The message is not an assistant's, or not the session's last; or the session is "
        "archived. Nothing is stored. Also when the conversation moved on while the model "
        "talked: the new answer is then kept as an earlier version, not the current one "
        "(`details.version`). Or the `Idempotency-Key` is in use or was used for another "
        "request.",
        422: "The history before the message does not fit the model's context window, or "
        "`max_output_tokens` leaves no room for it. Nothing is stored.",
        429: "Too many replies (the `replies` rate), or the LLM provider is rate limiting "
        "the engine. `Retry-After` says how many seconds to wait.",
        502: "The LLM provider failed (`details.category`). The current answer stays.",
        504: "The LLM provider did not answer within `LLM_TIMEOUT_S`. The current answer stays.",
    },
)
REGENERATE_DESCRIPTION = (
    "Asks the LLM again for the answer of message `seq`, which must be the session's last "
    "message and an assistant's, with the context it was answered from (the history before "
    "it, chosen as for a reply). The new answer becomes the message's current one (same "
    "`id` and `seq`, `versions` one more); the one it replaces is kept as an earlier "
    "version (`GET .../messages/{seq}/versions/`), with the context it was generated from. "
    "Nothing is stored until the model has answered; the database is never locked while it "
    "talks. Two regenerates at once both keep their answer: the later one to finish is "
    "current. The `replies` rate limit applies."
)


@extend_schema(parameters=[session_id_parameter, seq_parameter])
class RegenerateView(ReplyingView):
    @extend_schema(
        operation_id="messages_regenerate",
        summary="Regenerate the last answer",
        description=REGENERATE_DESCRIPTION + "\n\nThe answer is JSON, once complete; to "
        "receive it as it is generated, use `POST .../messages/{seq}/regenerate/stream/`.",
        tags=[Tags.REPLIES],
        request=RegenerateInputSerializer,
        responses={
            201: OpenApiResponse(RegenerateSerializer, "The message with its new answer."),
            **REGENERATE_ERRORS,
        },
        examples=[schema.REGENERATE_REQUEST, schema.REGENERATED],
    )
    @idempotent(atomic=False)  # never atomic: no transaction may span the LLM call
    def post(
        self, request: Request, session_id: str, seq: int, checkpoint: Checkpoint | None
    ) -> Response:
        # No checkpoint: a regenerate stores nothing before the LLM call, so a retry after a
        # failure has nothing to resume.
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        message = selectors.get_message(session=session, seq=seq)
        data = validated(RegenerateInputSerializer, request.data)
        result = branching.regenerate(session=session, message=message, **data)
        body = regenerate_body(message=result.message, context=result.context)
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[session_id_parameter, seq_parameter])
class RegenerateStreamView(ReplyingView):
    @extend_schema(
        operation_id="messages_regenerate_stream",
        summary="Stream a regenerated answer",
        description=REGENERATE_DESCRIPTION + "\n\nThe same request as `POST "
        ".../regenerate/`; the answer is a `text/event-stream` (HTTP 201 once it starts) of "
        "`message.delta` events, then `message.completed` (the message with its new answer) "
        "or `error`, as for `POST .../reply/stream/`. Errors found before the LLM is called "
        "are JSON. A stream cut short stores what arrived as the new answer (`finish_reason` "
        "`interrupted`), the replaced one kept as a version.",
        tags=[Tags.REPLIES],
        request=RegenerateInputSerializer,
        responses={
            (201, "text/event-stream"): OpenApiResponse(
                schema.REPLY_STREAM_BODY,
                "The new answer as server-sent events. " + schema.REPLY_STREAM_DESCRIPTION,
            ),
            **REGENERATE_ERRORS,
        },
        examples=[schema.REGENERATE_REQUEST, *schema.REGENERATE_STREAM_EVENTS],
    )
    @idempotent(atomic=False)
    def post(
        self, request: Request, session_id: str, seq: int, checkpoint: Checkpoint | None
    ) -> StreamingHttpResponse:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        message = selectors.get_message(session=session, seq=seq)
        data = validated(RegenerateInputSerializer, request.data)
        prepared = branching.prepare_regenerate(session=session, message=message, **data)
        return _stream_response(prepared, request, self)


@extend_schema(parameters=[session_id_parameter, seq_parameter])
class EditView(APIView):
    throttle_scope = "replies"

    @extend_schema(
        operation_id="messages_edit",
        summary="Edit a user message (in a new session)",
        description="Nothing is rewritten in place: the answer is a new session, a fork of "
        "this one at `seq - 1` (see `POST .../fork/`) followed by the edited message, and, "
        'with `"reply": true`, the model\'s reply to it there (as `POST .../reply/`). This '
        "session is not changed. Only a `user` message can be edited. The `replies` rate "
        "limit applies. With an `Idempotency-Key`, a retry after a failed reply replies in "
        "the session the first attempt made.",
        tags=[Tags.MESSAGES],
        request=EditInputSerializer,
        responses={
            201: OpenApiResponse(
                EditSerializer, "The new session, the edited message and the reply, if asked."
            ),
            **error_responses(
                404,
                409,
                422,
                429,
                502,
                504,
                descriptions={
                    404: "No such session, or no message at `seq`.",
                    409: "The message is not a user message, or the session is archived; "
                    "or the `Idempotency-Key` is in use or was used for another request.",
                    422: "With `reply`: the edited message does not fit the model's context "
                    "window. The new session stays.",
                    429: "Too many replies, or the LLM provider is rate limiting the engine.",
                    502: "With `reply`: the LLM provider failed. The new session and the "
                    "edited message stay.",
                    504: "With `reply`: the LLM provider did not answer in time. The new "
                    "session and the edited message stay.",
                },
            ),
        },
        examples=[schema.EDIT_REQUEST, schema.EDITED],
    )
    @idempotent(atomic=False)  # never atomic: no transaction may span the LLM call
    def post(
        self, request: Request, session_id: str, seq: int, checkpoint: Checkpoint | None
    ) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        message = selectors.get_message(session=session, seq=seq)
        data = validated(EditInputSerializer, request.data)
        result = branching.edit(session=session, message=message, checkpoint=checkpoint, **data)
        body = edit_body(
            session=result.session, user_message=result.user_message, reply=result.reply
        )
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[session_id_parameter])
class ContextPreviewView(APIView):
    @extend_schema(
        operation_id="sessions_context",
        summary="Preview the context of a reply",
        description="What a reply would send to the LLM now, without calling it or storing "
        "anything: the messages (the `system_prompt` first, then the history chosen to fit "
        "the model's window), their token count against the budget, and what was left out.",
        tags=[Tags.REPLIES],
        parameters=[ContextQuerySerializer],
        responses={
            200: OpenApiResponse(ContextPreviewSerializer, "The context a reply would send."),
            **error_responses(
                400,
                422,
                descriptions={
                    400: "A bad query parameter.",
                    422: "The newest message alone does not fit the model's context window, "
                    "or `max_output_tokens` leaves no room for it.",
                },
            ),
        },
        examples=[schema.CONTEXT_OK],
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        # A plain dict, as for the other query serializers: the lenient QueryDict reading took
        # `?model=` for "absent" where the schema says it is invalid.
        query = validated_query(ContextQuerySerializer, request)
        model = services.resolve_model(session=session, model=query.get("model"))
        context = services.build_context(
            session, model=model, max_output_tokens=query.get("max_output_tokens")
        )
        return Response(context_preview_body(context=context, model=model))
