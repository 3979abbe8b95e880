import sys

from django.core.management.base import CommandError

from conversations import import_format, transfer
from conversations.management.cli import ConversationsCommand


class Command(ConversationsCommand):
    help = (
        "Import sessions from the JSON Lines format export_sessions writes (a file, or stdin "
        "with '-' or no argument). Idempotent: sessions are keyed by id, and one that already "
        "exists is skipped, so re-importing a file creates nothing new. Every line is "
        "validated; bad lines are reported with their line number and the rest is imported. "
        "Each session is written in its own transaction, so a bad line never leaves half a "
        "session. An unknown owner is created as a user without a usable password (set one "
        "with `changepassword`), unless --no-create-users. Exit status 1 if any line was bad."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "file", nargs="?", default="-", help="JSON Lines file; '-' or absent = stdin."
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Validate and report what would be imported; write nothing.",
        )
        parser.add_argument(
            "--no-create-users",
            dest="create_users",
            action="store_false",
            help="Treat a line whose user does not exist as bad instead of creating the user.",
        )

    def handle(self, *args, **options):
        verbosity, dry_run = options["verbosity"], options["dry_run"]
        path = options["file"]
        try:
            source = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None

        def on_line(outcome: transfer.LineOutcome) -> None:
            if outcome.status == "error":
                self.stderr.write(f"line {outcome.line}: {outcome.detail}")
            elif verbosity >= 2:
                verb = {"created": "would import" if dry_run else "imported"}.get(
                    outcome.status, "skipped existing"
                )
                extra = f" ({outcome.messages} messages)" if outcome.status == "created" else ""
                self.stdout.write(
                    f"line {outcome.line}: {verb} session {outcome.session_id}{extra}"
                )

        try:
            result = transfer.import_sessions(
                lines=import_format.parse_lines(source),
                create_users=options["create_users"],
                dry_run=dry_run,
                on_line=on_line,
            )
        finally:
            if source is not sys.stdin.buffer:
                source.close()

        if verbosity >= 1:
            prefix = "Dry run: would import" if dry_run else "Imported"
            self.stdout.write(
                f"{prefix} {result.created} session(s), {result.messages} message(s); "
                f"skipped existing: {result.skipped}; bad lines: {len(result.errors)}.",
                style_func=self.style.WARNING if result.errors else self.style.SUCCESS,
            )
            if result.created_users:
                verb = "would create" if dry_run else "created"
                self.stdout.write(
                    f"{verb} user(s) without a usable password: " + ", ".join(result.created_users),
                    style_func=self.style.WARNING,
                )
            if result.reassigned:
                self.stdout.write(
                    f"{result.reassigned} session(s) got new message ids (theirs were taken).",
                    style_func=self.style.WARNING,
                )
        if result.errors:
            lines = ", ".join(str(o.line) for o in result.errors[:20])
            more = "…" if len(result.errors) > 20 else ""
            raise CommandError(f"{len(result.errors)} bad line(s): {lines}{more}")
