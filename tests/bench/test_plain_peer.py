"""The plain DRF peer of `make bench` answers what chatengine answers, for the same data.

Run under chatengine's test settings with the peer's own middleware, DRF settings, URLconf
and apps swapped in, over the same tables (its models are unmanaged views of them).
"""

import contextlib
import sys

import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.contrib import admin
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from bench.plain import settings as plain_settings
from conversations import services
from conversations.models import ChatSession

pytestmark = pytest.mark.django_db

BODY = {"role": "user", "content": "How long does the ferry to Cacilhas take?"}


@contextlib.contextmanager
def plain_peer(user):
    """A client of the plain peer, authenticated as `user` with a stock DRF token."""
    apps = [*settings.INSTALLED_APPS]
    apps += [a for a in ("rest_framework.authtoken", "bench.plain") if a not in apps]
    with (
        override_settings(
            MIDDLEWARE=plain_settings.MIDDLEWARE,
            REST_FRAMEWORK=plain_settings.REST_FRAMEWORK,
            ROOT_URLCONF=plain_settings.ROOT_URLCONF,
        ),
        _installed(apps),
    ):
        from rest_framework.authtoken.models import Token

        # The peer's own token table, whatever chatengine itself authenticates with.
        if Token._meta.db_table not in connection.introspection.table_names():
            with connection.schema_editor() as editor:
                editor.create_model(Token)
        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        yield client


@contextlib.contextmanager
def _installed(apps: list[str]):
    """INSTALLED_APPS = apps, the setting first and the app registry after it.

    DRF's authtoken models, which chatengine does not install, check INSTALLED_APPS when they
    are imported and come out abstract if it lacks them. override_settings(INSTALLED_APPS=...)
    fills the registry before it swaps the setting in, and other code of the suite may have
    imported them already (DRF's TokenAuthentication does, lazily): so the setting goes in
    first, and abstract leftovers are dropped to be imported again.
    """
    settings.INSTALLED_APPS = apps  # on override_settings' holder: dropped when it exits
    models = sys.modules.get("rest_framework.authtoken.models")
    if models is not None and models.Token._meta.abstract:
        for name in ("rest_framework.authtoken.admin", "rest_framework.authtoken.models"):
            sys.modules.pop(name, None)
    # Installing the apps runs the admin's autodiscovery, which registers authtoken's admin on
    # the one AdminSite; the rest of the suite must not find it there afterwards.
    registered = dict(admin.site._registry)
    try:
        django_apps.set_installed_apps(apps)
    except Exception:
        django_apps.unset_installed_apps()
        raise
    try:
        yield
    finally:
        django_apps.unset_installed_apps()
        admin.site._registry.clear()
        admin.site._registry.update(registered)


def _session_with_history(user, count: int) -> ChatSession:
    session = services.create_session(user=user, title="plain peer")
    for i in range(count):
        role = "user" if i % 2 == 0 else "assistant"
        services.append_message(session=session, role=role, content=f"turn {i}")
    return session


def test_plain_history_page_is_chatengines_newest_first_page(auth_client, user):
    session = _session_with_history(user, 5)
    url = f"/api/v1/sessions/{session.pk}/messages/?limit=3&order=desc"
    engine = auth_client.get(url)
    with plain_peer(user) as client:
        plain = client.get(url)
        following = client.get(plain.json()["next"])

    assert engine.status_code == plain.status_code == 200
    assert plain.json() == engine.json()
    assert [m["seq"] for m in plain.json()["results"]] == [5, 4, 3]
    assert [m["seq"] for m in following.json()["results"]] == [2, 1]
    assert following.json()["has_more"] is False


def test_plain_append_answers_chatengines_shape_and_moves_the_same_counters(auth_client, user):
    engine_session = services.create_session(user=user, title="engine")
    plain_session = services.create_session(user=user, title="plain")
    engine = auth_client.post(
        f"/api/v1/sessions/{engine_session.pk}/messages/", BODY, format="json"
    )
    with plain_peer(user) as client:
        plain = client.post(f"/api/v1/sessions/{plain_session.pk}/messages/", BODY, format="json")

    assert engine.status_code == plain.status_code == 201
    engine_body, plain_body = engine.json(), plain.json()
    assert list(plain_body) == list(engine_body)
    for key in ("id", "session", "created_at"):
        engine_body.pop(key), plain_body.pop(key)
    assert plain_body == engine_body  # seq 1, role, content, token_count, the null reply fields
    fields = ("last_seq", "message_count", "total_tokens")
    engine_session.refresh_from_db()
    plain_session.refresh_from_db()
    assert [getattr(plain_session, f) for f in fields] == [
        getattr(engine_session, f) for f in fields
    ]
    assert plain_session.last_message_at is not None


def test_plain_noop_needs_a_stock_drf_token(user):
    with plain_peer(user) as client:
        ok = client.get("/bench/floor/constant/")
    with plain_peer(None) as anonymous:
        refused = anonymous.get("/bench/floor/constant/")

    assert (ok.status_code, ok.json()) == (200, {"ok": True})
    assert refused.status_code == 401


def test_plain_peer_answers_404_for_another_users_session(user, other_user):
    session = _session_with_history(other_user, 1)
    with plain_peer(user) as client:
        read = client.get(f"/api/v1/sessions/{session.pk}/messages/")
        write = client.post(f"/api/v1/sessions/{session.pk}/messages/", BODY, format="json")

    assert (read.status_code, write.status_code) == (404, 404)
    session.refresh_from_db()
    assert session.message_count == 1
