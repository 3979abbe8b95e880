from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from accounts import services
from accounts.models import TOKEN_NAME_MAX_CHARS
from chatengine.exceptions import ApplicationError
from conversations.management.cli import ConversationsCommand, parse_duration


class Command(ConversationsCommand):
    help = (
        "Create an API token for a user and print its key, alone on the last line (the only "
        "time it is shown: only its digest is stored). The user lists and revokes tokens at "
        "/api/v1/tokens/."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="What the token is for (default: cli).")
        parser.add_argument(
            "--expires-in",
            metavar="DURATION",
            help="Lifetime such as 90d, 12h or 2w (default: until revoked).",
        )

    def handle(self, *args, **options):
        User = get_user_model()
        name = options["name"]
        if not name or len(name) > TOKEN_NAME_MAX_CHARS:
            raise CommandError(f"--name must be 1 to {TOKEN_NAME_MAX_CHARS} characters.")
        expires_in = None
        if options["expires_in"] is not None:
            expires_in = parse_duration(options["expires_in"], option="--expires-in")
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: options["username"]})
        except User.DoesNotExist:
            raise CommandError(f"No user {options['username']!r}.") from None
        if not user.is_active:
            raise CommandError(
                f"User {options['username']!r} is deactivated: no key of theirs works."
            )
        try:
            token, key = services.create_token(user=user, name=name, expires_in=expires_in)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        if options["verbosity"] >= 1:
            expiry = token.expiry.isoformat() if token.expiry else "never"
            self.stdout.write(
                f"Token {token.name!r} (id {token.pk}) for {options['username']}, "
                f"expires: {expiry}."
            )
        self.stdout.write(key)
