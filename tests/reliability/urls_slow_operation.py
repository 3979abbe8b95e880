"""A test-only URL conf: an `@idempotent(atomic=False)` view, the mode an LLM reply uses.

The view appends a message, then waits for `GATE` (a threading.Event the test sets), so a
test can hold it "in progress" for as long as it needs without guessing a duration.
"""

import threading

from django.urls import include, path
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from chatengine.exceptions import LLMUpstreamError
from conversations import selectors, services
from conversations.idempotency import idempotent
from conversations.serializers import MessageSerializer

GATE = threading.Event()
ENTERED = threading.Event()


class SlowReplyView(APIView):
    @idempotent(atomic=False)
    def post(self, request, session_id, checkpoint):
        session = selectors.get_session_for_user(user=request.user, session_id=session_id)
        if request.data.get("fail"):
            raise LLMUpstreamError("the provider failed")
        message = services.append_message(
            session=session, role="assistant", content=request.data["content"]
        )
        ENTERED.set()
        GATE.wait(timeout=30)
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED)


urlpatterns = [
    path("api/v1/", include("conversations.urls")),
    path("api/v1/sessions/<str:session_id>/slow-reply/", SlowReplyView.as_view()),
]
