"""The migration that turns clear-text DRF tokens into digests, on a database that had them."""

import importlib
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection

from accounts import selectors
from accounts.models import ApiToken

migration = importlib.import_module("accounts.migrations.0002_import_drf_tokens")

pytestmark = pytest.mark.django_db


def _run(sql: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_existing_drf_tokens_keep_working_and_the_clear_text_table_is_dropped(user):
    # rest_framework.authtoken's table, as its migrations left it (the test rolls it back).
    _run(
        "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamp NOT NULL,"
        " user_id integer NOT NULL)"
    )
    legacy_key = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    _run(
        "INSERT INTO authtoken_token (key, created, user_id) VALUES (%s, CURRENT_TIMESTAMP, %s)",
        [legacy_key, user.pk],
    )
    editor = SimpleNamespace(connection=connection, execute=_run)

    migration.import_drf_tokens(apps, editor)

    token = selectors.token_for_key(key=legacy_key)
    assert token.user == user
    assert token.name == "migrated DRF token"
    assert legacy_key not in token.digest
    assert "authtoken_token" not in connection.introspection.table_names()


def test_it_does_nothing_without_drf_tokens(user):
    migration.import_drf_tokens(apps, SimpleNamespace(connection=connection, execute=_run))
    assert not ApiToken.objects.exists()
