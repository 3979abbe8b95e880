from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed


class BearerOrTokenAuthentication(TokenAuthentication):
    """DRF token auth that takes `Authorization: Bearer <key>` as well as `Token <key>`."""

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

    def authenticate_header(self, request):
        return "Bearer"
