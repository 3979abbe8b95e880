"""User B can never see or change user A's data, on any endpoint, with any method.

The matrix is generated from the URL conf: every API route, every HTTP method its view
implements, every way of putting A's ids into its URL. A route added later (reply, context,
export) is covered without editing this file; one whose URL takes an id this file does not
know how to fill makes `test_every_id_in_every_api_route_can_be_filled` fail.
"""

import itertools
import re
from dataclasses import dataclass

import pytest
from django.apps import apps
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from accounts import services as token_services
from accounts.models import ApiToken
from conversations.models import ChatSession, Message
from conversations.tests.factories import ChatSessionFactory, MessageFactory, UserFactory
from openai_api import ids as openai_ids
from tests.reliability.conftest import client_for, envelope

SECRET = "A-SECRET-7c1e93"  # in every text field of A's data; fixed so test ids are stable

# How to fill each kind of id a route can take, from one user's `Owned` data. A route with an
# id not listed here cannot be exercised, and the completeness test says so.
ID_SOURCES = {
    "session_id": lambda owned: owned.session.pk,
    "message_id": lambda owned: owned.message.pk,
    # A position in the owner's session: A's is past B's last message, so B's session with A's
    # seq is a 404 too (the same seq in B's own session would be B's message).
    "seq": lambda owned: owned.message.seq,
    "token_id": lambda owned: owned.token.pk,
    # The OpenAI-compatible facade (/v1/): the same rows under OpenAI's ids.
    "conversation_id": lambda owned: openai_ids.conversation_id(owned.session.pk),
    "item_id": lambda owned: openai_ids.message_id(owned.message.pk),
    "response_id": lambda owned: openai_ids.response_id(owned.asked.pk),
}
# A minimal body per method, valid for the message and session endpoints.
BODIES = {
    "post": {"role": "user", "content": "isolation probe"},
    "put": {"title": "isolation probe"},
    "patch": {"title": "isolation probe"},
}
# Views whose POST takes another body (a reply takes content, not a role).
VIEW_BODIES = {
    "ReplyView": {"post": {"content": "isolation probe"}},
    "ConversationDetailView": {"post": {"metadata": {"k": "isolation probe"}}},
    "ItemListCreateView": {"post": {"items": [{"role": "user", "content": "isolation probe"}]}},
    "ForkView": {"post": {"at_seq": 1}},
    "EditView": {"post": {"content": "isolation probe"}},
    "RegenerateView": {"post": {}},
    "RegenerateStreamView": {"post": {}},
    "MessageDetailView": {"patch": {"pinned": True}},
}
# The owner's probe message is the last assistant answer (what a regenerate takes): an edit of
# it is refused for its role, once the session and the seq were found.
OWNER_STATUS = {"EditView": 409}
_PLACEHOLDER = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")


@dataclass(frozen=True)
class Route:
    template: str  # "api/v1/sessions/<str:session_id>/messages/"
    view_class: type
    kwargs: tuple[str, ...]
    is_regex: bool

    @property
    def methods(self) -> list[str]:
        names = [m for m in self.view_class.http_method_names if hasattr(self.view_class, m)]
        # OPTIONS describes the endpoint and reads no object: checked separately below.
        names = [m for m in names if m != "options"]
        if "get" in names and "head" not in names:
            names.append("head")
        return names

    @property
    def is_public(self) -> bool:
        return AllowAny in self.view_class.permission_classes

    def url(self, values: dict[str, object]) -> str:
        return "/" + _PLACEHOLDER.sub(lambda m: str(values[m["name"]]), self.template)


def api_routes() -> list[Route]:
    found: list[Route] = []

    def walk(patterns, prefix: str, regex: bool) -> None:
        for entry in patterns:
            text = str(entry.pattern)
            is_regex = regex or not hasattr(entry.pattern, "converters")
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + text, is_regex)
            elif isinstance(entry, URLPattern):
                view_class = getattr(entry.callback, "view_class", None) or getattr(
                    entry.callback, "cls", None
                )
                if view_class is None or not issubclass(view_class, APIView):
                    continue  # the admin and plain Django views: see test_security.py
                template = prefix + text
                names = tuple(m["name"] for m in _PLACEHOLDER.finditer(template))
                if is_regex:
                    names = tuple(re.compile(template).groupindex)
                found.append(Route(template, view_class, names, is_regex))

    walk(get_resolver().url_patterns, "", False)
    return found


