"""/metrics: request counts and latency by route and status, the domain counters, and who may
scrape them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from chatengine import metrics
from conversations.tests.factories import ChatSessionFactory

SESSIONS = "/api/v1/sessions/"


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(client=None) -> dict[str, dict[tuple, float]]:
    response = (client or Client()).get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    scraped: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            scraped.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return scraped


@pytest.mark.django_db
class TestRequestMetrics:
    def test_requests_are_counted_and_timed_by_route_template_and_status(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        labels = {"method": "GET", "route": "/api/v1/sessions/{session_id}/", "status": "200"}
        count_before = sample("chatengine_http_requests_total", **labels)
        latency_before = sample("chatengine_http_request_duration_seconds_count", **labels)

        for _ in range(3):
            assert auth_client.get(f"{SESSIONS}{session.pk}/").status_code == 200

        assert sample("chatengine_http_requests_total", **labels) == count_before + 3
        assert (
            sample("chatengine_http_request_duration_seconds_count", **labels) == latency_before + 3
        )
        # No series per session id: the raw path never becomes a label.
        raw = f"/api/v1/sessions/{session.pk}/"
        assert all(raw not in str(m.samples) for m in REGISTRY.collect())

    def test_errors_are_counted_under_their_status_and_unknown_urls_share_one_route(
        self, auth_client
    ):
        missing = {"method": "GET", "route": "/api/v1/sessions/{session_id}/", "status": "404"}
        unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
        before = (
            sample("chatengine_http_requests_total", **missing),
            sample("chatengine_http_requests_total", **unmatched),
        )
        auth_client.get(f"{SESSIONS}nope/")
        auth_client.get("/api/v1/first-unknown/")
        auth_client.get("/api/v1/second-unknown/")
        assert sample("chatengine_http_requests_total", **missing) == before[0] + 1
        assert sample("chatengine_http_requests_total", **unmatched) == before[1] + 2

    def test_the_scrape_shows_the_same_values_as_the_registry(self, auth_client):
        auth_client.get(SESSIONS)
        labels = (("method", "GET"), ("route", "/api/v1/sessions/"), ("status", "200"))
        expected = sample("chatengine_http_requests_total", **dict(labels))
        assert expected >= 1
        assert scrape()["chatengine_http_requests_total"][labels] == expected


@pytest.mark.django_db
class TestDomainMetrics:
    def test_appended_messages_are_counted_by_role_once_committed(
        self, auth_client, user, django_capture_on_commit_callbacks
    ):
        session = ChatSessionFactory(user=user)
        url = f"{SESSIONS}{session.pk}/messages/"
        before = {
            role: sample("chatengine_messages_appended_total", role=role)
            for role in ("user", "assistant")
        }
        with django_capture_on_commit_callbacks(execute=True):
            auth_client.post(url, {"role": "user", "content": "a"}, format="json")
            auth_client.post(url, {"role": "user", "content": "b"}, format="json")
            auth_client.post(url, {"role": "assistant", "content": "c"}, format="json")
        assert sample("chatengine_messages_appended_total", role="user") == before["user"] + 2
        assert (
            sample("chatengine_messages_appended_total", role="assistant")
            == before["assistant"] + 1
        )
        scraped = scrape()["chatengine_messages_appended_total"]
        assert scraped[(("role", "user"),)] == before["user"] + 2

    def test_a_rejected_append_is_not_counted(
        self, auth_client, user, django_capture_on_commit_callbacks
    ):
        session = ChatSessionFactory(user=user, archived=True)
        before = sample("chatengine_messages_appended_total", role="user")
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = auth_client.post(
                f"{SESSIONS}{session.pk}/messages/", {"role": "user", "content": "a"}, format="json"
            )
        assert response.status_code == 409
        assert callbacks == []
        assert sample("chatengine_messages_appended_total", role="user") == before

    def test_every_domain_metric_is_exported(self):
        # Labelled series appear once used; their HELP/TYPE lines are always there.
        text = Client().get("/metrics").content.decode()
        for name, kind in [
            ("chatengine_messages_appended_total", "counter"),
            ("chatengine_llm_requests_total", "counter"),
            ("chatengine_llm_latency_seconds", "histogram"),
            ("chatengine_llm_tokens_total", "counter"),
            ("chatengine_cache_events_total", "counter"),
            ("chatengine_http_requests_total", "counter"),
            ("chatengine_http_request_duration_seconds", "histogram"),
        ]:
            assert f"# TYPE {name} {kind}" in text
        assert "_created" not in text  # no timestamp series doubling every counter

    def test_llm_and_cache_counters_reach_the_scrape(self):
        # The llm and cache code increment these; what they count must show up in /metrics.
        metrics.LLM_REQUESTS.labels(provider="echo", outcome="ok").inc()
        metrics.LLM_TOKENS.labels(provider="echo", kind="prompt").inc(12)
        metrics.LLM_LATENCY.labels(provider="echo").observe(0.2)
        metrics.CACHE_EVENTS.labels(event="hit").inc()
        scraped = scrape()
        expected = sample("chatengine_llm_tokens_total", provider="echo", kind="prompt")
        assert expected >= 12
        assert scraped["chatengine_llm_tokens_total"][
            (("kind", "prompt"), ("provider", "echo"))
        ] == (expected)
        assert scraped["chatengine_llm_latency_seconds_count"][(("provider", "echo"),)] >= 1
        assert scraped["chatengine_cache_events_total"][(("event", "hit"),)] >= 1


@pytest.mark.django_db
class TestMetricsAccess:
    def test_loopback_may_scrape_without_credentials(self):
        assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
        assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200

    def test_other_addresses_get_a_403_envelope(self, json_logs):
        response = Client(REMOTE_ADDR="10.1.2.3").get("/metrics")
        assert response.status_code == 403
        assert response.json()["error"]["type"] == "permission_error"
        assert b"chatengine_" not in response.content
        assert json_logs.one(logger="chatengine.errors")["error_type"] == "permission_error"

    def test_a_forged_forwarded_for_header_does_not_open_it(self):
        client = Client(REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="127.0.0.1")
        assert client.get("/metrics").status_code == 403

    def test_allowed_networks_are_configurable(self, settings):
        settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
        assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
        assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403

    def test_a_scraper_asking_for_text_gets_it(self):
        response = Client().get("/metrics", HTTP_ACCEPT="text/plain;version=0.0.4")
        assert response.status_code == 200
        assert b"# TYPE chatengine_http_requests_total counter" in response.content


def test_with_several_workers_one_scrape_sums_them_all(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR mode (gunicorn -w N): two processes count, one scrapes."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    cwd = Path(__file__).resolve().parents[2]
    other_worker = (
        "from chatengine.metrics import MESSAGES_APPENDED;"
        "MESSAGES_APPENDED.labels(role='tool').inc(3)"
    )
    subprocess.run([sys.executable, "-c", other_worker], cwd=cwd, env=env, check=True, timeout=60)
    scraping_worker = (
        "import os, django; os.environ['DJANGO_SETTINGS_MODULE'] = 'chatengine.settings';"
        "django.setup();"
        "from django.test import Client; from chatengine.metrics import MESSAGES_APPENDED;"
        "MESSAGES_APPENDED.labels(role='tool').inc(2);"
        "print(Client().get('/metrics').content.decode())"
    )
    result = subprocess.run(
        [sys.executable, "-c", scraping_worker],
        cwd=cwd,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert 'chatengine_messages_appended_total{role="tool"} 5.0' in result.stdout
