from datetime import timedelta

from accounts import services


def api_key_for(user, *, name: str = "tests", expires_in: timedelta | None = None) -> str:
    """A new API key for `user`, as a client would hold it (`Authorization: Bearer <key>`).

    The root conftest's `user_token` fixture is this for `user`; call it for other users.
    """
    _, key = services.create_token(user=user, name=name, expires_in=expires_in)
    return key
