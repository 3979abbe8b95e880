"""Print a stock DRF token for a user, creating the authtoken table first if needed.

    DJANGO_SETTINGS_MODULE=bench.plain.settings python -m bench.plain.issue_token bench

Run under the plain peer's settings: its tokens are DRF's `authtoken_token` rows, whatever
chatengine itself authenticates with.
"""

import sys

import django


def main(username: str) -> None:
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    call_command("migrate", "authtoken", verbosity=0)
    user = get_user_model().objects.get(username=username)
    token, _ = Token.objects.get_or_create(user=user)
    print(token.key)


if __name__ == "__main__":
    main(sys.argv[1])
