"""Per-user rate limits for reads, writes and replies, counted in the cache."""

import socket
import time

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.urls import include, path
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from chatengine.env import env_rate

SESSIONS = "/api/v1/sessions/"


class _Reply(APIView):
    """Stands for the reply endpoint: a POST with its own scope."""

    throttle_scope = "replies"

    def post(self, request, session_id):
        return Response({"ok": True})


urlpatterns = [
    path("api/v1/", include("conversations.urls")),
    path("api/v1/sessions/<str:session_id>/reply/", _Reply.as_view()),
]
handler404 = "chatengine.exceptions.page_not_found"


@pytest.fixture
def rates(settings):
    def set_rates(*, reads="1000/min", writes="1000/min", replies="1000/min"):
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {"reads": reads, "writes": writes, "replies": replies},
        }

    return set_rates


def client_for(user) -> APIClient:
    from accounts.tests.factories import api_key_for

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(user)}")
    return client


def assert_rate_limited(response):
    assert response.status_code == 429, response.content
    assert response.json()["error"]["type"] == "rate_limited"
    assert 0 < int(response["Retry-After"]) <= 60


@pytest.mark.django_db
class TestScopes:
    def test_reads_over_the_rate_are_429_with_retry_after(self, rates, auth_client):
        rates(reads="2/min")
        assert auth_client.get(SESSIONS).status_code == 200
        assert auth_client.get(SESSIONS).status_code == 200
        assert_rate_limited(auth_client.get(SESSIONS))

    def test_writes_have_their_own_budget(self, rates, auth_client):
        rates(reads="1/min", writes="2/min")
        assert auth_client.get(SESSIONS).status_code == 200
        assert_rate_limited(auth_client.get(SESSIONS))
        # Reads are spent; writes are not.
        assert auth_client.post(SESSIONS, {}, format="json").status_code == 201
        assert auth_client.post(SESSIONS, {}, format="json").status_code == 201
        assert_rate_limited(auth_client.post(SESSIONS, {}, format="json"))

    @pytest.mark.urls("chatengine.tests.test_throttling")
    def test_replies_are_limited_separately_from_other_writes(self, rates, auth_client):
        rates(replies="1/min", writes="5/min")
        reply = f"{SESSIONS}abc/reply/"
        assert auth_client.post(reply, {}, format="json").status_code == 200
        assert_rate_limited(auth_client.post(reply, {}, format="json"))
        assert auth_client.post(SESSIONS, {}, format="json").status_code == 201

    def test_the_limit_is_per_user(self, rates, user, other_user):
        rates(reads="1/min")
        mine, theirs = client_for(user), client_for(other_user)
        assert mine.get(SESSIONS).status_code == 200
        assert_rate_limited(mine.get(SESSIONS))
        assert theirs.get(SESSIONS).status_code == 200

    def test_a_rate_of_none_means_unlimited(self, rates, auth_client):
        rates(reads=None)
        for _ in range(5):
            assert auth_client.get(SESSIONS).status_code == 200

    def test_the_count_lives_in_the_cache(self, rates, auth_client, user):
        rates(reads="5/min")
        auth_client.get(SESSIONS)
        auth_client.get(SESSIONS)
        assert cache.get(f"throttle:reads:user:{user.pk}") == 2
        # Clearing the shared count (e.g. another worker's view of it) resets the budget.
        cache.clear()
        rates(reads="1/min")
        assert auth_client.get(SESSIONS).status_code == 200

    def test_a_throttled_request_is_logged_as_rate_limited(self, rates, auth_client, json_logs):
        rates(reads="1/min")
        auth_client.get(SESSIONS)
        auth_client.get(SESSIONS)
        line = json_logs.one(logger="chatengine.errors")
        assert (line["level"], line["error_type"], line["status"]) == (
            "WARNING",
            "rate_limited",
            429,
        )


@pytest.mark.django_db
def test_a_cache_outage_lets_requests_through_and_warns_once_without_a_traceback(
    broken_cache, rates, auth_client, json_logs, settings
):
    settings.CHATENGINE_CACHE_RETRY_S = 0  # try the cache on every request: each one fails
    rates(reads="1/min")
    for _ in range(3):  # over the rate, but nothing counts: fail open
        assert auth_client.get(SESSIONS).status_code == 200
    lines = json_logs.where(event="throttle.unavailable")
    assert [(line["level"], line["scope"]) for line in lines] == [("WARNING", "reads")]
    assert lines[0]["error"] == "ConnectionError"
    assert "exc_info" not in lines[0]


