"""Reads of API tokens: the per-request key lookup, and a user's own tokens."""

import uuid
from hmac import compare_digest

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone
from knox.crypto import hash_token
from knox.settings import CONSTANTS

from accounts import token_cache
from accounts.models import ApiToken
from chatengine.exceptions import NotFound


def token_for_key(*, key: str) -> ApiToken | None:
    """The live token this key belongs to, with its user; None otherwise.

    From the process's token cache when it read this key less than CHATENGINE_TOKEN_CACHE_S
    seconds ago (accounts/token_cache.py says how revocation stays bounded); otherwise one
    indexed query on the key's prefix, then a constant-time compare of digests. An unknown
    key, an expired one and one whose user is deactivated all give None: the caller cannot
    tell them apart, so neither can a client.
    """
    # Looked up by the key's digest: finding a key whose digest matches a cached one is as
    # hard as finding the key, so the dict lookup leaks nothing a compare_digest would hide.
    digest = hash_token(key)
    token = token_cache.get(digest)
    if token is None:
        token = _read_token(key=key, digest=digest)
        if token is None:
            return None
        token_cache.put(digest, token)
    if token.expiry is not None and token.expiry <= timezone.now():
        return None
    if not token.user.is_active:
        return None
    return token


def _read_token(*, key: str, digest: str) -> ApiToken | None:
    candidates = ApiToken.objects.select_related("user").filter(
        token_key=key[: CONSTANTS.TOKEN_KEY_LENGTH]
    )
    for token in candidates:
        if compare_digest(digest, token.digest):
            return token
    return None


def list_tokens(*, user: AbstractBaseUser) -> list[ApiToken]:
    """The user's tokens, newest first, expired ones included (until revoked)."""
    return list(ApiToken.objects.filter(user=user).order_by("-created", "-id"))


def get_token_for_user(*, user: AbstractBaseUser, token_id: str | uuid.UUID) -> ApiToken:
    """The user's token with this id; `NotFound` for a missing id, a bad id or another's."""
    try:
        pk = token_id if isinstance(token_id, uuid.UUID) else uuid.UUID(str(token_id))
    except ValueError:
        raise NotFound("Token not found.") from None
    token = ApiToken.objects.filter(pk=pk, user=user).first()
    if token is None:
        raise NotFound("Token not found.")
    return token
