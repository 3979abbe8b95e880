"""API tokens: stored as digests, shown once, listed and revoked by their owner, and an
expired key or a deactivated user's key indistinguishable from an unknown one."""

import hashlib
import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import selectors, services, token_cache
from accounts.models import ApiToken
from accounts.tests.factories import api_key_for
from conversations.tests.factories import UserFactory

TOKENS = "/api/v1/tokens/"
SESSIONS = "/api/v1/sessions/"

pytestmark = pytest.mark.django_db


def assert_error(response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == error_type
    assert body["error"]["request_id"] == response["X-Request-ID"]
    return body["error"]


def create(client, **body):
    return client.post(TOKENS, body, format="json")


# --- Storage --------------------------------------------------------------------------------
def test_only_a_sha512_digest_of_the_key_is_stored(auth_client):
    key = create(auth_client, name="laptop").json()["key"]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")
        rows = cursor.fetchall()
    stored = " ".join(str(value) for row in rows for value in row)
    assert key not in stored
    assert key[15:] not in stored  # no more than the 15-character prefix is kept in clear
    token = ApiToken.objects.get(name="laptop")
    assert token.digest == hashlib.sha512(key.encode()).hexdigest()
    assert token.token_key == key[:15]


def test_keys_are_long_random_and_prefixed():
    user = UserFactory()
    keys = {api_key_for(user) for _ in range(3)}
    assert len(keys) == 3
    for key in keys:
        assert key.startswith("ce_")
        assert len(key) == 3 + 64
        int(key[3:], 16)


# --- The endpoints --------------------------------------------------------------------------
def test_create_shows_the_key_once_and_it_authenticates(auth_client, api_client):
    response = create(auth_client, name="ci", expires_in_days=90)
    assert response.status_code == 201, response.content
    created = response.json()
    assert set(created) == {
        "id",
        "name",
        "prefix",
        "created_at",
        "expires_at",
        "last_used_at",
        "key",
    }
    assert created["name"] == "ci"
    assert created["key"].startswith(created["prefix"])
    assert created["last_used_at"] is None

    listed = auth_client.get(TOKENS).json()
    assert listed["next"] is None
    assert listed["has_more"] is False
    mine = next(t for t in listed["results"] if t["id"] == created["id"])
    assert "key" not in mine
    assert created["key"] not in auth_client.get(TOKENS).content.decode()

    for scheme in ("Bearer", "Token"):
        api_client.credentials(HTTP_AUTHORIZATION=f"{scheme} {created['key']}")
        assert api_client.get(SESSIONS).status_code == 200


def test_expires_in_days_sets_the_expiry_and_omitting_it_means_never(auth_client):
    before = timezone.now()
    ninety = create(auth_client, name="ninety", expires_in_days=90).json()
    forever = create(auth_client, name="forever").json()
    expires = ApiToken.objects.get(pk=ninety["id"]).expiry
    assert before + timedelta(days=90) <= expires <= timezone.now() + timedelta(days=90)
    assert forever["expires_at"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": 7}, "name"),
        ({"name": "ok", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "ok", "expires_in_days": 3651}, "expires_in_days"),
        ({"name": "ok", "scopes": ["all"]}, "scopes"),
    ],
)
def test_bad_create_input_is_a_validation_error(auth_client, body, field):
    error = assert_error(create(auth_client, **body), 400, "validation_error")
    assert field in error["details"]
    assert not ApiToken.objects.exclude(name="tests").exists()


def test_list_shows_only_your_tokens_newest_first(auth_client, user, other_user):
    api_key_for(other_user, name="theirs")
    for name in ("first", "second"):
        create(auth_client, name=name)
    names = [t["name"] for t in auth_client.get(TOKENS).json()["results"]]
    assert names == ["second", "first", "tests"]  # "tests": the key auth_client uses


def test_revoking_a_token_stops_its_key_at_once(auth_client, api_client):
    created = create(auth_client, name="old").json()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {created['key']}")
    assert api_client.get(SESSIONS).status_code == 200

    assert auth_client.delete(f"{TOKENS}{created['id']}/").status_code == 204
    assert_error(api_client.get(SESSIONS), 401, "authentication_error")
    assert created["id"] not in {t["id"] for t in auth_client.get(TOKENS).json()["results"]}


