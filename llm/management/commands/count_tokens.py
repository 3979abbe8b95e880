import uuid

from django.core.management.base import CommandError

from conversations import services
from conversations.management.cli import ConversationsCommand, Progress
from conversations.models import ChatSession, Message


class Command(ConversationsCommand):
    help = (
        "Recount token_count of stored messages with each session's current model encoding "
        "(e.g. after changing LLM_MODEL, a session's model or TIKTOKEN_CACHE_DIR), keeping each "
        "session's total_tokens equal to the sum. Works in keyset batches, one short "
        "transaction each; --dry-run only reports how many would change."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--session",
            action="append",
            metavar="ID",
            help="Only this session (repeatable). Default: every session.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would change; write nothing."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=services.RECOUNT_BATCH,
            metavar="N",
            help=f"Messages per transaction (default {services.RECOUNT_BATCH}).",
        )

    def handle(self, *args, **options):
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        session_ids = None
        if options["session"]:
            session_ids = [self._session_id(value) for value in options["session"]]
            missing = set(session_ids) - set(
                ChatSession.objects.filter(pk__in=session_ids).values_list("pk", flat=True)
            )
            if missing:
                raise CommandError(
                    f"--session: no such session: {', '.join(sorted(map(str, missing)))}."
                )
        verbosity, dry_run = options["verbosity"], options["dry_run"]
        messages = Message.objects.all()
        if session_ids is not None:
            messages = messages.filter(session_id__in=session_ids)
        progress = Progress(self.stdout, verbosity=verbosity, label="Scanned messages", total=0)
        if progress.enabled:  # the count is one more scan: only worth it for a progress line
            progress.total = messages.count()
        try:
            result = services.recount_tokens(
                session_ids=session_ids,
                batch_size=options["batch_size"],
                dry_run=dry_run,
                on_batch=lambda r: progress.update(r.scanned),
            )
        finally:
            progress.close()
        if verbosity >= 1:
            if dry_run:
                self.stdout.write(
                    f"Dry run: scanned {result.scanned} message(s); {result.changed} would "
                    f"change, in {result.sessions} session(s)."
                )
            else:
                self.stdout.write(
                    f"Scanned {result.scanned} message(s); changed {result.changed}; updated "
                    f"{result.sessions} session(s).",
                    style_func=self.style.SUCCESS,
                )

    @staticmethod
    def _session_id(value: str) -> uuid.UUID:
        try:
            return uuid.UUID(value)
        except ValueError:
            raise CommandError(f"--session: {value!r} is not a session id (a UUID).") from None
