"""Indexes for the support admin.

Two are PostgreSQL-only, created by a RunPython step that does nothing on other databases, so
the SQLite test/dev database keeps working (it searches content with a plain, slower LIKE scan,
and SQLite cannot build NULLS LAST indexes):
- a trigram GIN index for message content search (docs/admin.md says why trigrams rather
  than full-text search);
- the session list order, last activity first with never-used sessions last.
"""

from django.db import migrations, models

TRGM_INDEX = "message_content_upper_trgm_idx"
ACTIVITY_INDEX = "session_last_activity_idx"


def create_postgres_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # Matches the admin's ordering (-last_message_at NULLS LAST, then -pk for a stable order).
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {ACTIVITY_INDEX} ON conversations_chatsession "
        "(last_message_at DESC NULLS LAST, id DESC)"
    )
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # UPPER(content): Django compiles `content__icontains` on PostgreSQL to
    # UPPER("content"::text) LIKE UPPER(%s), so this expression is what the planner can match.
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {TRGM_INDEX} ON conversations_message "
        "USING gin (UPPER(content) gin_trgm_ops)"
    )


def drop_postgres_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX IF EXISTS {TRGM_INDEX}")
    schema_editor.execute(f"DROP INDEX IF EXISTS {ACTIVITY_INDEX}")


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0001_initial'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='message',
            index=models.Index(condition=models.Q(('finish_reason__in', ('error', 'interrupted')), ('role', 'assistant')), fields=['session'], name='message_session_failed_idx'),
        ),
        migrations.RunPython(create_postgres_indexes, drop_postgres_indexes, elidable=False),
    ]
