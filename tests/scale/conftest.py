"""The scale suite: real PgBouncer, a streaming replica, a Redis Cluster and two app nodes.

One session-scoped fixture starts the environment (tests/scale/env.py) once for every scale
test and stops it at the end; if `make scale-up` already started one, it is used and left
running. Without the programs it needs the suite skips, or fails under
CHATENGINE_REQUIRE_SERVICES=1 (CI installs them in .ci/run).
"""

import json
import re
import threading
import time
from dataclasses import dataclass, field

import psycopg
import pytest
import requests

from conftest import REQUIRE_SERVICES
from tests.scale import env

PASSWORD = "scale-test-password-1"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/scale/" in str(item.fspath):
            item.add_marker(pytest.mark.scale)


@dataclass
class Scale:
    state: dict
    keys: dict[str, str]
    _clients: dict = field(default_factory=dict)

    @property
    def nodes(self) -> list[str]:
        return [node["url"] for node in self.state["nodes"]]

    def api(self, node: int, user: str = "alice") -> "Api":
        """An HTTP client of `user` (Bearer token) on app node `node` (0 or 1), per thread."""
        key = (node, user, threading.get_ident())
        if key not in self._clients:
            self._clients[key] = Api(f"{self.nodes[node]}/api/v1", self.keys[user])
        return self._clients[key]

    def admin(self, node: int) -> "Api":
        """A logged-in admin browser (staff user, session cookie, CSRF) on app node `node`."""
        client = Api(self.nodes[node], None)
        form = client.get("/admin/login/?next=/admin/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)[1]
        done = client.post(
            "/admin/login/?next=/admin/",
            data={"csrfmiddlewaretoken": token, "username": "staff", "password": PASSWORD},
            headers={"Referer": f"{self.nodes[node]}/admin/login/"},
        )
        assert "Site administration" in done.text, done.text[:2000]
        return client

    def primary(self) -> psycopg.Connection:
        """A direct connection to the primary (not through PgBouncer), autocommit."""
        return psycopg.connect(env.dsn(env.PRIMARY_PORT), autocommit=True)

    def replica(self) -> psycopg.Connection:
        return psycopg.connect(env.dsn(env.REPLICA_PORT), autocommit=True, connect_timeout=2)


class Api(requests.Session):
    """requests with a base URL (and a Bearer token for the API)."""

    def __init__(self, base: str, token: str | None) -> None:
        super().__init__()
        self.base = base
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", 30)
        return super().request(method, self.base + url, *args, **kwargs)


def wait_until(predicate, *, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `predicate` until it is true: waits on a state, never sleeps a guessed time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


_USERS = f"""
import json
from django.contrib.auth.models import User
from accounts.services import create_token
keys = {{}}
for name in ("alice", "bob"):
    user = User.objects.create_user(name)
    keys[name] = create_token(user=user, name="scale")[1]
User.objects.create_superuser("staff", "staff@example.com", {PASSWORD!r})
print(json.dumps(keys))
"""


@pytest.fixture(scope="session")
def scale():
    missing = env.missing_tools()
    if missing:
        reason = f"the scale environment needs {', '.join(missing)}"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (CHATENGINE_REQUIRE_SERVICES=1 makes this a failure)")
        pytest.skip(reason)
    existing = env.load()
    if existing is not None and not env.alive(existing):
        env.down()  # left over from a run that did not stop it (its processes are gone)
        existing = None
    started = existing is None
    state = env.up() if started else existing
    try:
        keys_path = env.STATE_DIR / "keys.json"
        if not keys_path.exists():
            # Through PgBouncer, as the nodes run it: a command working there too.
            keys_path.write_text(env.manage("shell", "-c", _USERS).strip().splitlines()[-1])
        scale = Scale(state=state, keys=json.loads(keys_path.read_text()))
        yield scale
        for client in scale._clients.values():
            client.close()
    finally:
        if started:
            env.down()
