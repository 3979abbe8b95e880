"""The HTTP layer: parse and validate, call one service or selector, serialize.

Each operation is documented with `@extend_schema` (chatengine/openapi.py has the shared parts;
conversations/schema.py the examples).
"""

from drf_spectacular.utils import (
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from chatengine.openapi import (
    Tags,
    error_responses,
    paginated,
    seq_parameter,
    session_id_parameter,
)
from chatengine.renderers import JSONFragments
from chatengine.validation import validated, validated_query
from conversations import branching, schema, search, selectors, services
from conversations.idempotency import idempotent
from conversations.selectors import Page
from conversations.serializers import (
    MESSAGE_INPUT_VARIANTS,
    ForkInputSerializer,
    ForksQuerySerializer,
    HistoryQuerySerializer,
    MessageCreateInputSerializer,
    MessageSerializer,
    MessageUpdateInputSerializer,
    MessageVersionSerializer,
    SearchHitSerializer,
    SearchQuerySerializer,
    SessionCreateInputSerializer,
    SessionListQuerySerializer,
    SessionSerializer,
    SessionUpdateInputSerializer,
    SummaryListQuerySerializer,
    SummarySerializer,
    VersionsQuerySerializer,
)


def paginated_response(request: Request, page: Page, serializer_class=None) -> Response:
    """The one list envelope: {"results": [...], "next": absolute URL | null, "has_more"}.

    Without `serializer_class`, the page's items are already JSON (bytes) and go out as they are.
    """
    next_url = None
    if page.next_params:
        # Keep the caller's other parameters (limit, order, filters); move only the cursor.
        next_url = request.build_absolute_uri()
        for key, value in page.next_params.items():
            next_url = replace_query_param(next_url, key, value)
    return Response(
        {
            "results": (
                serializer_class(page.items, many=True).data
                if serializer_class is not None
                else JSONFragments(page.items)
            ),
            "next": next_url,
            "has_more": page.has_more,
        }
    )


class SessionListCreateView(APIView):
    @extend_schema(
        operation_id="sessions_list",
        summary="List your sessions",
        description="Your sessions, most recent activity first, one keyset page at a time. "
        "Follow `next` until it is null; `cursor` is opaque (only values from `next` are valid, "
        "anything else answers 400).",
        tags=[Tags.SESSIONS],
        parameters=[SessionListQuerySerializer],
        responses={
            200: OpenApiResponse(paginated(SessionSerializer), "A page of your sessions."),
            **error_responses(400),
        },
        examples=[schema.SESSION_PAGE],
    )
    def get(self, request: Request) -> Response:
        query = validated_query(SessionListQuerySerializer, request)
        page = selectors.list_sessions(user=request.user, **query)
        return paginated_response(request, page, SessionSerializer)

    @extend_schema(
        operation_id="sessions_create",
        summary="Create a session",
        description="An empty session owned by you. Every field is optional; unknown fields "
        "and values of the wrong JSON type are rejected.",
        tags=[Tags.SESSIONS],
        request=SessionCreateInputSerializer,
        responses={201: OpenApiResponse(SessionSerializer, "The new session.")},
        examples=[schema.SESSION_CREATE_REQUEST, schema.SESSION_CREATED],
    )
    def post(self, request: Request) -> Response:
        data = validated(SessionCreateInputSerializer, request.data)
        session = services.create_session(user=request.user, **data)
        return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[session_id_parameter])
