"""/healthz answers while the process lives; /readyz answers 503 naming what is down."""

import socket
import time

import pytest
from django.db import connection, connections
from django.test import Client

from chatengine.tests.conftest import closed_port


@pytest.fixture
def broken_database(monkeypatch):
    """Point new connections at nothing; the test's own, already open connection is unchanged."""
    current = connections.settings["default"]
    if connection.vendor == "sqlite":
        broken = {**current, "NAME": "/nonexistent-dir/chatengine.sqlite3"}
    else:
        broken = {**current, "HOST": "127.0.0.1", "PORT": str(closed_port())}
    monkeypatch.setitem(connections.settings, "default", broken)


@pytest.fixture
def hanging_cache(settings):
    """A server that accepts connections and never answers (no client timeout configured)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{server.getsockname()[1]}/0",
        }
    }
    yield
    server.close()  # resets the waiting client, so the probe's thread ends


def readyz(**extra):
    return Client().get("/readyz", **extra)


@pytest.mark.django_db
class TestHealthz:
    def test_it_answers_ok_without_credentials(self):
        response = Client().get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    def test_it_does_not_touch_the_database_or_the_cache(self, broken_database, broken_cache):
        assert Client().get("/healthz").status_code == 200


@pytest.mark.django_db
class TestReadyz:
    def test_it_answers_ok_when_the_database_and_cache_answer(self):
        response = readyz()
        assert response.status_code == 200, response.content
        assert response.json() == {"status": "ok", "checks": {"database": "ok", "cache": "ok"}}

    def test_a_database_outage_is_a_503_naming_the_database(self, broken_database, json_logs):
        response = readyz(HTTP_X_REQUEST_ID="req-ready")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["type"] == "service_unavailable"
        assert error["message"] == "Not ready: database failed."
        assert error["details"] == {
            "checks": {"database": "error: OperationalError", "cache": "ok"}
        }
        assert error["request_id"] == "req-ready"
        logged = json_logs.one(logger="chatengine.errors")
        assert (logged["level"], logged["error_type"]) == ("ERROR", "service_unavailable")
        # The check's own line says why, under the same request id.
        check = json_logs.one(logger="chatengine.health")
        assert check["check"] == "database"
        assert check["request_id"] == "req-ready"
        assert "OperationalError" in check["exc_info"]

    def test_a_cache_outage_is_a_503_naming_the_cache(self, broken_cache):
        response = readyz()
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["message"] == "Not ready: cache failed."
        assert error["details"]["checks"]["database"] == "ok"
        assert error["details"]["checks"]["cache"].startswith("error: ")

    def test_a_hanging_cache_times_out_quickly(self, settings, hanging_cache):
        settings.CHATENGINE_READYZ_TIMEOUT = 1.0
        started = time.monotonic()
        response = readyz()
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["details"]["checks"]["cache"] == "timeout"
        assert "cache" in error["message"]
        assert elapsed < 5  # the client alone would wait forever

    @pytest.mark.redis
    def test_it_round_trips_through_the_real_redis(self, settings, redis_url):
        assert "RedisCache" in settings.CACHES["default"]["BACKEND"]
        assert readyz().status_code == 200

    @pytest.mark.postgres
    def test_it_queries_the_real_postgresql(self):
        assert connection.vendor == "postgresql"
        assert readyz().json()["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_probes_are_never_throttled(settings, auth_client):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"reads": "1/min", "writes": "1/min", "replies": "1/min"},
    }
    for _ in range(3):
        assert Client().get("/healthz").status_code == 200
        assert Client().get("/readyz").status_code == 200
        assert Client().get("/metrics").status_code == 200
    # The same rates do throttle the API.
    assert auth_client.get("/api/v1/sessions/").status_code == 200
    assert auth_client.get("/api/v1/sessions/").status_code == 429