def test_a_token_can_revoke_itself(api_client, user):
    key = api_key_for(user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    (token,) = api_client.get(TOKENS).json()["results"]
    assert api_client.delete(f"{TOKENS}{token['id']}/").status_code == 204
    assert_error(api_client.get(TOKENS), 401, "authentication_error")


@pytest.mark.parametrize("which", ["another user's", "missing", "not a uuid"])
def test_revoking_another_users_or_a_missing_token_is_not_found(auth_client, other_user, which):
    theirs_key = api_key_for(other_user)
    theirs = ApiToken.objects.get(user=other_user)
    token_id = {
        "another user's": theirs.pk,
        "missing": "5d0c3f8e-2b7a-4e61-9c4d-8a1f0e2b3c4d",
        "not a uuid": "12",
    }[which]
    error = assert_error(auth_client.delete(f"{TOKENS}{token_id}/"), 404, "not_found")
    assert error["message"] == "Token not found."
    assert selectors.token_for_key(key=theirs_key) == theirs


def test_more_than_the_cap_is_a_conflict(auth_client, monkeypatch):
    monkeypatch.setattr(services, "MAX_TOKENS_PER_USER", 2)  # auth_client's key is the first
    assert create(auth_client, name="second").status_code == 201
    assert_error(create(auth_client, name="third"), 409, "conflict")
    assert ApiToken.objects.count() == 2


# --- Authentication -------------------------------------------------------------------------
def _unauthorised(key: str):
    # Through the whole stack, with a fixed request id so two answers can be compared byte
    # for byte.
    return Client().get(
        SESSIONS, HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_X_REQUEST_ID="same-request-id"
    )


def _answer(response) -> tuple:
    return response.status_code, response.content, sorted(response.headers.items())


def test_expired_and_deactivated_keys_answer_exactly_like_an_unknown_key(user, other_user):
    expired = api_key_for(user, expires_in=timedelta(days=1))
    ApiToken.objects.filter(user=user).update(expiry=timezone.now() - timedelta(seconds=1))
    deactivated = api_key_for(other_user)
    other_user.is_active = False
    other_user.save()
    unknown = "ce_" + "0" * 64

    reference = _unauthorised(unknown)
    assert reference.status_code == 401
    assert reference.json()["error"]["type"] == "authentication_error"
    assert reference["WWW-Authenticate"] == "Bearer"
    assert _answer(_unauthorised(expired)) == _answer(reference)
    assert _answer(_unauthorised(deactivated)) == _answer(reference)


def test_a_key_works_until_its_expiry(api_client, user):
    key = api_key_for(user, expires_in=timedelta(hours=1))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api_client.get(SESSIONS).status_code == 200
    ApiToken.objects.filter(user=user).update(expiry=timezone.now())
    # The expiry moved in the database stands for time passing; a real expiry never changes,
    # and the cached one is checked on every request (test_token_cache.py). Reading the row
    # again is what the process does once CHATENGINE_TOKEN_CACHE_S have passed.
    token_cache.clear()
    assert api_client.get(SESSIONS).status_code == 401


def test_the_lookup_is_one_query(user):
    key = api_key_for(user)
    with CaptureQueriesContext(connection) as queries:
        assert selectors.token_for_key(key=key).user == user
        assert selectors.token_for_key(key=key[:-1] + ("0" if key[-1] != "0" else "1")) is None
    assert len(queries) == 2
    assert "token_key" in queries[0]["sql"]


def test_last_use_is_recorded_at_most_once_a_minute(api_client, user):
    key = api_key_for(user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    with CaptureQueriesContext(connection) as queries:
        api_client.get(TOKENS)
        api_client.get(TOKENS)
    updates = [q for q in queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1
    first = ApiToken.objects.get(user=user).last_used_at
    assert first is not None
    ApiToken.objects.filter(user=user).update(last_used_at=first - timedelta(minutes=2))
    token_cache.clear()  # two minutes on: the process has read the row again since
    api_client.get(TOKENS)
    assert ApiToken.objects.get(user=user).last_used_at > first


# --- manage.py create_token -----------------------------------------------------------------
def run(*args) -> str:
    out = io.StringIO()
    call_command("create_token", *args, stdout=out)
    return out.getvalue()


def test_create_token_prints_the_key_alone_on_its_last_line(user):
    out = run(user.username, "--name", "laptop", "--expires-in", "90d")
    key = out.splitlines()[-1]
    token = selectors.token_for_key(key=key)
    assert token.user == user
    assert token.name == "laptop"
    assert timedelta(days=89) < token.expiry - timezone.now() <= timedelta(days=90)
    assert run(user.username, "--verbosity", "0").strip().startswith("ce_")


def test_create_token_defaults_to_a_cli_token_without_expiry(user):
    token = selectors.token_for_key(key=run(user.username).splitlines()[-1])
    assert (token.name, token.expiry) == ("cli", None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody"], "No user 'nobody'"),
        (["{user}", "--expires-in", "90"], "--expires-in: '90' is not a duration"),
        (["{user}", "--name", ""], "--name must be 1 to 64 characters"),
    ],
)
def test_create_token_refuses_bad_arguments(user, args, message):
    with pytest.raises(CommandError, match=message):
        run(*[a.format(user=user.username) for a in args])
    assert not ApiToken.objects.exists()


def test_create_token_refuses_a_deactivated_user(user):
    user.is_active = False
    user.save()
    with pytest.raises(CommandError, match="deactivated"):
        run(user.username)


# --- The admin ------------------------------------------------------------------------------
def test_the_admin_shows_name_prefix_and_dates_but_no_key_or_digest(client, user):
    admin = UserFactory(is_staff=True, is_superuser=True)
    key = api_key_for(user, name="deploy-bot")
    token = ApiToken.objects.get(user=user)
    client.force_login(admin)
    for url in (
        "/admin/accounts/apitoken/",
        f"/admin/accounts/apitoken/{token.pk}/change/",
    ):
        page = client.get(url).content.decode()
        assert "deploy-bot" in page
        assert token.token_key in page
        assert key not in page
        assert token.digest not in page
    assert client.get("/admin/accounts/apitoken/add/").status_code == 403


def test_staff_revoke_a_token_from_the_admin(client, user):
    key = api_key_for(user)
    token = ApiToken.objects.get(user=user)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.post(f"/admin/accounts/apitoken/{token.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert selectors.token_for_key(key=key) is None
