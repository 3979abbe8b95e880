import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from chatengine.env import env_bool, env_int, env_list


def test_env_bool_reads_common_spellings_and_rejects_others(monkeypatch):
    monkeypatch.setenv("X", "yes")
    assert env_bool("X") is True
    monkeypatch.setenv("X", "0")
    assert env_bool("X", True) is False
    monkeypatch.setenv("X", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X must be a boolean"):
        env_bool("X")


def test_env_int_enforces_type_and_minimum(monkeypatch):
    monkeypatch.delenv("N", raising=False)
    assert env_int("N", 7) == 7
    monkeypatch.setenv("N", "12")
    assert env_int("N", 7) == 12
    monkeypatch.setenv("N", "twelve")
    with pytest.raises(ImproperlyConfigured, match="N must be an integer"):
        env_int("N", 7)
    monkeypatch.setenv("N", "-1")
    with pytest.raises(ImproperlyConfigured, match="N must be >= 0"):
        env_int("N", 7, minimum=0)


def test_env_list_splits_on_commas(monkeypatch):
    monkeypatch.setenv("L", "a.example, b.example,,")
    assert env_list("L", []) == ["a.example", "b.example"]


@pytest.mark.redis
def test_the_default_cache_is_the_real_redis_when_redis_url_is_set(redis_url):
    import redis

    cache.set("chatengine-settings-probe", {"ok": 1}, 30)
    assert cache.get("chatengine-settings-probe") == {"ok": 1}
    # Prove the value went over the wire, not into a local-memory cache.
    keys = redis.Redis.from_url(redis_url).keys("*chatengine-settings-probe*")
    assert keys


@pytest.mark.postgres
def test_db_pool_serves_queries_through_psycopg_pool():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from django.db import connection

    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/postgres"
    code = (
        "import json, django; django.setup();"
        "from django.conf import settings; from django.db import connection;"
        "c = connection.cursor(); c.execute('SELECT 1'); c.close();"
        "print(json.dumps({'pool': type(connection.pool).__name__,"
        " 'options': settings.DATABASES['default']['OPTIONS']['pool'],"
        " 'max_age': settings.DATABASES['default']['CONN_MAX_AGE']}))"
    )
    env = {**os.environ, "DATABASE_URL": url, "DB_POOL": "1", "LOG_STREAM": "stderr"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(result.stdout)
    assert out["pool"] == "ConnectionPool"
    assert out["max_age"] == 0
    assert out["options"] == {"min_size": 2, "max_size": 10, "timeout": 10}
