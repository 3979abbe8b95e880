"""Existing DRF tokens (rest_framework.authtoken, clear text) become ApiTokens stored as
digests, so their keys keep working; then the clear-text table is dropped.

A no-op on a database that never had DRF tokens. The digest is computed here rather than with
knox's helper, so this migration means the same thing whatever the settings become: knox hashes
the key's UTF-8 bytes with SHA-512 (accounts/tests/test_tokens.py pins that).
"""

import hashlib
import uuid

from django.db import migrations

LEGACY_TABLE = "authtoken_token"
KEY_PREFIX_CHARS = 15  # knox's CONSTANTS.TOKEN_KEY_LENGTH
NAME = "migrated DRF token"


def import_drf_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if LEGACY_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("accounts", "ApiToken")
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {quote('key')}, {quote('user_id')} FROM {quote(LEGACY_TABLE)}")
        rows = cursor.fetchall()
    ApiToken.objects.bulk_create(
        ApiToken(
            id=uuid.uuid4(),
            digest=hashlib.sha512(key.encode()).hexdigest(),
            token_key=key[:KEY_PREFIX_CHARS],
            user_id=user_id,
            name=NAME,
        )
        for key, user_id in rows
    )
    schema_editor.execute(f"DROP TABLE {quote(LEGACY_TABLE)}")
    # Forget authtoken's migrations too, so reinstalling it would create its table again.
    schema_editor.execute(
        f"DELETE FROM {quote('django_migrations')} WHERE {quote('app')} = 'authtoken'"
    )


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [
        migrations.RunPython(import_drf_tokens, migrations.RunPython.noop, elidable=True),
    ]
