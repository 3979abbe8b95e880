"""Writes of API tokens: issue one (its key returned once), revoke, record use."""

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts import token_cache
from accounts.models import ApiToken
from chatengine.exceptions import Conflict

# Enough for every client, CI job and laptop a person has; it also keeps the unpaginated
# token list short.
MAX_TOKENS_PER_USER = 100
# `last_used_at` is written at most this often per token, so authentication stays a read.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def create_token(
    *, user: AbstractBaseUser, name: str, expires_in: timedelta | None = None
) -> tuple[ApiToken, str]:
    """A new token for `user` and its key: the only time the key exists outside the client.

    `expires_in` None: the token lasts until it is revoked.
    """
    with transaction.atomic():
        # Serialise concurrent creations for one user, so the cap holds.
        type(user).objects.select_for_update().filter(pk=user.pk).first()
        if ApiToken.objects.filter(user=user).count() >= MAX_TOKENS_PER_USER:
            raise Conflict(
                f"You have {MAX_TOKENS_PER_USER} tokens, the most allowed; revoke one first."
            )
        return ApiToken.objects.create(user=user, expiry=expires_in, name=name)


def revoke_token(*, token: ApiToken) -> None:
    """Delete the token: its key stops working at once in this process, and within
    CHATENGINE_TOKEN_CACHE_S seconds in every other (accounts/token_cache.py)."""
    token.delete()


def revoke_tokens_named(*, user: AbstractBaseUser, name: str) -> int:
    """Delete every token of `user` called `name`; how many there were."""
    deleted, _ = ApiToken.objects.filter(user=user, name=name).delete()
    return deleted


def record_token_use(*, token: ApiToken) -> None:
    """Stamp `last_used_at`, unless it was stamped less than LAST_USED_RESOLUTION ago.

    The token may come from this process's cache, whose `last_used_at` can be older than the
    row's (another process stamped it since): the condition in the UPDATE keeps the row to one
    write a minute whatever the processes believe.
    """
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiToken.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION),
        pk=token.pk,
    ).update(last_used_at=now)
    token.last_used_at = now
    token_cache.note_use(token.digest, when=now)
