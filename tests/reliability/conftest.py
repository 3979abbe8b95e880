"""Shared helpers of the reliability suite: real PostgreSQL when DATABASE_URL is set."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.tests.factories import api_key_for
from chatengine.tests.conftest import (
    closed_port,
    json_logs,  # noqa: F401  (re-exported fixture)
)

BASE_DIR = Path(__file__).resolve().parents[2]


def envelope(response, status: int, error_type: str) -> dict:
    """Assert `response` is the error envelope with this status and type; return the error."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "details", "request_id"}
    assert body["error"]["type"] == error_type, body
    return body["error"]


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(user)}")
    return client


def pg_dsn() -> str:
    """A libpq URL for the database the tests use (pytest-django's test_… database)."""
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgresql://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def pg_url_for_subprocess(**params: str) -> str:
    """DATABASE_URL for a child process, pointed at the test database."""
    url = pg_dsn().replace("postgresql://", "postgres://", 1)
    if params:
        url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    return url


def raw_pg():
    """A psycopg connection of the test's own, outside Django (autocommit)."""
    import psycopg

    return psycopg.connect(pg_dsn(), autocommit=True)


def http(method: str, url: str, token: str, body=None, *, raw: bool = False):
    """(status, body) of one request to a live server; the body parsed as JSON unless `raw`."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
            return response.status, payload if raw else json.loads(payload or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_until(predicate, *, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `predicate` until it is true: waits on a state, never sleeps a guessed time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def waiting_backends(pg) -> int:
    """How many backends of this database wait on a lock they were not granted."""
    return pg.execute(
        "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE NOT l.granted AND a.datname = current_database()"
    ).fetchone()[0]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child Django process: this one's, on the test database."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(
        DJANGO_SETTINGS_MODULE="chatengine.settings",
        PYTHONPATH=str(BASE_DIR),
        CHATENGINE_THROTTLE_READS="none",
        CHATENGINE_THROTTLE_WRITES="none",
        CHATENGINE_THROTTLE_REPLIES="none",
        LOG_LEVEL="WARNING",
    )
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = pg_url_for_subprocess()
    env.update(extra)
    return env


PYTHON = sys.executable


def pytest_configure(config):
    config.addinivalue_line("markers", "server_workers(n): gunicorn workers of live_server_process")


@pytest.fixture
def live_server_process(request):
    """gunicorn (sync workers: 1, or the test's `server_workers` mark), persistent connections
    (DB_CONN_MAX_AGE=60) to the test database, tagged with an application_name so a test can
    find and cut them. Yields (base URL, application_name)."""
    mark = request.node.get_closest_marker("server_workers")
    workers = str(mark.args[0]) if mark else "1"
    app_name = f"chatengine-fault-{uuid.uuid4().hex[:8]}"
    port = closed_port()
    # A test (or module) may define a `live_server_env` fixture: more environment for the
    # server, e.g. the fake OpenAI server's URL or a Redis of the test's own.
    extra = (
        request.getfixturevalue("live_server_env")
        if "live_server_env" in (request.fixturenames)
        else {}
    )
    env = child_env(
        DATABASE_URL=pg_url_for_subprocess(application_name=app_name),
        DB_CONN_MAX_AGE="60",
        **extra,
    )
    command = [PYTHON, "-m", "gunicorn", "chatengine.wsgi:application", "-w", workers]
    command += ["-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    proc, base = start_server(command, port=port, env=env, what="gunicorn")
    try:
        yield base, app_name
    finally:
        stop_server(proc)


def start_server(
    command: list[str], *, port: int, env: dict[str, str], what: str
) -> tuple[subprocess.Popen, str]:
    """Run a chatengine server (`command`, listening on `port`) and wait until it answers
    /healthz. Returns the process and its base URL; stop it with stop_server."""
    proc = subprocess.Popen(
        command, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(up, timeout=60, what=f"{what} to answer /healthz")
    except BaseException:
        stop_server(proc)
        raise
    return proc, base


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
