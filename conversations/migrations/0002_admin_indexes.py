"""Indexes for the support admin.

The trigram index is PostgreSQL-only (pg_trgm), so it is created by a RunPython step that does
nothing on other databases: the SQLite test/dev database keeps working and searches content with
a plain (slower) LIKE scan. README.md, "Admin", says why trigrams rather than full-text search.
"""

import django.db.models.expressions
from django.db import migrations, models

TRGM_INDEX = "message_content_upper_trgm_idx"


def create_content_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # UPPER(content): Django compiles `content__icontains` on PostgreSQL to
    # UPPER("content"::text) LIKE UPPER(%s), so this expression is what the planner can match.
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {TRGM_INDEX} ON conversations_message "
        "USING gin (UPPER(content) gin_trgm_ops)"
    )


def drop_content_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX IF EXISTS {TRGM_INDEX}")


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0001_initial'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='chatsession',
            index=models.Index(django.db.models.expressions.OrderBy(django.db.models.expressions.F('last_message_at'), descending=True, nulls_last=True), django.db.models.expressions.OrderBy(django.db.models.expressions.F('id'), descending=True), name='session_last_activity_idx'),
        ),
        migrations.AddIndex(
            model_name='message',
            index=models.Index(condition=models.Q(('finish_reason__in', ('error', 'interrupted')), ('role', 'assistant')), fields=['session'], name='message_session_failed_idx'),
        ),
        migrations.RunPython(create_content_trigram_index, drop_content_trigram_index, elidable=False),
    ]
