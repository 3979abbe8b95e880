"""Every error, whatever raised it, is the one envelope with the right status."""

import logging

import pytest
from django.urls import path
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from chatengine import exceptions

SESSIONS = "/api/v1/sessions/"


class _Boom(APIView):
    def get(self, request):
        raise RuntimeError("secret internals /etc/passwd")


class _OneAMinute(UserRateThrottle):
    rate = "1/min"
    scope = "test"


class _Throttled(APIView):
    throttle_classes = [_OneAMinute]

    def get(self, request):
        return Response({"ok": True})


class _Overflow(APIView):
    def get(self, request):
        raise exceptions.ContextOverflow("Too long by 12 tokens.", details={"overflow_tokens": 12})


class _Forbidden(APIView):
    def get(self, request):
        from django.core.exceptions import PermissionDenied

        raise PermissionDenied


urlpatterns = [
    path("boom/", _Boom.as_view()),
    path("throttled/", _Throttled.as_view()),
    path("overflow/", _Overflow.as_view()),
    path("forbidden/", _Forbidden.as_view()),
]
handler404 = "chatengine.exceptions.page_not_found"
handler500 = "chatengine.exceptions.server_error"


def envelope(response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    assert list(body["error"]) == ["type", "message", "details", "request_id"]
    assert body["error"]["type"] == error_type
    assert body["error"]["request_id"] == response["X-Request-ID"]
    return body["error"]


@pytest.mark.django_db
class TestRequestBodyErrors:
    def test_malformed_json_is_a_validation_error_naming_the_problem(self, auth_client):
        response = auth_client.post(SESSIONS, data='{"title": ', content_type="application/json")
        error = envelope(response, 400, "validation_error")
        assert "JSON" in error["message"]

    def test_a_wrong_content_type_is_a_validation_error_naming_the_problem(self, auth_client):
        response = auth_client.post(SESSIONS, data="title=x", content_type="text/plain")
        error = envelope(response, 400, "validation_error")
        assert "text/plain" in error["message"]
        assert "application/json" in error["message"]

    def test_a_list_body_is_a_validation_error(self, auth_client):
        response = auth_client.post(SESSIONS, data="[1, 2]", content_type="application/json")
        error = envelope(response, 400, "validation_error")
        assert "dictionary" in error["message"]
        assert "list" in error["message"]


@pytest.mark.django_db
class TestStatusTypes:
    def test_unauthenticated_is_401(self, api_client):
        envelope(api_client.get(SESSIONS), 401, "authentication_error")

    def test_unknown_url_is_404_envelope(self, auth_client):
        envelope(auth_client.get("/api/v1/nothing-here/"), 404, "not_found")

    def test_non_uuid_session_id_is_404(self, auth_client):
        envelope(auth_client.get(f"{SESSIONS}12345/"), 404, "not_found")
        envelope(auth_client.get(f"{SESSIONS}12345/messages/"), 404, "not_found")

    @pytest.mark.urls("chatengine.tests.test_errors")
    def test_permission_denied_is_403(self, auth_client):
        envelope(auth_client.get("/forbidden/"), 403, "permission_error")

    @pytest.mark.urls("chatengine.tests.test_errors")
    def test_throttled_is_429_with_retry_after(self, auth_client):
        assert auth_client.get("/throttled/").status_code == 200
        response = auth_client.get("/throttled/")
        envelope(response, 429, "rate_limited")
        assert 0 < int(response["Retry-After"]) <= 60

    @pytest.mark.urls("chatengine.tests.test_errors")
    def test_domain_errors_keep_their_type_and_details(self, auth_client):
        error = envelope(auth_client.get("/overflow/"), 422, "context_overflow")
        assert error["details"] == {"overflow_tokens": 12}
        assert error["message"] == "Too long by 12 tokens."

    @pytest.mark.urls("chatengine.tests.test_errors")
    def test_an_unexpected_exception_is_a_500_without_internals(self, auth_client, caplog):
        with caplog.at_level(logging.ERROR, logger="chatengine.errors"):
            response = envelope(auth_client.get("/boom/"), 500, "internal_error")
        assert "secret" not in str(response)
        assert "Traceback" not in str(response)
        assert any(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in caplog.records)

    def test_csrf_failure_is_a_403_envelope(self, user):
        from rest_framework.test import APIClient

        client = APIClient(enforce_csrf_checks=True)
        client.force_login(user)
        envelope(client.post(SESSIONS, {}, format="json"), 403, "permission_error")


@pytest.mark.django_db
class TestRequestId:
    def test_a_request_id_is_generated(self, auth_client):
        response = auth_client.get(SESSIONS)
        assert len(response["X-Request-ID"]) == 32

    def test_the_callers_request_id_is_echoed(self, auth_client):
        response = auth_client.get(f"{SESSIONS}nope/", HTTP_X_REQUEST_ID="abc-123")
        assert response["X-Request-ID"] == "abc-123"
        assert response.json()["error"]["request_id"] == "abc-123"

    def test_an_unsafe_request_id_is_replaced(self, auth_client):
        response = auth_client.get(SESSIONS, HTTP_X_REQUEST_ID="<script>" + "x" * 300)
        assert response["X-Request-ID"] != "<script>" + "x" * 300
        assert len(response["X-Request-ID"]) == 32


@pytest.mark.django_db
def test_a_body_over_the_upload_limit_is_413_envelope(auth_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = '{"title": "' + "x" * 2000 + '"}'
    response = auth_client.post(SESSIONS, data=body, content_type="application/json")
    envelope(response, 413, "request_too_large")