ROUTES = api_routes()
ID_ROUTES = [r for r in ROUTES if r.kwargs]


def matrix():
    """(route, method, which kwargs get A's ids): every non-empty subset gets A's, rest B's."""
    cases = []
    for route in ID_ROUTES:
        subsets = [
            set(c)
            for n in range(1, len(route.kwargs) + 1)
            for c in itertools.combinations(route.kwargs, n)
        ]
        for method in route.methods:
            for foreign in subsets:
                label = ",".join(sorted(foreign))
                cases.append(
                    pytest.param(
                        route,
                        method,
                        frozenset(foreign),
                        id=f"{method.upper()} /{route.template} A:{label}",
                    )
                )
    return cases


@dataclass
class Owned:
    user: object
    session: ChatSession
    message: Message
    token: ApiToken
    asked: Message  # the message `message` replied to (a /v1/ response is named after it)


def owned_data(user, marker: str, *, exchanges: int = 1) -> Owned:
    session = ChatSessionFactory(
        user=user, title=f"{marker} title", system_prompt=f"{marker} prompt", metadata={"k": marker}
    )
    for _ in range(exchanges):
        asked = MessageFactory(session=session, content=f"{marker} first")
        message = MessageFactory(
            session=session,
            content=f"{marker} second",
            role="assistant",
            context={"first_seq": asked.seq, "last_seq": asked.seq, "tokens": 10},
        )
    ChatSessionFactory(user=user, title=f"{marker} archived", archived=True)
    token, _ = token_services.create_token(user=user, name=f"{marker} token")
    return Owned(user=user, session=session, message=message, token=token, asked=asked)


@pytest.fixture
def alice(db):
    return owned_data(UserFactory(), SECRET, exchanges=2)


@pytest.fixture
def bob(db):
    return owned_data(UserFactory(), "bob")


def database_snapshot() -> dict:
    """Every row of every chatengine model: B's failed attempts must change none of them."""
    snapshot = {}
    for label in ("conversations", "llm", "accounts"):
        for model in apps.get_app_config(label).get_models():
            snapshot[model._meta.label] = list(model.objects.order_by("pk").values())
    # The caller's own key records its use; that is not a change to anyone's data.
    for row in snapshot[ApiToken._meta.label]:
        row.pop("last_used_at")
    return snapshot


def error(route: Route, response, status: int, error_type: str) -> None:
    """The error in the shape of the route's API: /v1/ answers OpenAI's (issue 16)."""
    if not route.template.startswith("v1/"):
        envelope(response, status, error_type)
        return
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == error_type, body


def url_for(route: Route, foreign: frozenset, alice: Owned, bob: Owned) -> str:
    values = {name: ID_SOURCES[name](alice if name in foreign else bob) for name in route.kwargs}
    return route.url(values)


def body_for(route: Route, method: str) -> dict | None:
    return VIEW_BODIES.get(route.view_class.__name__, {}).get(method, BODIES.get(method))


def call(client, method: str, url: str, route: Route | None = None):
    body = body_for(route, method) if route is not None else BODIES.get(method)
    if body is not None:
        return getattr(client, method)(url, body, format="json")
    return getattr(client, method)(url)