class SessionDetailView(APIView):
    @extend_schema(
        operation_id="sessions_retrieve",
        summary="Get a session",
        description="One of your sessions, with its counters.",
        tags=[Tags.SESSIONS],
        responses={200: OpenApiResponse(SessionSerializer, "The session.")},
        examples=[schema.SESSION_OK],
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        return Response(SessionSerializer(session).data)

    @extend_schema(
        operation_id="sessions_partial_update",
        summary="Change a session",
        description="Change any of `title`, `system_prompt`, `model`, `context_strategy`, "
        "`metadata` (replaced whole) and `archived`; fields you leave out keep their value. "
        "An archived session refuses new messages until it is unarchived. `PUT` is not "
        "supported (405).",
        tags=[Tags.SESSIONS],
        request=SessionUpdateInputSerializer,
        responses={200: OpenApiResponse(SessionSerializer, "The session as changed.")},
        examples=[schema.SESSION_UPDATE_REQUEST, schema.SESSION_UPDATED],
    )
    def patch(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        changes = validated(SessionUpdateInputSerializer, request.data)
        session = services.update_session(session=session, **changes)
        return Response(SessionSerializer(session).data)

    @extend_schema(
        operation_id="sessions_destroy",
        summary="Delete a session",
        description="Deletes the session and all its messages, for good. No response body.",
        tags=[Tags.SESSIONS],
        responses={204: OpenApiResponse(None, "Deleted; no body.")},
    )
    def delete(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        services.delete_session(session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(parameters=[session_id_parameter])
class MessageListCreateView(APIView):
    @extend_schema(
        operation_id="messages_list",
        summary="Read a session's history",
        description="Messages by `seq` (1, 2, 3… with no gap), oldest first by default. "
        "Continue with `next`: ascending pages move `after=<last seq>`, descending ones "
        "`before=<last seq>`, so a walk sees every message exactly once even while new "
        "ones are appended.",
        tags=[Tags.MESSAGES],
        parameters=[HistoryQuerySerializer],
        responses={
            200: OpenApiResponse(paginated(MessageSerializer), "A page of history."),
            **error_responses(400),
        },
        examples=[schema.MESSAGE_PAGE],
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        query = validated_query(HistoryQuerySerializer, request)
        page = selectors.list_messages_rendered(session=session, **query)
        return paginated_response(request, page)

    @extend_schema(
        operation_id="messages_create",
        summary="Append a message",
        description="Stores the message at the session's next `seq`, exactly as sent "
        "(whitespace included), and updates the session's counters. It does not ask the "
        "LLM for a reply (that is `POST .../reply/`).\n\n"
        "The body's shape depends on `role` (one schema per role):\n\n"
        "- `content` may be blank only for an `assistant` message that carries `tool_calls`;\n"
        "- only an `assistant` message may carry `tool_calls` (OpenAI chat format, 1 to 128 "
        "calls with distinct `id`s);\n"
        "- a `tool` message must carry `tool_call_id` (the call it answers), and no other "
        "role may.",
        tags=[Tags.MESSAGES],
        request=PolymorphicProxySerializer(
            component_name="MessageCreateInput",
            serializers=MESSAGE_INPUT_VARIANTS,
            resource_type_field_name=None,
        ),
        responses={
            201: OpenApiResponse(MessageSerializer, "The stored message, with its `seq`."),
            **error_responses(409, descriptions={409: "The session is archived."}),
        },
        examples=[
            schema.MESSAGE_CREATE_REQUEST,
            schema.TOOL_CALL_REQUEST,
            schema.TOOL_RESULT_REQUEST,
            schema.MESSAGE_CREATED,
        ],
    )
    @idempotent(atomic=True)
    def post(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        data = validated(MessageCreateInputSerializer, request.data)
        message = services.append_message(session=session, **data)
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED)


class SearchView(APIView):
    @extend_schema(
        operation_id="search",
        summary="Search your messages",
        description="Your messages and session titles that match `q`, best first, each with "
        "a highlighted snippet, one keyset page at a time (follow `next`).\n\n"
        "On PostgreSQL: full-text search (`CHATENGINE_SEARCH_CONFIG`, `simple` by default: "
        "whole words, any language), ranked by `ts_rank`. Words must all match; "
        '`"exact phrase"` matches the words in that order, `word*` any word starting so, '
        "`-word` excludes. A `q` with nothing searchable left (only punctuation or "
        "exclusions) is a 400.\n\n"
        "On SQLite (the development default): a case-insensitive substring match with the "
        "same parameters; every hit has rank 0, newest first.",
        tags=[Tags.SEARCH],
        parameters=[SearchQuerySerializer],
        responses={
            200: OpenApiResponse(paginated(SearchHitSerializer), "A page of hits."),
            **error_responses(400, 404),
        },
        examples=[schema.SEARCH_PAGE],
    )
    def get(self, request: Request) -> Response:
        query = validated_query(SearchQuerySerializer, request)
        if "session" in query:
            query["session"] = selectors.get_session_for_user(
                user=request.user, session_id=query["session"]
            )
        page = search.search(user=request.user, **query)
        return paginated_response(request, page, SearchHitSerializer)


# --- Branching ----------------------------------------------------------------------------
@extend_schema(parameters=[session_id_parameter])
class ForkView(APIView):
    @extend_schema(
        operation_id="sessions_fork",
        summary="Fork a session",
        description="A new session of yours holding copies of this session's messages "
        "1..`at_seq` (same roles, contents, token counts and reply fields; new ids; `seq` "
        "1..`at_seq`, each with its current answer only) and its `system_prompt`, `model`, "
        "`metadata` and `context_strategy` (each copy keeps `pinned`). It records "
        "`forked_from` and `forked_at_seq`; this session is not changed. "
        "An archived session may be forked (the fork is not archived).",
        tags=[Tags.SESSIONS],
        request=ForkInputSerializer,
        responses={
            201: OpenApiResponse(SessionSerializer, "The new session."),
            **error_responses(
                404,
                409,
                descriptions={
                    404: "No such session, or `at_seq` is past its last message.",
                    409: "The `Idempotency-Key` was used for another request, or is in use.",
                },
            ),
        },
        examples=[schema.FORK_REQUEST, schema.FORK_CREATED],
    )
    @idempotent(atomic=True)
    def post(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        data = validated(ForkInputSerializer, request.data)
        fork = branching.fork_session(session=session, **data)
        return Response(SessionSerializer(fork).data, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[session_id_parameter])
class ForkListView(APIView):
    @extend_schema(
        operation_id="sessions_forks",
        summary="List a session's forks",
        description="The sessions forked from this one (by a fork or an edit), most recent "
        "activity first, one keyset page at a time. Follow `next` until it is null.",
        tags=[Tags.SESSIONS],
        parameters=[ForksQuerySerializer],
        responses={
            200: OpenApiResponse(paginated(SessionSerializer), "A page of forks."),
            **error_responses(400),
        },
        examples=[schema.FORK_PAGE],
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        query = validated_query(ForksQuerySerializer, request)
        page = selectors.list_sessions(user=request.user, forked_from=session, **query)
        return paginated_response(request, page, SessionSerializer)


@extend_schema(parameters=[session_id_parameter, seq_parameter])
class MessageVersionListView(APIView):
    @extend_schema(
        operation_id="messages_versions",
        summary="List a message's versions",
        description="Every answer that has stood at this `seq`, oldest first: the ones a "
        "regenerate replaced (kept, never deleted), then the current one (`current: true`). "
        "A message never regenerated has one version, itself. Each keeps what it was "
        "generated from (`context`).",
        tags=[Tags.MESSAGES],
        parameters=[VersionsQuerySerializer],
        responses={
            200: OpenApiResponse(paginated(MessageVersionSerializer), "A page of versions."),
            **error_responses(400),
        },
        examples=[schema.VERSION_PAGE],
    )
    def get(self, request: Request, session_id: str, seq: int) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        message = selectors.get_message(session=session, seq=seq)
        query = validated_query(VersionsQuerySerializer, request)
        page = selectors.list_message_versions(message=message, **query)
        return paginated_response(request, page, MessageVersionSerializer)


@extend_schema(parameters=[session_id_parameter])
class SummaryListView(APIView):
    @extend_schema(
        operation_id="summaries_list",
        summary="List a session's rolling summaries",
        description="The summaries a `summary`-strategy session made of the messages that "
        "left its context window, oldest range first. Each stands for messages "
        "1..`covers_to_seq` and folded the one before it plus messages "
        "`covers_from_seq`..`covers_to_seq`, so their ranges tile the history with no gap "
        "or overlap. The messages themselves are never changed.",
        tags=[Tags.MESSAGES],
        parameters=[SummaryListQuerySerializer],
        responses={
            200: OpenApiResponse(paginated(SummarySerializer), "A page of summaries."),
            **error_responses(400),
        },
        examples=[schema.SUMMARY_PAGE],
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        query = validated_query(SummaryListQuerySerializer, request)
        page = selectors.list_summaries(session=session, **query)
        return paginated_response(request, page, SummarySerializer)


@extend_schema(parameters=[session_id_parameter, seq_parameter])
class MessageDetailView(APIView):
    @extend_schema(
        operation_id="messages_retrieve",
        summary="Get a message",
        description="One message of your session, by its `seq`.",
        tags=[Tags.MESSAGES],
        responses={200: OpenApiResponse(MessageSerializer, "The message.")},
        examples=[schema.MESSAGE_OK],
    )
    def get(self, request: Request, session_id: str, seq: int) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        message = selectors.get_message(session=session, seq=seq)
        return Response(MessageSerializer(message).data)

    @extend_schema(
        operation_id="messages_partial_update",
        summary="Pin or unpin a message",
        description="`pinned: true` keeps the message in every context the session's replies "
        "send, like a system message: the budget counts it first, and the `summary` strategy "
        "never folds it. If the pinned messages no longer fit, a reply is a 422 "
        "`context_overflow` saying so. Nothing else of a message can be changed.",
        tags=[Tags.MESSAGES],
        request=MessageUpdateInputSerializer,
        responses={200: OpenApiResponse(MessageSerializer, "The message as changed.")},
        examples=[schema.MESSAGE_PIN_REQUEST, schema.MESSAGE_OK],
    )
    def patch(self, request: Request, session_id: str, seq: int) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        # Found first: another user's message is a 404 whatever the body.
        message = selectors.get_message(session=session, seq=seq)
        data = validated(MessageUpdateInputSerializer, request.data)
        if "pinned" in data:
            message = services.set_message_pinned(message=message, pinned=data["pinned"])
        return Response(MessageSerializer(message).data)
