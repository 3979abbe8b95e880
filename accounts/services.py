"""Writes of API tokens: issue one (its key returned once), revoke, record use."""

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

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
    """Delete the token: its key stops working at once."""
    token.delete()


def revoke_tokens_named(*, user: AbstractBaseUser, name: str) -> int:
    """Delete every token of `user` called `name`; how many there were."""
    deleted, _ = ApiToken.objects.filter(user=user, name=name).delete()
    return deleted


def record_token_use(*, token: ApiToken) -> None:
    """Stamp `last_used_at`, unless it was stamped less than LAST_USED_RESOLUTION ago."""
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    token.last_used_at = now
