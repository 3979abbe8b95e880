"""Live chatengine servers for the facade tests: the stock `openai` SDK is the client.

Each server is a child process on a free loopback port, on the test database (PostgreSQL:
the tests using them are transactional) and this run's Redis. Started once per module and
kind (gunicorn = WSGI, uvicorn = ASGI; the echo provider or the fake OpenAI server), since a
server only reads the database: every test makes its own user, token and rows.
"""

import openai
import pytest

from llm.tests.fake_openai import FakeOpenAI
from tests.reliability.conftest import (
    PYTHON,
    child_env,
    closed_port,
    pg_url_for_subprocess,
    start_server,
    stop_server,
)


def _serve(kind: str, env: dict[str, str]):
    port = closed_port()
    if kind == "asgi":
        command = [
            PYTHON,
            "-m",
            "uvicorn",
            "chatengine.asgi:application",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--http",
            "chatengine.uvicorn_http:NoDelayH11Protocol",
        ]
    else:
        command = [PYTHON, "-m", "gunicorn", "chatengine.wsgi:application", "-w", "2"]
        command += ["-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    return start_server(command, port=port, env=env, what=f"the {kind} server")


def _server_env(**extra: str) -> dict[str, str]:
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a live server needs PostgreSQL (DATABASE_URL)")
    return child_env(DATABASE_URL=pg_url_for_subprocess(), **extra)


@pytest.fixture(scope="module")
def module_fake_llm():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_llm(module_fake_llm):
    module_fake_llm.reset()
    return module_fake_llm


def _llm_env(fake: FakeOpenAI) -> dict[str, str]:
    return {
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "OPENAI_BASE_URL": fake.base_url,
        "LLM_MAX_RETRIES": "0",
        "LLM_TIMEOUT_S": "2",  # the 504 test waits this long
    }


@pytest.fixture(scope="module")
def echo_server(django_db_setup, django_db_blocker):
    """gunicorn with the echo provider (what `make run` has without an API key)."""
    with django_db_blocker.unblock():
        env = _server_env(LLM_PROVIDER="echo")
    proc, base = _serve("wsgi", env)
    yield base
    stop_server(proc)


@pytest.fixture(scope="module")
def fake_server(django_db_setup, django_db_blocker, module_fake_llm):
    """gunicorn pointed at the fake OpenAI server."""
    with django_db_blocker.unblock():
        env = _server_env(**_llm_env(module_fake_llm))
    proc, base = _serve("wsgi", env)
    yield base
    stop_server(proc)


@pytest.fixture(scope="module")
def asgi_fake_server(django_db_setup, django_db_blocker, module_fake_llm):
    """uvicorn (ASGI: async streaming) pointed at the fake OpenAI server."""
    with django_db_blocker.unblock():
        env = _server_env(**_llm_env(module_fake_llm))
    proc, base = _serve("asgi", env)
    yield base
    stop_server(proc)


def sdk(base: str, token: str, **options) -> openai.OpenAI:
    """The stock SDK client, as a user of chatengine would make it."""
    return openai.OpenAI(base_url=f"{base}/v1", api_key=token, **{"max_retries": 0, **options})


def async_sdk(base: str, token: str, **options) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=token, **{"max_retries": 0, **options})


@pytest.fixture
def inprocess_sdk(user_token):
    """The stock SDK talking to this process's WSGI app (for settings a test changes).

    As Django's test client does, the handler's connection closing is switched off, so the
    app runs in the test's transaction.
    """
    import httpx2
    from django.core import signals
    from django.core.wsgi import get_wsgi_application
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    transport = httpx2.WSGITransport(app=get_wsgi_application())
    client = openai.OpenAI(
        base_url="http://testserver/v1",
        api_key=user_token,
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )
    try:
        yield client
    finally:
        client.close()
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
