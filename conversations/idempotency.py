"""`Idempotency-Key` for POST endpoints: a retried request returns the original response.

Apply it to a view method with one line:

    class MessageListCreateView(APIView):
        @idempotent(atomic=True)     # the whole effect is one transaction (an append)
        def post(self, request, session_id): ...

    class ReplyView(APIView):
        @idempotent(atomic=False)    # long work outside a transaction (an LLM reply)
        def post(self, request, session_id): ...

Rules (Stripe's): keys are 1..255 printable ASCII characters, scoped per user, kept at least
CHATENGINE_IDEMPOTENCY_TTL_HOURS (>= 24). The same key with the same request (method, path and
canonical JSON body) replays the stored response with `Idempotent-Replayed: true` and has no
second effect; with a different request it is a 409 `conflict`. A request without the header
is not affected.

`atomic=True`: the key is claimed, the view runs and its response is stored in ONE transaction.
A concurrent duplicate waits on the key's unique index until the first commits, then replays
it; a crash or an error rolls the key back with the effect, so there is never a key without its
result or a result without its key.

`atomic=False`: the key is claimed (committed, "in progress") before the view runs, and the
response stored when it returns. A concurrent duplicate meanwhile gets a 409 `conflict` saying
the first is still in progress. If the view raises, the key is released so a retry runs again.
If the worker dies, the claim is taken over by a retry after CHATENGINE_IDEMPOTENCY_LEASE_SECONDS.

Checkpoints (`atomic=False` only): the view method receives a `checkpoint` keyword argument (a
`Checkpoint`, or None without the header) and hands it to the service doing the work. A long
operation that has already stored part of its effect (a reply stores the user message before
calling the LLM) records it with `checkpoint.save()` inside the transaction that stores it.
Released after a failure, the key then keeps that progress (no response, no lease), and the
retry that takes it over reads it from `checkpoint.progress` and does not redo that part: a
failed reply retried re-asks the LLM but never stores the user message twice.

Never use `atomic=True` around an LLM call: it would hold the transaction open across it.

A key claimed on a session's URL (a view with a `session_id` URL argument) is tied to that
session, which must be the caller's: deleting the session (API, prune_sessions, any cascade)
deletes the key in the same transaction, so its stored response (the session's content) is
never replayed; a retry then runs again and finds no session (404).

Only a DRF `Response` can be stored and replayed; for any other (a streamed reply) the key is
released (keeping its checkpoint, if any) and the response passes through (logged as
`idempotency.not_stored`).
Errors raised by the view (validation, 404, archived session, ...) are never stored: the key
stays free and the same request, retried, runs again.
"""

import functools
import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from chatengine import headers
from chatengine.events import log_event
from chatengine.exceptions import Conflict, ValidationFailed
from conversations.models import ChatSession, IdempotencyKey

HEADER = headers.IDEMPOTENCY_KEY
REPLAYED_HEADER = headers.IDEMPOTENT_REPLAYED
_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")  # fullmatch: "$" would let "k\n" through
_CLAIM_ATTEMPTS = 3

OPENAPI_PARAMETER = OpenApiParameter(
    name=HEADER,
    type=OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=False,
    pattern=r"^[ -~]{1,255}$",  # the same rule as _VALID_KEY, for clients and fuzzers
    description=(
        "Up to 255 printable ASCII characters, unique per request you mean to make once. "
        "A retry with the same key and body returns the original response "
        f"(with `{REPLAYED_HEADER}: true`); the same key with another body is a 409."
    ),
)


@dataclass(frozen=True)
class Checkpoint:
    """The progress a long request (`atomic=False`) has stored, kept on its claimed key."""

    record: IdempotencyKey

    @property
    def progress(self) -> dict[str, Any]:
        """What an earlier, failed attempt with this key recorded ({} on a first attempt)."""
        if self.record.response_status is not None:
            return {}
        return dict(self.record.response_body or {})

    def save(self, **progress: Any) -> None:
        """Record part of the request's effect on its key.

        Call it inside the transaction that stores that effect, so the two commit together.
        """
        self.record.response_body = {**(self.record.response_body or {}), **progress}
        IdempotencyKey.objects.filter(pk=self.record.pk).update(
            response_body=self.record.response_body
        )


