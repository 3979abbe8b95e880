"""Admin login brute-force protection (django-axes): a username is locked out from one address
after AXES_FAILURE_LIMIT failed logins, for AXES_COOLOFF_MINUTES, and nothing else is."""

import http.cookiejar
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.test import Client

from accounts.tests.factories import api_key_for
from conversations.tests.factories import UserFactory

LOGIN = "/admin/login/"
PASSWORD = "pw-for-tests"  # UserFactory's

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return UserFactory(username="support", is_staff=True)


@pytest.fixture(autouse=True)
def _low_limit(settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)


def login(username: str, password: str, *, ip: str = "203.0.113.7"):
    client = Client(REMOTE_ADDR=ip)
    response = client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})
    return client, response


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def fail(username: str, times: int, *, ip: str = "203.0.113.7") -> list[int]:
    return [login(username, "wrong", ip=ip)[1].status_code for _ in range(times)]


def test_the_right_password_logs_in_below_the_limit(staff):
    fail("support", 2)
    client, response = login("support", PASSWORD)
    assert response.status_code == 302
    assert logged_in(client)


def test_after_the_limit_even_the_right_password_gets_the_lockout_page(staff):
    # The form again with its error, until the failure that reaches the limit.
    assert fail("support", 3) == [200, 200, 429]
    client, response = login("support", PASSWORD)
    assert response.status_code == 429
    assert response["Retry-After"] == str(15 * 60)
    page = response.content.decode()
    assert "Too many failed logins" in page
    assert "after 3 failed" in page
    assert "Try again in 15 minutes" in page
    assert not logged_in(client)


def test_the_lockout_is_per_username_and_address(staff):
    UserFactory(username="other", is_staff=True)
    fail("support", 3, ip="203.0.113.7")
    client, _ = login("support", PASSWORD, ip="198.51.100.20")  # same user, elsewhere
    assert logged_in(client)
    client, _ = login("other", PASSWORD, ip="203.0.113.7")  # another user, same address
    assert logged_in(client)
    _, response = login("support", PASSWORD, ip="203.0.113.7")
    assert response.status_code == 429


def test_the_lockout_ends_after_the_cool_off(staff):
    fail("support", 3)
    _age_attempts(16)
    client, response = login("support", PASSWORD)
    assert response.status_code == 302
    assert logged_in(client)


def test_a_locked_out_users_api_token_still_works_and_bad_tokens_lock_nothing(staff):
    key = api_key_for(staff)
    fail("support", 3)
    api = Client(REMOTE_ADDR="203.0.113.7")
    assert api.get("/api/v1/sessions/", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    AccessAttempt.objects.all().delete()
    for _ in range(5):
        response = api.get("/api/v1/sessions/", HTTP_AUTHORIZATION="Bearer ce_" + "0" * 64)
        assert response.status_code == 401
    assert not AccessAttempt.objects.exists()
    client, _ = login("support", PASSWORD)
    assert logged_in(client)


def test_limit_and_cool_off_come_from_the_environment():
    env = {**os.environ, "AXES_FAILURE_LIMIT": "7", "AXES_COOLOFF_MINUTES": "45"}
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.AXES_FAILURE_LIMIT, int(s.AXES_COOLOFF_TIME.total_seconds()), "
        "s.AXES_LOCKOUT_PARAMETERS, s.AXES_HANDLER)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "DJANGO_SETTINGS_MODULE": "chatengine.settings"},
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split(" ", 2)[:2] == ["7", str(45 * 60)]
    assert "[['username', 'ip_address']]" in out
    assert out.strip().endswith("axes.handlers.database.AxesDatabaseHandler")


def _age_attempts(minutes: int) -> None:
    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= timedelta(minutes=minutes)
        attempt.save(update_fields=["attempt_time"])


def test_an_attempt_during_the_lockout_starts_the_wait_again(staff):
    fail("support", 3)
    _age_attempts(10)
    assert login("support", PASSWORD)[1].status_code == 429
    _age_attempts(10)  # 20 minutes after the lockout, 10 after the last attempt
    assert login("support", PASSWORD)[1].status_code == 429


def test_a_successful_login_resets_the_count(staff):
    fail("support", 2)
    assert logged_in(login("support", PASSWORD)[0])
    assert fail("support", 2) == [200, 200]
    assert logged_in(login("support", PASSWORD)[0])


def test_recorded_attempts_never_keep_the_password_tried(staff):
    login("support", "Tr1ed-Pa55word-9f2c")
    (attempt,) = AccessAttempt.objects.values()
    assert "Tr1ed-Pa55word-9f2c" not in " ".join(str(value) for value in attempt.values())
    assert "support" in attempt["username"]


@pytest.mark.django_db(transaction=True)
def test_a_real_login_over_http_with_csrf_gets_past_axes(live_server):
    """What the admin browser test does (it needs Chromium): the login form over HTTP, with
    its CSRF cookie and field, then the admin index."""
    UserFactory(username="support", is_staff=True)
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = opener.open(f"{live_server.url}{LOGIN}?next=/admin/").read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)[1]
    body = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": csrf,
            "username": "support",
            "password": PASSWORD,
            "next": "/admin/",
        }
    ).encode()
    request = urllib.request.Request(
        f"{live_server.url}{LOGIN}", data=body, headers={"Referer": f"{live_server.url}{LOGIN}"}
    )
    with opener.open(request) as response:  # follows the redirect to the index
        assert response.status == 200
        assert response.url == f"{live_server.url}/admin/"
        assert "Site administration" in response.read().decode()
