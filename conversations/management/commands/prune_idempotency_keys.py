from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from conversations.idempotency import prune_idempotency_keys


class Command(BaseCommand):
    help = "Delete Idempotency-Key records older than CHATENGINE_IDEMPOTENCY_TTL_HOURS (run daily)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than-hours",
            type=int,
            default=settings.CHATENGINE_IDEMPOTENCY_TTL_HOURS,
            help="age in hours (default: the TTL; never less than 24)",
        )

    def handle(self, *args, older_than_hours: int, **options):
        hours = max(older_than_hours, 24)
        deleted = prune_idempotency_keys(older_than=timedelta(hours=hours))
        self.stdout.write(f"Deleted {deleted} idempotency key(s) older than {hours} hours.")