def idempotent(*, atomic: bool):
    """Decorate an APIView method (post) so it honours the `Idempotency-Key` header.

    With `atomic=False` the method also gets `checkpoint=` (a `Checkpoint`, None without a key).
    """

    def decorate(view_method):
        @functools.wraps(view_method)
        def wrapper(view, request: Request, *args, **kwargs):
            key = idempotency_key_from(request)
            if key is None:
                if not atomic:
                    kwargs["checkpoint"] = None
                return view_method(view, request, *args, **kwargs)
            fingerprint = request_fingerprint(
                method=request.method, path=request.path, body=request.data
            )
            claim = functools.partial(
                claim_key,
                user=request.user,
                key=key,
                fingerprint=fingerprint,
                session_id=kwargs.get("session_id"),
            )
            if atomic:
                with transaction.atomic():
                    record, replay = claim()
                    if replay is not None:
                        return replay
                    response = view_method(view, request, *args, **kwargs)
                    _store(record=record, response=response)
                    return response

            record, replay = claim()
            if replay is not None:
                return replay
            try:
                response = view_method(
                    view, request, *args, checkpoint=Checkpoint(record), **kwargs
                )
            except BaseException:
                release_key(record=record)
                raise
            _store(record=record, response=response)
            return response

        return extend_schema(parameters=[OPENAPI_PARAMETER])(wrapper)

    return decorate


def idempotency_key_from(request: Request) -> str | None:
    """The request's Idempotency-Key, None without one; 400 when it is not a valid key."""
    raw = request.META.get("HTTP_IDEMPOTENCY_KEY")
    if raw is None:
        return None
    if not _VALID_KEY.fullmatch(raw):
        raise ValidationFailed(
            f"{HEADER}: must be 1 to 255 printable ASCII characters.",
            details={HEADER: ["Must be 1 to 255 printable ASCII characters."]},
        )
    return raw


