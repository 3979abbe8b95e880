"""Token lookups cached in process for CHATENGINE_TOKEN_CACHE_S seconds: no query per request,
revocation and deactivation at once in the process that made them, within the bound in every
other process."""

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import selectors, services
from accounts.models import ApiToken
from accounts.tests.factories import api_key_for

TOKENS = "/api/v1/tokens/"
SESSIONS = "/api/v1/sessions/"


@pytest.mark.django_db
def test_a_key_read_recently_authenticates_without_a_query(api_client, user):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(user)}")
    assert api_client.get(SESSIONS).status_code == 200  # reads the token, stamps last use
    with CaptureQueriesContext(connection) as queries:
        response = api_client.get(SESSIONS)
    assert response.status_code == 200
    assert not [q for q in queries if "accounts_apitoken" in q["sql"] or "auth_user" in q["sql"]]


@pytest.mark.django_db
def test_a_cached_token_gives_a_real_user_of_its_own_each_time(user):
    key = api_key_for(user)
    first, second = selectors.token_for_key(key=key), selectors.token_for_key(key=key)
    assert type(second.user) is type(user)
    assert second.user == user
    assert second.user.username == user.username
    assert second.user is not first.user
    assert second is not first


@pytest.mark.django_db
def test_a_cached_key_stops_at_its_expiry(api_client, user):
    api_client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {api_key_for(user, expires_in=timedelta(seconds=1.5))}"
    )
    assert api_client.get(SESSIONS).status_code == 200
    time.sleep(1.6)  # less than CHATENGINE_TOKEN_CACHE_S: the entry is still cached
    assert api_client.get(SESSIONS).status_code == 401


@pytest.mark.django_db
def test_revoking_and_deactivating_take_effect_at_once_in_this_process(
    auth_client, api_client, user
):
    created = auth_client.post(TOKENS, {"name": "old"}, format="json").json()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {created['key']}")
    assert api_client.get(SESSIONS).status_code == 200  # cached from here on
    assert auth_client.delete(f"{TOKENS}{created['id']}/").status_code == 204
    assert api_client.get(SESSIONS).status_code == 401

    assert auth_client.get(SESSIONS).status_code == 200
    user.is_active = False
    user.save()
    assert auth_client.get(SESSIONS).status_code == 401


@pytest.mark.django_db
def test_a_zero_cache_time_reads_the_database_every_time(settings, user):
    settings.CHATENGINE_TOKEN_CACHE_S = 0
    key = api_key_for(user)
    with CaptureQueriesContext(connection) as queries:
        selectors.token_for_key(key=key)
        selectors.token_for_key(key=key)
    assert len(queries) == 2


@pytest.mark.django_db
def test_last_use_is_written_once_a_minute_even_by_processes_with_an_older_view(user):
    key = api_key_for(user)
    token = selectors.token_for_key(key=key)
    services.record_token_use(token=token)
    stamped = ApiToken.objects.get(pk=token.pk).last_used_at
    # Another process read the row before that stamp and believes it was never used.
    stale = ApiToken.objects.get(pk=token.pk)
    stale.last_used_at = None
    services.record_token_use(token=stale)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == stamped


_OTHER_PROCESS = """
import sys
import django

django.setup()
from rest_framework.exceptions import AuthenticationFailed

from accounts.authentication import BearerOrTokenAuthentication

auth = BearerOrTokenAuthentication()
print("ready", flush=True)
for line in sys.stdin:
    try:
        auth.authenticate_credentials(line.strip())
        print("accepted", flush=True)
    except AuthenticationFailed:
        print("refused", flush=True)
"""

CACHE_S = 3.0


class OtherProcess:
    """A second chatengine process on the same database, authenticating keys it is sent."""

    def __init__(self):
        db = connection.settings_dict
        url = (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
        env = {**os.environ, "DATABASE_URL": url, "CHATENGINE_TOKEN_CACHE_S": str(CACHE_S)}
        env["DJANGO_SETTINGS_MODULE"] = "chatengine.settings"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _OTHER_PROCESS],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert self.proc.stdout.readline().strip() == "ready"

    def authenticate(self, key: str) -> str:
        self.proc.stdin.write(key + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture
def other_process():
    process = OtherProcess()
    yield process
    process.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", ["revoke", "deactivate"])
def test_another_process_refuses_a_revoked_or_deactivated_key_within_the_cache_time(
    change, user, other_process, settings
):
    settings.CHATENGINE_TOKEN_CACHE_S = CACHE_S
    key = api_key_for(user)
    assert selectors.token_for_key(key=key) is not None  # cached here too
    assert other_process.authenticate(key) == "accepted"
    cached_there = time.monotonic()

    if change == "revoke":
        services.revoke_token(token=ApiToken.objects.get(user=user))
    else:
        user.is_active = False
        user.save()
    assert selectors.token_for_key(key=key) is None  # this process: at once
    # The other process still has the rows it read: the key works there for the bound...
    assert other_process.authenticate(key) == "accepted"
    assert time.monotonic() - cached_there < CACHE_S
    # ...and not past it.
    time.sleep(max(0.0, cached_there + CACHE_S - time.monotonic()) + 0.1)
    assert other_process.authenticate(key) == "refused"
