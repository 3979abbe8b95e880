"""Recently read API tokens, kept in process for CHATENGINE_TOKEN_CACHE_S seconds.

Authentication was one indexed query per request (with the user row joined): the largest part
of an authenticated no-op's cost. Each process now keeps, per key digest, the token's and the
user's column values for a few seconds and builds fresh instances from them per request (a
request may change its `request.user`; no two requests share one).

The bound: a revoked token, a deleted user or a user saved with any change (deactivation
included) is dropped here at once by the signals below, so the process that did it refuses the
key at once; every other process reads the rows again within CHATENGINE_TOKEN_CACHE_S seconds.
A change that sends no signal (`QuerySet.update()`) also takes effect within that bound. Expiry
is checked on every request against the cached expiry, which nothing changes. Unknown keys are
not cached: guessing keys cannot fill the memory, and costs its query as before.
"""

import functools
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save

from accounts.models import ApiToken

# A process rarely sees this many live keys in CHATENGINE_TOKEN_CACHE_S seconds; past it, the
# stale entries go, and if that is not enough, all of them.
MAX_ENTRIES = 10_000


@dataclass(slots=True)
class _Entry:
    token_values: list[Any]
    user_values: list[Any]
    until: float  # time.monotonic()
    db: str | None
    user_model: type


_entries: dict[str, _Entry] = {}
_lock = threading.Lock()


@functools.cache
def _attnames(model) -> tuple[str, ...]:
    return tuple(f.attname for f in model._meta.concrete_fields)


def get(digest: str) -> ApiToken | None:
    """A fresh token instance, its `user` set, from a live entry for `digest`; else None."""
    entry = _entries.get(digest)
    if entry is None or entry.until <= time.monotonic():
        return None
    token = ApiToken.from_db(entry.db, _attnames(ApiToken), entry.token_values)
    token.user = entry.user_model.from_db(entry.db, _attnames(entry.user_model), entry.user_values)
    return token


def put(digest: str, token: ApiToken) -> None:
    """Keep `token` and its (already loaded) user for CHATENGINE_TOKEN_CACHE_S seconds."""
    ttl = settings.CHATENGINE_TOKEN_CACHE_S
    if ttl <= 0:
        return
    now = time.monotonic()
    user_model = type(token.user)
    entry = _Entry(
        token_values=[getattr(token, name) for name in _attnames(ApiToken)],
        user_values=[getattr(token.user, name) for name in _attnames(user_model)],
        until=now + ttl,
        db=token._state.db,
        user_model=user_model,
    )
    with _lock:
        if len(_entries) >= MAX_ENTRIES:
            for stale in [d for d, e in _entries.items() if e.until <= now]:
                del _entries[stale]
            if len(_entries) >= MAX_ENTRIES:
                _entries.clear()
        _entries[digest] = entry


def note_use(digest: str, *, when) -> None:
    """The token's `last_used_at` was just written: the entry says so, so it is not rewritten
    on the next request."""
    entry = _entries.get(digest)
    if entry is not None:
        entry.token_values[_attnames(ApiToken).index("last_used_at")] = when


def forget(digest: str) -> None:
    with _lock:
        _entries.pop(digest, None)


def forget_user(user_id: Any) -> None:
    index = _attnames(ApiToken).index("user_id")
    with _lock:
        for digest in [d for d, e in _entries.items() if e.token_values[index] == user_id]:
            del _entries[digest]


def clear() -> None:
    with _lock:
        _entries.clear()


def _token_changed(sender, instance: ApiToken, **kwargs) -> None:
    forget(instance.digest)


def _user_changed(sender, instance, **kwargs) -> None:
    forget_user(instance.pk)


def connect_signals() -> None:
    """Called once, from AccountsConfig.ready()."""
    post_delete.connect(_token_changed, sender=ApiToken, dispatch_uid="token_cache.token_deleted")
    post_save.connect(_token_changed, sender=ApiToken, dispatch_uid="token_cache.token_saved")
    user_model = get_user_model()
    post_delete.connect(_user_changed, sender=user_model, dispatch_uid="token_cache.user_deleted")
    post_save.connect(_user_changed, sender=user_model, dispatch_uid="token_cache.user_saved")
