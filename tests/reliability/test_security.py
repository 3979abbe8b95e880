"""Production security settings, CORS, and who may reach the admin and the API."""

import json
import secrets
import subprocess

import pytest
from django.contrib.admin import site as admin_site
from django.test import Client
from django.urls import reverse

from conversations.tests.factories import ChatSessionFactory, UserFactory
from tests.reliability.conftest import BASE_DIR, PYTHON, child_env, client_for, envelope

PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "chat.example.com,testserver",
}


def run_django(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = child_env(**env)
    for name in ("SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT", "CORS_ALLOWED_ORIGINS"):
        if name not in env:
            full_env.pop(name, None)
    return subprocess.run(
        [PYTHON, *args], cwd=BASE_DIR, env=full_env, capture_output=True, text=True, timeout=120
    )


def production_settings(**env: str) -> dict:
    code = (
        "import json, django; django.setup(); from django.conf import settings as s;"
        "print(json.dumps({n: getattr(s, n, None) for n in ["
        "'DEBUG', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_HSTS_SECONDS',"
        "'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_SSL_REDIRECT', 'SECURE_PROXY_SSL_HEADER',"
        "'CORS_ALLOWED_ORIGINS', 'SILENCED_SYSTEM_CHECKS']}))"
    )
    result = run_django(["-c", code], **{**PRODUCTION, **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class TestDeployCheck:
    def test_it_passes_with_production_settings(self):
        result = run_django(
            ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **PRODUCTION
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "no issues" in result.stdout

    def test_it_passes_with_the_https_redirect_on_too(self):
        result = run_django(
            ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            **PRODUCTION,
            SECURE_SSL_REDIRECT="1",
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_it_fails_with_debug_on(self):
        # The check is real: development settings do not pass it.
        result = run_django(
            ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            **{**PRODUCTION, "DEBUG": "1"},
        )
        assert result.returncode != 0
        assert "security.W018" in result.stderr

    def test_it_fails_with_hsts_turned_off(self):
        result = run_django(
            ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            **PRODUCTION,
            SECURE_HSTS_SECONDS="0",
        )
        assert result.returncode != 0
        assert "security.W004" in result.stderr

    def test_production_defaults(self):
        values = production_settings()
        assert values["DEBUG"] is False
        assert values["SESSION_COOKIE_SECURE"] is True
        assert values["CSRF_COOKIE_SECURE"] is True
        assert values["SECURE_HSTS_SECONDS"] == 31_536_000
        assert values["SECURE_SSL_REDIRECT"] is False  # TLS ends at the proxy
        assert values["SECURE_PROXY_SSL_HEADER"] is None
        assert values["CORS_ALLOWED_ORIGINS"] == []
        assert "security.W008" in values["SILENCED_SYSTEM_CHECKS"]

    def test_hsts_redirect_and_proxy_header_come_from_the_environment(self):
        values = production_settings(
            SECURE_HSTS_SECONDS="600",
            SECURE_SSL_REDIRECT="1",
            SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
            CORS_ALLOWED_ORIGINS="https://app.example.com",
        )
        assert values["SECURE_HSTS_SECONDS"] == 600
        assert values["SECURE_SSL_REDIRECT"] is True
        assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
        assert values["CORS_ALLOWED_ORIGINS"] == ["https://app.example.com"]
        assert "security.W008" not in values["SILENCED_SYSTEM_CHECKS"]

    def test_a_malformed_proxy_header_setting_is_refused(self):
        result = run_django(
            ["-c", "import django; django.setup()"],
            **PRODUCTION,
            SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
        )
        assert result.returncode != 0
        assert "SECURE_PROXY_SSL_HEADER must be" in result.stderr

    def test_production_cookies_are_secure(self):
        code = (
            "import django; django.setup(); from django.test import Client;"
            "r = Client().get('/admin/login/');"
            "print(r.status_code, r.cookies['csrftoken'].output())"
        )
        result = run_django(["-c", code], **PRODUCTION)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("200 ")
        assert "Secure" in result.stdout


@pytest.mark.django_db
class TestHttpsBehindAProxy:
    def test_hsts_is_sent_on_requests_the_proxy_marks_https(self, settings):
        settings.SECURE_HSTS_SECONDS = 600
        settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
        response = Client().get("/healthz", HTTP_X_FORWARDED_PROTO="https")
        assert response["Strict-Transport-Security"] == "max-age=600; includeSubDomains"
        assert "Strict-Transport-Security" not in Client().get("/healthz")

    def test_the_redirect_is_off_by_default(self):
        assert Client().get("/healthz").status_code == 200

    def test_the_redirect_sends_plain_http_to_https_when_on(self, settings):
        settings.SECURE_SSL_REDIRECT = True
        settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
        response = Client().get("/api/v1/sessions/")
        assert response.status_code == 301
        assert response["Location"] == "https://testserver/api/v1/sessions/"
        proxied = Client().get("/healthz", HTTP_X_FORWARDED_PROTO="https")
        assert proxied.status_code == 200


@pytest.mark.django_db
class TestCors:
    ORIGIN = "https://app.example.com"

    def preflight(self, path="/api/v1/sessions/", origin=ORIGIN):
        return Client().options(
            path,
            HTTP_ORIGIN=origin,
            HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
            HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, idempotency-key",
        )

    def test_it_is_off_unless_configured(self, user):
        response = client_for(user).get("/api/v1/sessions/", HTTP_ORIGIN=self.ORIGIN)
        assert response.status_code == 200
        assert "Access-Control-Allow-Origin" not in response
        assert "Access-Control-Allow-Origin" not in self.preflight()

    def test_configured_origins_may_call_the_api(self, settings, user):
        settings.CORS_ALLOWED_ORIGINS = [self.ORIGIN]
        response = client_for(user).get("/api/v1/sessions/", HTTP_ORIGIN=self.ORIGIN)
        assert response["Access-Control-Allow-Origin"] == self.ORIGIN
        assert "x-request-id" in response["Access-Control-Expose-Headers"]
        assert "Access-Control-Allow-Credentials" not in response
        preflight = self.preflight()
        assert preflight.status_code == 200
        assert preflight["Access-Control-Allow-Origin"] == self.ORIGIN
        assert "idempotency-key" in preflight["Access-Control-Allow-Headers"]

    def test_other_origins_and_the_admin_get_no_cors_headers(self, settings, user):
        settings.CORS_ALLOWED_ORIGINS = [self.ORIGIN]
        other = client_for(user).get("/api/v1/sessions/", HTTP_ORIGIN="https://evil.example")
        assert "Access-Control-Allow-Origin" not in other
        assert "Access-Control-Allow-Origin" not in self.preflight(origin="https://evil.example")
        assert "Access-Control-Allow-Origin" not in self.preflight(path="/admin/login/")


def admin_urls() -> list[str]:
    """Every admin page without an object id (changelists, add forms, the index)."""
    urls = [reverse("admin:index")]
    for model in admin_site._registry:
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        urls += [reverse(f"{prefix}_changelist"), reverse(f"{prefix}_add")]
    return urls


@pytest.mark.django_db
class TestAdminAccess:
    def test_anonymous_visitors_are_sent_to_the_login_page(self):
        session = ChatSessionFactory()
        urls = [*admin_urls()]
        if session._meta.model in admin_site._registry:
            urls.append(reverse("admin:conversations_chatsession_change", args=[session.pk]))
        for url in urls:
            response = Client().get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/"), url

    def test_a_logged_in_user_who_is_not_staff_is_refused(self):
        client = Client()
        client.force_login(UserFactory(is_staff=False))
        for url in admin_urls():
            response = client.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/"), url

    def test_an_api_token_does_not_open_the_admin(self):
        user = UserFactory(is_staff=True, is_superuser=True)
        response = client_for(user).get(reverse("admin:index"))
        assert response.status_code == 302

    def test_staff_get_in(self):
        client = Client()
        client.force_login(UserFactory(is_staff=True, is_superuser=True))
        assert client.get(reverse("admin:index")).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_tokens_never_reach_the_logs(user, json_logs):
    good = client_for(user)
    token = good._credentials["HTTP_AUTHORIZATION"].split()[1]
    session = ChatSessionFactory(user=user)
    good.get("/api/v1/sessions/")
    good.post(f"/api/v1/sessions/{session.pk}/messages/", {"role": "user"}, format="json")
    good.get("/api/v1/nowhere/")

    forged = "f0rged" + token[6:]
    responses = []
    for header in (f"Bearer {forged}", f"Token {forged}", f"Bearer {forged} extra", "Bearer"):
        responses.append(Client().get("/api/v1/sessions/", HTTP_AUTHORIZATION=header))
    assert {r.status_code for r in responses} == {401}
    envelope(responses[0], 401, "authentication_error")

    assert json_logs.where(logger="chatengine.access")
    assert json_logs.where(logger="chatengine.errors")
    assert token not in json_logs.text
    assert forged not in json_logs.text
