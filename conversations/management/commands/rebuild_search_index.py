from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from conversations.search import create_search_indexes, drop_search_indexes, search_config


class Command(BaseCommand):
    help = (
        "Build the message search indexes again with CHATENGINE_SEARCH_CONFIG (after changing "
        "it). PostgreSQL only; builds CONCURRENTLY, so appends go on meanwhile."
    )

    def handle(self, *args, **options):
        if connection.vendor != "postgresql":
            raise CommandError("Search indexes exist only on PostgreSQL (others match substrings).")
        config = search_config()
        drop_search_indexes(connection)
        create_search_indexes(connection)
        self.stdout.write(f"Search indexes rebuilt with the '{config}' configuration.")
