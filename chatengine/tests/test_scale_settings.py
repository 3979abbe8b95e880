"""Settings and routing for PgBouncer, a read replica and a Redis Cluster, without running
them (tests/scale/ runs the real ones)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import DEFAULT_DB_ALIAS

from chatengine import replica
from chatengine.tests.conftest import closed_port
from conversations.models import ChatSession, Message

ROOT = Path(__file__).resolve().parents[2]


def _settings_of(env: dict[str, str], code: str) -> dict:
    """Run `code` (printing JSON) in a fresh process configured by `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "REDIS", "DB_"))}
    result = subprocess.run(
        [sys.executable, "-c", "import json, django; django.setup()\n" + code],
        cwd=ROOT,
        env={
            **base,
            "DJANGO_SETTINGS_MODULE": "chatengine.settings",
            "LOG_STREAM": "stderr",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_router_sends_every_write_to_the_primary_and_migrates_only_it():
    router = replica.PrimaryRouter()
    from_replica = ChatSession(title="read on the replica")
    from_replica._state.db = replica.REPLICA
    assert router.db_for_write(ChatSession, instance=from_replica) == DEFAULT_DB_ALIAS
    assert router.db_for_read(Message) is None  # Django's default: the primary
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "conversations")
    assert not router.allow_migrate(replica.REPLICA, "conversations")


def test_without_a_replica_lag_tolerant_reads_use_the_primary():
    replica.reset()
    assert not replica.configured()
    assert replica.alias() == DEFAULT_DB_ALIAS


def test_pooler_replica_and_cluster_settings():
    out = _settings_of(
        {
            "DATABASE_URL": "postgres://app@10.0.0.10:6432/chatengine",
            "DATABASE_REPLICA_URL": "postgres://reader@10.0.0.12:5432/chatengine",
            "DB_TRANSACTION_POOLING": "1",
            "REDIS_URL": "redis://10.0.0.20:6379/0",
            "REDIS_CLUSTER": "1",
        },
        "from django.conf import settings as s; d = s.DATABASES\n"
        "print(json.dumps({'cursors': [d[a]['DISABLE_SERVER_SIDE_CURSORS'] for a in d],"
        " 'replica_host': d['replica']['HOST'], 'mirror': d['replica']['TEST']['MIRROR'],"
        " 'timeout': d['replica']['OPTIONS']['connect_timeout'],"
        " 'cache': s.CACHES['default']['BACKEND'], 'routers': s.DATABASE_ROUTERS}))",
    )
    assert out == {
        "cursors": [True, True],
        "replica_host": "10.0.0.12",
        "mirror": "default",
        "timeout": 2,
        "cache": "chatengine.redis.ClusterCache",
        "routers": ["chatengine.replica.PrimaryRouter"],
    }


def test_server_side_cursors_stay_on_without_a_transaction_pooler():
    out = _settings_of(
        {"DATABASE_URL": "postgres://app@10.0.0.10:5432/chatengine"},
        "from django.conf import settings as s\n"
        "print(json.dumps(s.DATABASES['default'].get('DISABLE_SERVER_SIDE_CURSORS', False)))",
    )
    assert out is False


_BINDING = (
    "from django.conf import settings as s; d = s.DATABASES\n"
    "print(json.dumps({a: [d[a]['OPTIONS'].get('server_side_binding'),"
    " d[a]['OPTIONS'].get('prepare_threshold')] for a in d}))"
)


def test_prepared_statements_are_on_with_a_direct_postgresql_connection():
    out = _settings_of(
        {
            "DATABASE_URL": "postgres://app@10.0.0.10:5432/chatengine",
            "DATABASE_REPLICA_URL": "postgres://reader@10.0.0.12:5432/chatengine",
        },
        _BINDING,
    )
    assert out == {"default": [True, 5], "replica": [True, 5]}


@pytest.mark.parametrize(
    "env",
    [
        {"DB_TRANSACTION_POOLING": "1"},
        {"DB_TRANSACTION_POOLING": "1", "DB_PREPARED_STATEMENTS": "1"},  # a pooler wins
        {"DB_PREPARED_STATEMENTS": "0"},
    ],
)
def test_prepared_statements_are_off_behind_a_transaction_pooler_or_when_asked(env):
    out = _settings_of(
        {"DATABASE_URL": "postgres://app@10.0.0.10:6432/chatengine", **env}, _BINDING
    )
    assert out == {"default": [None, None]}


def test_a_replica_that_refuses_connections_is_tried_once_then_left_alone():
    out = _settings_of(
        {
            "DATABASE_REPLICA_URL": f"postgres://reader@127.0.0.1:{closed_port()}/chatengine",
            "CHATENGINE_REPLICA_CHECK_S": "60",
        },
        "import time; from unittest import mock; from chatengine import replica\n"
        "from django.db import connections\n"
        "connect = connections['replica'].connect\n"
        "with mock.patch.object(connections['replica'], 'connect', side_effect=connect) as m:\n"
        "    first = replica.alias(); start = time.monotonic()\n"
        "    later = [replica.alias() for _ in range(100)]\n"
        "    print(json.dumps({'first': first, 'later': sorted(set(later)),"
        " 'attempts': m.call_count, 'later_s': time.monotonic() - start}))",
    )
    assert out["first"] == "default"
    assert out["later"] == ["default"]
    assert out["attempts"] == 1  # the back-off: 100 more reads, no new connection attempt
    assert out["later_s"] < 0.5


def test_the_redis_client_is_none_without_redis(settings):
    from chatengine import redis as chatengine_redis

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert chatengine_redis.client() is None


@pytest.mark.redis
def test_the_redis_client_is_the_django_caches_connection_without_a_cluster(redis_url):
    from django_redis import get_redis_connection

    from chatengine import redis as chatengine_redis

    client = chatengine_redis.client()
    assert client is get_redis_connection("default")
    assert client.ping()
