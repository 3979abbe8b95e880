"""The HTTP edge of the API: either URL spelling, chunked bodies, long echoed values, and the
envelope in DEBUG mode. Live-server (gunicorn, uvicorn) checks: tests/reliability/test_http_edge.py.
"""

import re

import pytest
from django.http import HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, include, path, resolve
from django.urls.exceptions import Resolver404

from chatengine import routing
from chatengine.routing import API_PREFIXES, either_slash
from chatengine.text import ELLIPSIS, MAX_QUOTED_CHARS
from conversations.models import ChatSession, Message
from conversations.tests.factories import ChatSessionFactory
from tests.reliability.conftest import envelope


def _view(request, **kwargs):
    return HttpResponse("ok")


class _RaisesOnApiPaths:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raise RuntimeError("middleware internals")


# A URLconf as another engineer might extend the root one: a route without trailing slash
# under /v1/, an included module under /api/, and a non-API route.
urlpatterns = either_slash(
    [
        path("healthz", _view, name="probe"),
        path("v1/chat/completions", _view, name="completions"),
        path("api/v1/", include([path("tokens/", _view, name="tokens")])),
        path("v1/", include([path("", _view, name="v1-root")])),
    ]
)


def api_routes(patterns=None, prefix: str = "") -> list[tuple[str, str]]:
    """(route template, view name) of every endpoint under an API prefix in the root URLconf."""
    found = []
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            found += api_routes(entry.url_patterns, route)
        elif (
            isinstance(entry, URLPattern)
            and route.startswith(API_PREFIXES)
            and entry.name not in routing._CATCH_ALL_NAMES  # no spelling: it takes every path
        ):
            found.append((route, entry.name))
    return found


def sample_path(route: str) -> str:
    # An `int` part (a message's seq) takes a number, any other part "x".
    return "/" + re.sub(r"<(?:\w+:)?\w+>", "x", re.sub(r"<int:\w+>", "1", route))


class TestEitherSpelling:
    def test_every_api_route_answers_with_and_without_its_trailing_slash(self):
        routes = api_routes()
        assert len(routes) >= 7, routes  # sessions, messages, reply, context, schema, docs...
        for route, name in routes:
            spelled = sample_path(route)
            other = spelled[:-1] if spelled.endswith("/") else spelled + "/"
            assert resolve(spelled).view_name == name, route
            assert resolve(other).view_name == name, route
            assert resolve(other).route == route  # logs and metrics keep the template

    @pytest.mark.urls("chatengine.tests.test_http_edge")
    def test_a_route_added_later_gets_either_spelling_without_being_marked(self):
        assert resolve("/v1/chat/completions/").url_name == "completions"
        assert resolve("/v1/chat/completions").url_name == "completions"
        assert resolve("/api/v1/tokens").url_name == "tokens"
        assert resolve("/v1").url_name == "v1-root"

    @pytest.mark.urls("chatengine.tests.test_http_edge")
    def test_routes_outside_the_api_keep_their_one_spelling(self):
        assert resolve("/healthz").url_name == "probe"
        with pytest.raises(Resolver404):
            resolve("/healthz/")

    def test_the_openapi_document_keeps_one_spelling(self, api_client):
        paths = api_client.get("/api/schema/?format=json").json()["paths"]
        assert paths
        for documented in paths:
            other = documented[:-1] if documented.endswith("/") else documented + "/"
            assert other not in paths


