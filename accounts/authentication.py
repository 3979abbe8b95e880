"""API token authentication: `Authorization: Bearer <key>` (or `Token <key>`), hashed keys.

Keys are django-rest-knox tokens (accounts/models.py). knox's own lookup also deletes the
user's expired tokens on every request (one more query, and writes); here it is one indexed
query and a digest compare (accounts.selectors.token_for_key), and an expired key, a
deactivated user's key and an unknown key fail with the same error.
"""

from knox.auth import TokenAuthentication
from rest_framework.authentication import get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

INVALID_TOKEN = "Invalid token."


class BearerOrTokenAuthentication(TokenAuthentication):
    """Token auth that takes `Authorization: Bearer <key>` as well as `Token <key>`."""

    keywords = (b"bearer", b"token")

    def authenticate(self, request):
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() not in self.keywords:
            return None
        if len(auth) != 2:
            raise AuthenticationFailed("Invalid Authorization header: expected '<scheme> <key>'.")
        try:
            key = auth[1].decode()
        except UnicodeError:
            raise AuthenticationFailed("Invalid token: it must be plain ASCII.") from None
        return self.authenticate_credentials(key)

    def authenticate_credentials(self, key: str):
        # Imported here: DRF imports this class while chatengine.exceptions (which the token
        # code uses) is still loading.
        from accounts import selectors, services

        token = selectors.token_for_key(key=key)
        if token is None:
            raise AuthenticationFailed(INVALID_TOKEN)
        services.record_token_use(token=token)
        return token.user, token

    def authenticate_header(self, request):
        return "Bearer"
