"""Full-text search indexes (conversations/search.py), PostgreSQL only.

GIN indexes on the very expressions the search queries use (`search.tsvector_sql`), with the
text search configuration of CHATENGINE_SEARCH_CONFIG at migration time ('simple' by
default). Built CONCURRENTLY (so the migration is not atomic): a large messages table keeps
taking appends while the index builds. After changing the setting, `manage.py
rebuild_search_index` builds them again with the new configuration.
"""

from django.db import migrations

from conversations.search import create_search_indexes, drop_search_indexes


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        create_search_indexes(schema_editor.connection)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        drop_search_indexes(schema_editor.connection)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("conversations", "0009_branching"),
    ]

    operations = [
        migrations.RunPython(create, drop, elidable=False),
    ]