@pytest.fixture
def unresponsive_cache(settings):
    """The default cache: a real Redis client pointed at a port that accepts connections and
    never answers, so every command waits its full socket timeout (a Redis that hangs)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        settings.CACHES = {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"redis://127.0.0.1:{listener.getsockname()[1]}/0",
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.3, "SOCKET_TIMEOUT": 0.3},
            }
        }
        yield


@pytest.mark.django_db
def test_a_hanging_cache_costs_one_timeout_then_the_throttle_backs_off(
    unresponsive_cache, rates, auth_client, json_logs, settings
):
    settings.CHATENGINE_CACHE_RETRY_S = 60
    rates(reads="1/min")
    started = time.monotonic()
    assert auth_client.get(SESSIONS).status_code == 200  # waits the timeout, fails open
    first = time.monotonic() - started
    started = time.monotonic()
    for _ in range(5):
        assert auth_client.get(SESSIONS).status_code == 200
    rest = time.monotonic() - started
    assert first >= 0.3
    assert rest < 0.3  # five requests together cost less than one timeout: none waited
    assert len(json_logs.where(event="throttle.unavailable")) == 1


@pytest.mark.redis
@pytest.mark.django_db
def test_after_the_back_off_the_throttle_counts_again(
    broken_cache, rates, auth_client, settings, redis_url
):
    settings.CHATENGINE_CACHE_RETRY_S = 0.2
    rates(reads="1/min")
    assert auth_client.get(SESSIONS).status_code == 200  # the cache is down: fails open
    settings.CACHES = {
        "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_url}
    }
    cache.clear()
    time.sleep(0.25)
    assert auth_client.get(SESSIONS).status_code == 200
    assert_rate_limited(auth_client.get(SESSIONS))


@pytest.mark.redis
@pytest.mark.django_db
def test_counts_are_shared_through_redis(rates, auth_client, user, redis_url):
    import redis

    rates(reads="3/min")
    auth_client.get(SESSIONS)
    keys = redis.Redis.from_url(redis_url).keys(f"*throttle:reads:user:{user.pk}")
    assert len(keys) == 1


def test_rates_are_validated_when_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("CHATENGINE_THROTTLE_READS", "600/min")
    assert env_rate("CHATENGINE_THROTTLE_READS", "1/s") == "600/min"
    monkeypatch.setenv("CHATENGINE_THROTTLE_READS", "None")
    assert env_rate("CHATENGINE_THROTTLE_READS", "1/s") is None
    monkeypatch.setenv("CHATENGINE_THROTTLE_READS", "600 per minute")
    with pytest.raises(ImproperlyConfigured, match="CHATENGINE_THROTTLE_READS must be a rate"):
        env_rate("CHATENGINE_THROTTLE_READS", "1/s")


# --- the counter itself: exact, and one Redis round trip ------------------------------------
class _View:
    """A view without its own scope: GETs count as `reads`."""


def _check(user) -> tuple[bool, float | None]:
    from django.test import RequestFactory

    from chatengine.throttling import UserScopedRateThrottle

    request = RequestFactory().get(SESSIONS)
    request.user = user
    throttle = UserScopedRateThrottle()
    return throttle.allow_request(request, _View()), throttle.wait()


@pytest.mark.django_db
def test_the_limit_is_exact_at_the_boundary_and_the_budget_returns_when_the_window_ends(
    rates, user
):
    rates(reads="3/s")
    assert [_check(user)[0] for _ in range(3)] == [True, True, True]
    allowed, wait = _check(user)
    assert not allowed
    assert 0 < wait <= 1
    time.sleep(wait + 0.05)
    assert _check(user)[0]


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_of_concurrent_requests_over_the_budget_exactly_the_budget_gets_through(rates, user):
    from concurrent.futures import ThreadPoolExecutor

    rates(reads="10/min")
    with ThreadPoolExecutor(16) as pool:
        allowed = list(pool.map(lambda _: _check(user)[0], range(64)))
    assert allowed.count(True) == 10


def _commands_sent(redis_url: str, action) -> list[list[str]]:
    """What clients (not scripts) sent to this Redis database while `action` ran, as MONITOR
    saw it: other databases (other test runs on the same server) are left out."""
    import uuid

    import redis

    client = redis.Redis.from_url(redis_url)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    marker = f"end-of-action-{uuid.uuid4()}"
    sender = redis.Redis.from_url(redis_url)
    sender.ping()  # connected (and its SELECT sent) before MONITOR starts
    seen = []
    with client.monitor() as monitor:
        action()
        sender.echo(marker)
        while True:
            command = monitor.next_command()
            if command["db"] != db or command["client_type"] == "lua":
                continue
            if marker in command["command"]:
                return seen
            seen.append(command["command"].split())


@pytest.mark.redis
@pytest.mark.django_db
def test_a_throttle_check_is_one_redis_round_trip_whatever_the_count(rates, user, redis_url):
    rates(reads="1000000/min")
    for _ in range(500):  # a sliding log would now read and write 500 timestamps
        assert _check(user)[0]
    commands = _commands_sent(redis_url, lambda: _check(user))
    assert [command[0].upper() for command in commands] == ["EVALSHA"]
    assert cache.get(f"throttle:reads:user:{user.pk}") == 501
