"""Suite-wide fixtures: real services when configured, a clear skip (or failure) when not.

With CHATENGINE_REQUIRE_SERVICES=1 (CI), a test that needs PostgreSQL or Redis fails when the
service is missing instead of skipping, so a green CI run always means they were exercised.
"""

import contextlib
import os

import pytest
from django.db import connection
from rest_framework.test import APIClient

REQUIRE_SERVICES = os.environ.get("CHATENGINE_REQUIRE_SERVICES", "") not in ("", "0")


def _missing_service(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (CHATENGINE_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(reason)


def pytest_runtest_setup(item):
    if item.get_closest_marker("postgres") and connection.vendor != "postgresql":
        _missing_service(
            "needs PostgreSQL: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/chatengine"
        )
    if item.get_closest_marker("redis"):
        _reachable_redis_url()


def _reachable_redis_url() -> str:
    url = os.environ.get("REDIS_URL", "")
    if not url:
        _missing_service("needs Redis: set REDIS_URL=redis://127.0.0.1:6379/0")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        _missing_service(f"Redis at {url} is not reachable: {exc}")
    return url


@pytest.fixture
def redis_url() -> str:
    """The URL of a reachable Redis server (REDIS_URL)."""
    return _reachable_redis_url()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clean_cache():
    from django.core.cache import cache

    with contextlib.suppress(Exception):
        cache.clear()
    return


@pytest.fixture(autouse=True)
def _fresh_token_cache():
    """No token read by an earlier test is still cached in this process."""
    from accounts import token_cache

    token_cache.clear()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def user(db):
    from conversations.tests.factories import UserFactory

    return UserFactory()


@pytest.fixture
def other_user(db):
    from conversations.tests.factories import UserFactory

    return UserFactory()


@pytest.fixture
def user_token(user) -> str:
    """A raw API key of `user`, for `Authorization: Bearer <key>`. For another user, call
    `accounts.tests.factories.api_key_for(other)`."""
    from accounts.tests.factories import api_key_for

    return api_key_for(user)


@pytest.fixture
def auth_client(user_token) -> APIClient:
    """An API client authenticated as `user` with a Bearer token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {user_token}")
    return client


@pytest.fixture(autouse=True)
def _throttles_out_of_the_way(settings):
    """Real throttling (cache-backed) on every request, at rates no test reaches by accident.

    chatengine/tests/test_throttling.py sets low rates where it means to be throttled. No
    back-off is left over from a test whose cache was down (chatengine.backoff).
    """
    from chatengine import throttling

    throttling.backoff.reset()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            "reads": "100000/min",
            "writes": "100000/min",
            "replies": "100000/min",
        },
    }


# --- LLM: a fake OpenAI-compatible server on loopback (llm/tests/fake_openai.py) ----------
@pytest.fixture
def fake_openai(settings):
    """A running fake OpenAI server, with the engine's `openai` provider pointed at it.

    Retries are off and the timeout short, so failure modes answer fast. Set `fake.mode` or
    call `fake.fail_next(...)`; `fake.requests` holds what the server received.
    """
    from llm.tests.fake_openai import FakeOpenAI

    with FakeOpenAI() as fake:
        settings.LLM_PROVIDER = "openai"
        settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
        settings.OPENAI_BASE_URL = fake.base_url
        settings.LLM_MAX_RETRIES = 0
        settings.LLM_TIMEOUT_S = 2.0
        yield fake