def request_fingerprint(*, method: str, path: str, body: Any) -> str:
    """sha256 of method, path and the body as canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str
    )
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


def claim_key(
    *, user: AbstractBaseUser, key: str, fingerprint: str, session_id: Any = None
) -> tuple[IdempotencyKey | None, Response | None]:
    """Claim `key` for this request: (record, None) to go ahead, (None, response) to replay.

    Raises `Conflict` when the key belongs to another request or is still in progress.
    Concurrency rests on the (user, key) unique index and the row lock, never on timing: a
    second INSERT of the same key waits until the first transaction ends.

    A claim is tied to the session `session_id` (the URL's) when it is the user's.
    """
    now = timezone.now()
    for _ in range(_CLAIM_ATTEMPTS):
        with transaction.atomic():
            record, replay = _claim_once(user=user, key=key, fingerprint=fingerprint, now=now)
            if record is not None:
                _tie_to_session(record=record, user=user, session_id=session_id)
            if record is not None or replay is not None:
                return record, replay
    raise Conflict(
        f"This {HEADER} is being used concurrently; retry later.",
        headers={"Retry-After": "1"},
    )


def _claim_once(
    *, user: AbstractBaseUser, key: str, fingerprint: str, now
) -> tuple[IdempotencyKey | None, Response | None]:
    """One attempt of claim_key; (None, None) when the key vanished meanwhile (try again)."""
    try:
        with transaction.atomic():
            record = IdempotencyKey.objects.create(
                user=user, key=key, fingerprint=fingerprint, locked_at=now
            )
        return record, None
    except IntegrityError:
        pass
    record = IdempotencyKey.objects.select_for_update().filter(user=user, key=key).first()
    if record is None:  # released or pruned since our INSERT failed: try again
        return None, None
    if record.created_at < now - _ttl():
        # Expired but not yet pruned: the key is free again.
        _reset(record=record, fingerprint=fingerprint, now=now)
        return record, None
    if record.fingerprint != fingerprint:
        raise Conflict(
            f"This {HEADER} was already used for a different request; "
            "use a new key for a new request.",
            details={HEADER: ["Already used with another method, path or body."]},
        )
    if record.response_status is not None:
        log_event("idempotency.replayed", user_id=user.pk)
        return None, Response(
            record.response_body,
            status=record.response_status,
            headers={REPLAYED_HEADER: "true"},
        )
    if record.locked_at is None or record.locked_at < now - _lease():
        # Its owner died without finishing or releasing it: take it over.
        record.locked_at = now
        record.save(update_fields=["locked_at"])
        return record, None
    raise Conflict(
        f"A request with this {HEADER} is still in progress; retry later.",
        details={HEADER: ["In progress."]},
        headers={"Retry-After": "1"},
    )


def _tie_to_session(*, record: IdempotencyKey, user: AbstractBaseUser, session_id: Any) -> None:
    """Tie a claimed key to the user's session `session_id`, in the claim's transaction.

    The session row stays locked until the claim commits, which orders it against a delete of
    the session: the delete either came first (the key stays untied, and the view answers
    404) or waits and deletes the key with the session. A missing, malformed or another
    user's id ties nothing (the view answers 404 and the key is released). The session is
    locked after the key is claimed, so a duplicate request queues on the key's unique index.
    """
    try:
        pk = uuid.UUID(str(session_id)) if session_id is not None else None
    except ValueError:
        pk = None
    if pk is not None and record.session_id == pk:
        return  # a claim taken over: tied when first claimed (the tie goes with the session)
    tied = None
    if pk is not None:
        mine = ChatSession.objects.select_for_update().filter(pk=pk, user=user)
        tied = mine.values_list("pk", flat=True).first()
    if record.session_id != tied:
        record.session_id = tied
        IdempotencyKey.objects.filter(pk=record.pk).update(session_id=tied)


def release_key(*, record: IdempotencyKey) -> None:
    """Give a claimed, unfinished key back, so the same request can be retried.

    A key with a checkpoint stays (unlocked, so a retry takes it over at once and resumes
    from the checkpoint); one without is deleted.
    """
    unfinished = IdempotencyKey.objects.filter(pk=record.pk, response_status__isnull=True)
    unfinished.filter(response_body__isnull=True).delete()
    unfinished.update(locked_at=None)


def prune_idempotency_keys(*, older_than: timedelta | None = None) -> int:
    """Delete keys created before now - `older_than` (default: the TTL); returns how many."""
    cutoff = timezone.now() - (older_than if older_than is not None else _ttl())
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def _store(*, record: IdempotencyKey, response) -> None:
    if not isinstance(response, Response) or getattr(response, "streaming", False):
        release_key(record=record)
        log_event("idempotency.not_stored", level=logging.WARNING, reason="not a JSON response")
        return
    # An UPDATE, not save(): if the session was deleted meanwhile the key went with it, and
    # there is nothing to store (save() would raise).
    IdempotencyKey.objects.filter(pk=record.pk).update(
        response_status=response.status_code, response_body=response.data, locked_at=None
    )


def _reset(*, record: IdempotencyKey, fingerprint: str, now) -> None:
    # An expired key starts over: its checkpoint belonged to the old request.
    record.fingerprint = fingerprint
    record.response_status = None
    record.response_body = None
    record.created_at = now
    record.locked_at = now
    record.save()


def _ttl() -> timedelta:
    return timedelta(hours=settings.CHATENGINE_IDEMPOTENCY_TTL_HOURS)


def _lease() -> timedelta:
    return timedelta(seconds=settings.CHATENGINE_IDEMPOTENCY_LEASE_SECONDS)
