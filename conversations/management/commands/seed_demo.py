from django.core.management.base import CommandError

from conversations import bulk
from conversations.management.cli import ConversationsCommand, Progress


class Command(ConversationsCommand):
    help = (
        "Create the 'demo' user with an API token and a few realistic sessions (one archived, "
        "one with a tool call), so the README's curl examples work right after `make run`. "
        "Safe to re-run: nothing is duplicated, and the password is kept unless --password is "
        "given. With --sessions N --messages M, also bulk-inserts N load-test sessions of M "
        "messages each for the demo user (every run adds N more)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--password",
            help="Set the demo user's password (default: generated for a new user, kept for "
            "an existing one).",
        )
        parser.add_argument(
            "--sessions",
            type=int,
            default=0,
            metavar="N",
            help="Load data: this many extra sessions (default 0).",
        )
        parser.add_argument(
            "--messages",
            type=int,
            default=20,
            metavar="M",
            help="Load data: messages per extra session (default 20).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=bulk.SEED_BATCH,
            metavar="N",
            help=f"Load data: messages per insert transaction (default {bulk.SEED_BATCH}).",
        )

    def handle(self, *args, **options):
        verbosity = options["verbosity"]
        if options["sessions"] < 0 or options["messages"] < 0:
            raise CommandError("--sessions and --messages must not be negative.")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        if options["password"] == "":
            raise CommandError("--password must not be empty.")

        demo = bulk.seed_demo_user(password=options["password"])
        if verbosity >= 1:
            state = "created" if demo.user_created else "already there"
            self.stdout.write(f"User {bulk.DEMO_USERNAME!r}: {state}.")
            if demo.password is not None:
                self.stdout.write(f"Password: {demo.password}")
            else:
                self.stdout.write("Password: unchanged (use --password to set one).")
            self.stdout.write(f"API token: {demo.token}")
            self.stdout.write(
                f"Demo sessions: {demo.sessions_created} created, "
                f"{demo.sessions_existing} already there.",
                style_func=self.style.SUCCESS,
            )
            self.stdout.write(
                f'Try: curl -H "Authorization: Bearer {demo.token}" '
                "http://127.0.0.1:8000/api/v1/sessions/"
            )

        if options["sessions"]:
            total = options["sessions"] * options["messages"]
            progress = Progress(
                self.stdout, verbosity=verbosity, label="Seeded messages", total=total
            )
            try:
                load = bulk.seed_load_data(
                    user=demo.user,
                    sessions=options["sessions"],
                    messages_per_session=options["messages"],
                    batch_size=options["batch_size"],
                    on_batch=lambda r: progress.update(r.messages),
                )
            finally:
                progress.close()
            if verbosity >= 1:
                self.stdout.write(
                    f"Load data: {load.sessions} session(s), {load.messages} message(s).",
                    style_func=self.style.SUCCESS,
                )
