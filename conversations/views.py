"""The HTTP layer: parse and validate, call one service or selector, serialize."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from conversations import selectors, services
from conversations.idempotency import idempotent
from conversations.selectors import Page
from conversations.serializers import (
    HistoryQuerySerializer,
    MessageCreateInputSerializer,
    MessageSerializer,
    SessionCreateInputSerializer,
    SessionListQuerySerializer,
    SessionSerializer,
    SessionUpdateInputSerializer,
)


def _validated(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def paginated_response(request: Request, page: Page, serializer_class) -> Response:
    """The one list envelope: {"results": [...], "next": absolute URL | null, "has_more"}."""
    next_url = None
    if page.next_params:
        # Keep the caller's other parameters (limit, order, filters); move only the cursor.
        next_url = request.build_absolute_uri()
        for key, value in page.next_params.items():
            next_url = replace_query_param(next_url, key, value)
    return Response(
        {
            "results": serializer_class(page.items, many=True).data,
            "next": next_url,
            "has_more": page.has_more,
        }
    )


class SessionListCreateView(APIView):
    serializer_class = SessionSerializer  # what the OpenAPI schema documents

    @extend_schema(operation_id="sessions_list")  # else it collides with the detail GET
    def get(self, request: Request) -> Response:
        query = _validated(SessionListQuerySerializer, request.query_params)
        page = selectors.list_sessions(user=request.user, **query)
        return paginated_response(request, page, SessionSerializer)

    def post(self, request: Request) -> Response:
        data = _validated(SessionCreateInputSerializer, request.data)
        session = services.create_session(user=request.user, **data)
        return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


class SessionDetailView(APIView):
    serializer_class = SessionSerializer

    def get(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        return Response(SessionSerializer(session).data)

    def patch(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        changes = _validated(SessionUpdateInputSerializer, request.data)
        session = services.update_session(session=session, **changes)
        return Response(SessionSerializer(session).data)

    def delete(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        services.delete_session(session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MessageListCreateView(APIView):
    serializer_class = MessageSerializer

    def get(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        query = _validated(HistoryQuerySerializer, request.query_params)
        page = selectors.list_messages(session=session, **query)
        return paginated_response(request, page, MessageSerializer)

    @idempotent(atomic=True)
    def post(self, request: Request, session_id: str) -> Response:
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        data = _validated(MessageCreateInputSerializer, request.data)
        message = services.append_message(session=session, **data)
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED)