@pytest.mark.django_db
class TestWritesWithoutTheSlash:
    def test_a_post_without_the_trailing_slash_stores_the_message(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        response = auth_client.post(
            f"/api/v1/sessions/{session.pk}/messages",
            {"role": "user", "content": "kept"},
            format="json",
        )
        assert response.status_code == 201, response.content
        assert list(Message.objects.values_list("content", flat=True)) == ["kept"]

    def test_a_patch_without_the_trailing_slash_changes_the_session(self, auth_client, user):
        session = ChatSessionFactory(user=user, title="before")
        response = auth_client.patch(
            f"/api/v1/sessions/{session.pk}", {"title": "after"}, format="json"
        )
        assert response.status_code == 200, response.content
        assert ChatSession.objects.get(pk=session.pk).title == "after"

    def test_a_list_with_a_slash_added_is_the_same_list(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        with_slash = auth_client.get(f"/api/v1/sessions/{session.pk}/messages/")
        without = auth_client.get(f"/api/v1/sessions/{session.pk}/messages")
        assert with_slash.status_code == without.status_code == 200
        assert with_slash.json() == without.json()

    @pytest.mark.parametrize("debug", [False, True])
    def test_an_unknown_api_path_is_the_404_envelope_never_a_redirect(
        self, auth_client, settings, debug
    ):
        settings.DEBUG = debug
        for method in ("get", "post", "patch"):
            response = getattr(auth_client, method)("/api/v1/nothing-here")
            envelope(response, 404, "not_found")


@pytest.mark.django_db
class TestChunkedBodies:
    def test_a_chunked_body_is_411_length_required_and_stores_nothing(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        response = auth_client.post(
            f"/api/v1/sessions/{session.pk}/messages/",
            {"role": "user", "content": "hi"},
            format="json",
            HTTP_TRANSFER_ENCODING="chunked",
        )
        error = envelope(response, 411, "length_required")
        assert "Content-Length" in error["message"]
        assert not Message.objects.exists()


@pytest.mark.django_db
class TestLongValuesAreShortened:
    LONG = "r" * 2_000_000

    def test_a_huge_invalid_role_is_quoted_shortened_in_the_body_and_the_logs(
        self, auth_client, user, json_logs
    ):
        session = ChatSessionFactory(user=user)
        response = auth_client.post(
            f"/api/v1/sessions/{session.pk}/messages/",
            {"role": self.LONG, "content": "hi"},
            format="json",
        )
        error = envelope(response, 400, "validation_error")
        assert len(response.content) < 2_000
        assert error["message"].startswith('role: "rrrr')
        assert ELLIPSIS in error["message"]
        assert error["message"].endswith("is not a valid choice.")  # what is wrong survives
        assert len(error["message"]) == MAX_QUOTED_CHARS
        (problem,) = error["details"]["role"]
        assert len(problem) == MAX_QUOTED_CHARS
        assert json_logs.one(logger="chatengine.errors")["error_type"] == "validation_error"
        assert max(len(line) for line in json_logs.text.splitlines()) < 2_000

    def test_a_huge_unknown_field_name_is_shortened(self, auth_client):
        response = auth_client.post("/api/v1/sessions/", {self.LONG: 1}, format="json")
        error = envelope(response, 400, "validation_error")
        (key,) = error["details"]
        assert len(key) == MAX_QUOTED_CHARS
        assert len(response.content) < 2_000

    def test_a_huge_unknown_path_is_shortened_in_the_access_line(self, auth_client, json_logs):
        auth_client.get("/api/v1/" + "p" * 50_000)
        access = json_logs.one(logger="chatengine.access")
        assert len(access["path"]) == MAX_QUOTED_CHARS
        assert access["path"].startswith("/api/v1/ppp")


@pytest.mark.django_db
class TestEnvelopeInDebugMode:
    @pytest.fixture(autouse=True)
    def _debug(self, settings):
        settings.DEBUG = True

    def test_an_unknown_api_url_is_the_404_envelope_not_the_debug_page(self, auth_client):
        response = auth_client.get("/api/v1/nothing-here/")
        envelope(response, 404, "not_found")
        assert response["Content-Type"] == "application/json"

    def test_an_error_raised_before_the_view_is_the_envelope_not_the_debug_page(self, auth_client):
        # DisallowedHost, raised in CommonMiddleware: Django's DEBUG page would be HTML.
        response = auth_client.get("/api/v1/sessions/", HTTP_HOST="evil.example")
        envelope(response, 400, "validation_error")

    def test_an_exception_outside_a_view_is_the_500_envelope_logged_with_its_traceback(
        self, settings, json_logs
    ):
        settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}._RaisesOnApiPaths"]
        response = Client(raise_request_exception=False).get("/api/v1/sessions/")
        envelope(response, 500, "internal_error")
        line = json_logs.one(logger="chatengine.errors")
        assert "RuntimeError: middleware internals" in line["exc_info"]

    def test_the_browsable_api_still_renders_its_html_errors(self, api_client):
        response = api_client.get("/api/v1/sessions/", HTTP_ACCEPT="text/html")
        assert response.status_code == 401
        assert response["Content-Type"].startswith("text/html")


def test_a_catch_all_route_never_shadows_the_other_spelling_of_a_real_one():
    # /v1/ has a catch-all (OpenAI's 404); the slashed spelling still reaches the real route.
    assert resolve("/v1/conversations/").url_name == "openai-conversations"
    assert resolve("/v1/responses/input_tokens/").url_name == "openai-input-tokens"
    assert resolve("/v1/nothing-here").url_name == "openai-not-found"
