import uuid

from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS

from chatengine import replica
from conversations import transfer
from conversations.management.cli import ConversationsCommand, Progress, parse_moment


class Command(ConversationsCommand):
    help = (
        "Export chat sessions as JSON Lines: one session per line, its messages inside in seq "
        "order, every column kept (docs/commands.md lists the fields). Writes to stdout "
        "unless --output is given. Streams with constant memory: sessions are read in chunks "
        "and messages in keyset batches, so a million messages are never held at once. "
        "--since/--until filter on last activity (updated_at: the last message or edit). "
        "Reads from the read replica (DATABASE_REPLICA_URL) when one is configured and not "
        "too far behind, so it may miss the last seconds of writes; --primary reads the "
        "primary."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--output", "-o", metavar="FILE", help="Write here instead of stdout ('-' = stdout)."
        )
        parser.add_argument(
            "--user",
            action="append",
            default=[],
            metavar="USERNAME",
            help="Only this user's sessions; repeat for several users.",
        )
        parser.add_argument(
            "--session",
            action="append",
            default=[],
            metavar="ID",
            help="Only this session (UUID); repeat for several.",
        )
        parser.add_argument(
            "--since",
            metavar="DATE",
            help="Last activity at or after this ISO date or date-time (UTC unless an offset "
            "is given).",
        )
        parser.add_argument(
            "--until", metavar="DATE", help="Last activity before this ISO date or date-time."
        )

        parser.add_argument(
            "--primary",
            action="store_true",
            help="Read the primary database even when a read replica is configured.",
        )

    def handle(self, *args, **options):
        verbosity = options["verbosity"]
        session_ids = []
        for raw in options["session"]:
            try:
                session_ids.append(uuid.UUID(raw))
            except ValueError:
                raise CommandError(f"--session: {raw!r} is not a session id (UUID).") from None
        since = parse_moment(options["since"], option="--since") if options["since"] else None
        until = parse_moment(options["until"], option="--until") if options["until"] else None
        if since and until and since >= until:
            raise CommandError("--since must be earlier than --until.")

        sessions = transfer.sessions_for_export(
            usernames=options["user"],
            session_ids=session_ids,
            since=since,
            until=until,
            using=DEFAULT_DB_ALIAS if options["primary"] else replica.alias(),
        )
        path = options["output"]
        to_stdout = path in (None, "-")
        # With the data on stdout, the summary goes to stderr so the file stays clean.
        report = self.stderr if to_stdout else self.stdout
        progress = Progress(
            report, verbosity=verbosity, label="Exported sessions", total=sessions.count()
        )
        if to_stdout:
            # The raw stream: a line is written in pieces, which OutputWrapper would end with
            # newlines of its own.
            out = self.stdout._out
        else:
            try:
                out = open(path, "w", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise CommandError(f"--output: cannot write {path}: {exc.strerror}") from None
        try:
            result = transfer.export_sessions(
                sessions=sessions, out=out, on_session=lambda r: progress.update(r.sessions)
            )
        finally:
            progress.close()
            if not to_stdout:
                out.close()
        if verbosity >= 1:
            where = "" if to_stdout else f" to {path}"
            report.write(
                f"Exported {result.sessions} session(s), {result.messages} message(s){where}.",
                style_func=None if to_stdout else self.style.SUCCESS,
            )
