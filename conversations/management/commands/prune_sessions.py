from django.core.management.base import CommandError

from conversations import bulk
from conversations.management.cli import ConversationsCommand, Progress, parse_duration


class Command(ConversationsCommand):
    help = (
        "Delete sessions (and their messages) with no activity — no message and no edit, "
        "i.e. updated_at — for longer than --older-than (e.g. 90d, 12h, 2w). Deletes in "
        "batches, one transaction each, through the session delete service (which is where "
        "cached history is invalidated). --dry-run only counts."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            required=True,
            metavar="AGE",
            help="Idle for longer than this: N followed by h (hours), d (days) or w (weeks).",
        )
        parser.add_argument("--archived-only", action="store_true", help="Only archived sessions.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what would be deleted; delete nothing."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=bulk.PRUNE_BATCH,
            metavar="N",
            help=f"Sessions per transaction (default {bulk.PRUNE_BATCH}).",
        )

    def handle(self, *args, **options):
        older_than = parse_duration(options["older_than"], option="--older-than")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        verbosity, dry_run = options["verbosity"], options["dry_run"]
        which = "archived session(s)" if options["archived_only"] else "session(s)"
        age = options["older_than"].strip()

        if dry_run:
            result = bulk.prune_sessions(
                older_than=older_than, archived_only=options["archived_only"], dry_run=True
            )
            if verbosity >= 1:
                self.stdout.write(
                    f"Dry run: would delete {result.sessions} {which} idle for more than {age}, "
                    f"with {result.messages} message(s)."
                )
            return

        estimate = bulk.prune_sessions(
            older_than=older_than, archived_only=options["archived_only"], dry_run=True
        )
        progress = Progress(
            self.stdout, verbosity=verbosity, label="Deleted sessions", total=estimate.sessions
        )
        try:
            result = bulk.prune_sessions(
                older_than=older_than,
                archived_only=options["archived_only"],
                batch_size=options["batch_size"],
                on_batch=lambda r: progress.update(r.sessions),
            )
        finally:
            progress.close()
        if verbosity >= 1:
            self.stdout.write(
                f"Deleted {result.sessions} {which} idle for more than {age}, with "
                f"{result.messages} message(s), in {result.batches} batch(es).",
                style_func=self.style.SUCCESS,
            )