def test_every_id_in_every_api_route_can_be_filled():
    assert ID_ROUTES, "no API route takes an id: the URL conf walk is broken"
    templates = {r.template for r in ID_ROUTES}
    assert "api/v1/sessions/<str:session_id>/messages/" in templates
    assert "api/v1/sessions/<str:session_id>/reply/" in templates
    assert "api/v1/sessions/<str:session_id>/context/" in templates
    for route in ID_ROUTES:
        assert not route.is_regex, f"/{route.template}: re_path routes cannot be filled; use path()"
        unknown = set(route.kwargs) - set(ID_SOURCES)
        assert not unknown, (
            f"/{route.template} takes {sorted(unknown)}, which the isolation matrix cannot fill:"
            " add it to ID_SOURCES in tests/reliability/test_isolation.py"
        )
        assert route.methods, f"/{route.template} implements no method"


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "method", "foreign"), matrix())
def test_another_users_ids_are_404_and_change_nothing(
    route, method, foreign, alice, bob, fake_openai
):
    url = url_for(route, foreign, alice, bob)
    client = client_for(bob.user)
    before = database_snapshot()
    response = call(client, method, url, route)
    if method == "head":
        assert response.status_code == 404
    else:
        error(route, response, 404, "not_found")
        assert SECRET not in response.content.decode()
    assert database_snapshot() == before
    assert fake_openai.requests == []  # nothing of A's was sent to the LLM either


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "method", "foreign"), matrix())
def test_the_owner_reaches_the_same_url(route, method, foreign, alice, bob, fake_openai):
    """The control: the URLs above are real, so their 404 came from ownership alone."""
    owner_url = url_for(route, frozenset(route.kwargs), alice, alice)
    response = call(client_for(alice.user), method, owner_url, route)
    assert response.status_code not in (404, 405), response.content[:300]
    assert response.status_code < 500, response.content[:300]
    if route.view_class.__name__ in OWNER_STATUS:
        assert response.status_code == OWNER_STATUS[route.view_class.__name__]
    elif route.view_class.__name__ in VIEW_BODIES:
        assert response.status_code < 400, response.content[:300]  # the body really works
    if route.view_class.__name__ == "ReplyView":
        assert len(fake_openai.requests) == 1  # so B's 404 above did stop before the LLM


@pytest.mark.django_db
@pytest.mark.parametrize("route", ID_ROUTES, ids=lambda r: f"/{r.template}")
def test_options_says_the_same_for_any_id(route, alice, bob):
    client = client_for(bob.user)
    theirs = client.options(url_for(route, frozenset(route.kwargs), alice, bob))
    missing = client.options(route.url(dict.fromkeys(route.kwargs, 999999999)))
    assert theirs.status_code == missing.status_code
    assert SECRET not in theirs.content.decode()


LIST_ROUTES = [r for r in ROUTES if not r.kwargs and hasattr(r.view_class, "get")]


@pytest.mark.django_db
@pytest.mark.parametrize("route", LIST_ROUTES, ids=lambda r: f"/{r.template}")
@pytest.mark.parametrize(
    "query", ["", "?limit=100", "?archived=true", "?archived=false", f"?search={SECRET}"]
)
def test_lists_never_include_another_users_rows(route, query, alice, bob):
    response = client_for(bob.user).get(route.url({}) + query)
    assert response.status_code < 500
    body = response.content.decode()
    assert SECRET not in body
    for session in ChatSession.objects.filter(user=alice.user):
        assert str(session.pk) not in body


@pytest.mark.django_db
def test_the_session_list_does_show_the_owner_their_rows(alice):
    body = client_for(alice.user).get("/api/v1/sessions/?archived=false").content.decode()
    assert SECRET in body  # so the check above is looking at the right thing


def unauthenticated_matrix():
    return [
        pytest.param(route, method, id=f"{method.upper()} /{route.template}")
        for route in ROUTES
        if not route.is_public
        for method in route.methods
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "method"), unauthenticated_matrix())
def test_every_api_route_refuses_anonymous_callers(route, method, alice):
    before = database_snapshot()
    url = route.url({name: ID_SOURCES[name](alice) for name in route.kwargs})
    response = (
        call(Client(), method, url)
        if method not in BODIES
        else getattr(Client(), method)(url, BODIES[method], content_type="application/json")
    )
    if method == "head":
        assert response.status_code == 401
    else:
        error(route, response, 401, "authentication_error")
    assert database_snapshot() == before
