"""The three endpoints, written the plain way: the ORM, a serializer, `get_object_or_404`."""

from django.db import transaction
from django.db.models import F
from django.shortcuts import get_object_or_404
from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.authentication import TokenAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from bench.plain.models import ChatSession, Message

# Token counts come from chatengine's own counter (tiktoken, OpenAI's chat recipe), so both
# appends do the same counting work; the plain peer would otherwise call tiktoken the same way.
from llm.tokens import counter_for_model

DEFAULT_MODEL = "gpt-4o-mini"
MESSAGE_FIELDS = [
    "id", "session", "seq", "role", "content", "name", "metadata", "token_count",
    "tool_calls", "tool_call_id", "pinned", "model", "usage", "finish_reason", "latency_ms",
    "context", "versions", "created_at",
]  # fmt: skip


class PlainAPIView(APIView):
    # Spelled out rather than read from settings: the plain peer is these classes whatever
    # settings module imported DRF first (the tests run it inside chatengine's).
    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]
    throttle_classes: list = []


class NoopView(PlainAPIView):
    def get(self, request):
        return Response({"ok": True})


class MessageInputSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant", "tool"])
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)
    name = serializers.CharField(required=False, default="", allow_blank=True, max_length=64)
    metadata = serializers.JSONField(required=False, default=dict)


class MessageSerializer(serializers.ModelSerializer):
    session = serializers.UUIDField(source="session_id", read_only=True)

    class Meta:
        model = Message
        fields = MESSAGE_FIELDS


class HistoryQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(required=False, default=50, min_value=1, max_value=200)
    before = serializers.IntegerField(required=False, min_value=1)


class MessageListCreateView(PlainAPIView):
    def get(self, request, session_id):
        """The newest `limit` messages, newest first; `next` continues before the last seq."""
        session = get_object_or_404(ChatSession, pk=session_id, user=request.user)
        query = HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data["limit"]
        rows = Message.objects.filter(session=session)
        if "before" in query.validated_data:
            rows = rows.filter(seq__lt=query.validated_data["before"])
        fields = [f if f != "session" else "session_id" for f in MESSAGE_FIELDS]
        page = list(rows.order_by("-seq").values(*fields)[: limit + 1])
        for row in page:
            row["session"] = row.pop("session_id")
        has_more = len(page) > limit
        page = page[:limit]
        next_url = None
        if has_more:
            next_url = replace_query_param(request.build_absolute_uri(), "before", page[-1]["seq"])
        return Response({"results": page, "next": next_url, "has_more": has_more})

    def post(self, request, session_id):
        data = MessageInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        with transaction.atomic():
            session = get_object_or_404(
                ChatSession.objects.select_for_update(), pk=session_id, user=request.user
            )
            if session.archived:
                return Response({"detail": "Session is archived."}, status=409)
            tokens = counter_for_model(session.model or DEFAULT_MODEL).count_message(
                role=fields["role"], content=fields["content"], name=fields["name"]
            )
            now = timezone.now()
            message = Message.objects.create(
                session=session, seq=session.last_seq + 1, token_count=tokens, **fields
            )
            ChatSession.objects.filter(pk=session.pk).update(
                last_seq=F("last_seq") + 1,
                message_count=F("message_count") + 1,
                total_tokens=F("total_tokens") + tokens,
                last_message_at=now,
                updated_at=now,
            )
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED)
