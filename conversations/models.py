import uuid
from collections.abc import Collection
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Greatest
from django.dispatch import Signal
from django.utils import timezone

# Assistant replies that did not complete: the admin's "has errors" filter looks for these.
FAILED_FINISH_REASONS = ("error", "interrupted")


class ChatSession(models.Model):
    """One conversation of one user, with counters kept in step by `append_message` (and by
    message deletes, see MessageQuerySet)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_sessions"
    )

    class TitleSource(models.TextChoices):
        USER = "user"
        AUTO = "auto"

    title = models.CharField(max_length=255, blank=True, default="")
    # Who chose the title: the user (at creation or by a change, even a blank one), or the
    # engine after the first reply (llm/titles.py); null while neither has. A user's title is
    # never replaced by an automatic one.
    title_source = models.CharField(  # noqa: DJ001
        max_length=8, choices=TitleSource.choices, null=True, blank=True, editable=False
    )
    system_prompt = models.TextField(blank=True, default="")
    model = models.CharField(
        max_length=128, blank=True, default="", help_text="LLM model name; blank = the default."
    )
    metadata = models.JSONField(default=dict, blank=True)
    archived = models.BooleanField(default=False)
    # A fork (conversations/branching.py) starts as a copy of its parent's messages
    # 1..forked_at_seq. The parent may be deleted later: the fork keeps its copy and the seq.
    forked_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks"
    )
    forked_at_seq = models.PositiveIntegerField(null=True, blank=True)

    class ContextStrategy(models.TextChoices):
        # The newest messages that fit; older ones are left out.
        WINDOW = "window"
        # The same window, plus a rolling summary of what fell out of it (llm/summaries.py).
        SUMMARY = "summary"

    # The default comes from settings.LLM_CONTEXT_STRATEGY at create (services.create_session).
    # db_default too: raw inserts (bench/seed.py, bulk loads) that predate the column work.
    context_strategy = models.CharField(
        max_length=16,
        choices=ContextStrategy.choices,
        default=ContextStrategy.WINDOW,
        db_default=ContextStrategy.WINDOW,
    )

    # Denormalised, written only under the session row lock: append_message adds, a message
    # delete (MessageQuerySet.delete) takes back.
    message_count = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    last_message_at = models.DateTimeField(null=True, blank=True)
    # The highest seq handed out; seq stays gapless and unique even if a message is deleted.
    last_seq = models.PositiveIntegerField(default=0, editable=False)
    # When a stored message last changed other than by an append (an edit, a recount, a
    # delete): part of the history cache's stamp. Not activity, so not updated_at (prune and
    # the session list order by that).
    history_changed_at = models.DateTimeField(null=True, blank=True, editable=False)

    # default=, not auto_now_add: an import keeps the time it is given (auto_now_add would
    # overwrite it); editable=False and blank=True keep auto_now_add's form behaviour.
    created_at = models.DateTimeField(default=timezone.now, editable=False, blank=True)
    # auto_now: every save() is activity. An import sets its own value with update() after
    # the insert (transfer.keep_updated_at), which auto_now does not touch.
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["user", "-updated_at", "-id"], name="session_user_recent_idx"),
        ]

    def __str__(self) -> str:
        return self.title or str(self.id)


# Sent inside the transaction that changed stored messages of these sessions (not by an
# append), once their stamps have moved; conversations/signals.py drops their cached tails.
history_changed = Signal()  # kwargs: session_ids, using


def _history_changed(
    *, session_ids: Collection[Any], using: str, counters: dict[Any, tuple[int, int]] | None = None
) -> None:
    """Move the sessions' history stamp and, after a delete, take back what it removed.

    `counters`: per session, (messages, tokens) deleted. last_seq stays: a seq is never reused.
    Every caller holds the session rows before it touches a message row (an edit by this
    UPDATE, run first; a delete by locking them first): the order append_message and
    recount_tokens lock in, so no path can deadlock another.
    """
    now = timezone.now()
    sessions = ChatSession.objects.using(using)
    if not counters:
        sessions.filter(pk__in=list(session_ids)).update(history_changed_at=now)
    else:
        for session_id in session_ids:
            messages, tokens = counters.get(session_id, (0, 0))
            sessions.filter(pk=session_id).update(
                history_changed_at=now,
                message_count=Greatest(F("message_count") - messages, 0),
                total_tokens=Greatest(F("total_tokens") - tokens, 0),
            )
    history_changed.send(sender=Message, session_ids=list(session_ids), using=using)


class MessageQuerySet(models.QuerySet):
    """Every write of stored messages other than an insert changes its sessions' stamp.

    The history cache trusts a tail only while the session row's stamp is the one it was built
    for; so `update()` (and `bulk_update()`, which calls it), `delete()` and, on Message,
    `save()` of an existing row and `delete()` all move the stamp in the same transaction.
    A cached tail that missed the change (Redis down when it was dropped) then no longer
    matches and is rebuilt from the database. Deletes also take the rows back out of the
    session's message_count and total_tokens. (A session's own delete cascades to its
    messages without coming here: nothing is left to stamp.)
    """

    def _session_ids(self) -> list[Any]:
        return list(self.order_by().values_list("session_id", flat=True).distinct())

    def update(self, **kwargs: Any) -> int:
        with transaction.atomic(using=self.db, savepoint=False):
            session_ids = self._session_ids()
            if not session_ids:
                return 0
            _history_changed(session_ids=session_ids, using=self.db)
            # Only the sessions just stamped: a session whose first matching row appeared
            # meanwhile is left as it is, never changed without its stamp.
            return super(MessageQuerySet, self.filter(session_id__in=session_ids)).update(**kwargs)

    update.alters_data = True

    def delete(self) -> tuple[int, dict[str, int]]:
        with transaction.atomic(using=self.db, savepoint=False):
            session_ids = self._session_ids()
            if not session_ids:
                return 0, {}
            # Locked first, so the sums below are exactly what the DELETE removes: an append
            # or another delete of these sessions waits until this commits (and the DELETE is
            # kept to them).
            list(
                ChatSession.objects.using(self.db)
                .select_for_update()
                .filter(pk__in=session_ids)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            scoped = self.filter(session_id__in=session_ids)
            gone = (
                scoped.order_by()
                .values("session_id")
                .annotate(messages=Count("pk"), tokens=Sum("token_count"))
            )
            counters = {row["session_id"]: (row["messages"], row["tokens"] or 0) for row in gone}
            MessageVersion.objects.using(self.db).filter(
                message__in=scoped.order_by().values("pk")
            ).delete()
            deleted = super(MessageQuerySet, scoped).delete()
            _history_changed(session_ids=session_ids, using=self.db, counters=counters)
            return deleted

    delete.alters_data = True
    delete.queryset_only = True


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"

    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveIntegerField(help_text="1-based, gapless position in the session.")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    name = models.CharField(max_length=64, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    token_count = models.PositiveIntegerField(default=0)

    # OpenAI chat-format tool calling: an assistant message may call tools, a tool message
    # answers one call.
    tool_calls = models.JSONField(null=True, blank=True)
    tool_call_id = models.CharField(max_length=128, blank=True, default="")
    # Sent in every context, like the system messages (llm/context.py), and never folded
    # into a summary.
    # db_default too: raw inserts that do not list the column (INSERT ... SELECT) get False.
    pinned = models.BooleanField(default=False, db_default=False)

    # Filled only on replies the engine generated (null elsewhere).
    # null, not "", on purpose: the API distinguishes "not generated" from an empty value.
    model = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    usage = models.JSONField(null=True, blank=True)
    finish_reason = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    context = models.JSONField(null=True, blank=True)
    # How many answers have stood at this seq, this one included: a regenerate keeps the one
    # it replaces as a MessageVersion and adds one here (1 = never regenerated).
    versions = models.PositiveIntegerField(default=1, db_default=1)

    # default=, not auto_now_add: an import keeps the time it is given (see ChatSession).
    created_at = models.DateTimeField(default=timezone.now, editable=False, blank=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        constraints = [
            # Also the index every ordered history read uses.
            models.UniqueConstraint(fields=["session", "seq"], name="message_session_seq_uniq"),
        ]
        indexes = [
            # Partial and tiny: answers the admin's "has errors" EXISTS per listed session
            # without scanning the session's history.
            models.Index(
                fields=["session"],
                condition=Q(role="assistant", finish_reason__in=FAILED_FINISH_REASONS),
                name="message_session_failed_idx",
            ),
            # The context always sends a session's system and pinned messages, however old:
            # this partial index finds them without scanning the session's history (it holds
            # only them). Its condition is PINNED_IN_CONTEXT, which the selector repeats.
            models.Index(
                fields=["session", "seq"],
                condition=Q(role="system") | Q(pinned=True),
                name="message_session_pinned_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.seq} {self.role}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self._state.adding:
            # An insert: append_message keeps the counters and the tail current itself.
            super().save(*args, **kwargs)
            return
        using = kwargs.get("using") or self._state.db or "default"
        with transaction.atomic(using=using, savepoint=False):
            _history_changed(session_ids=[self.session_id], using=using)
            super().save(*args, **kwargs)

    def delete(self, using: str | None = None, keep_parents: bool = False):
        # Through the queryset, which takes the message back out of the session's counters.
        return type(self).objects.using(using or self._state.db).filter(pk=self.pk).delete()


# What a regenerate replaces on a message and keeps on its MessageVersion: everything that
# belongs to one answer (the seq, role and session stay the message's).
VERSIONED_FIELDS = (
    "content",
    "metadata",
    "token_count",
    "tool_calls",
    "model",
    "usage",
    "finish_reason",
    "latency_ms",
    "context",
    "created_at",
)


class MessageVersion(models.Model):
    """An earlier answer of a regenerated message, kept as it was (never deleted with the
    regenerate; it goes only with its message). `number` counts from 1 in the order the
    answers stood; the message itself is the current one, number `message.versions`."""

    # DO_NOTHING, not CASCADE: a message with a cascade of its own can no longer be deleted
    # in bulk, and a session's delete would load every message id. A session's delete
    # cascades here through `session` instead (one DELETE), and a message delete
    # (MessageQuerySet.delete) deletes the message's versions itself; the constraint,
    # checked at commit, stops any path that forgets to.
    message = models.ForeignKey(
        Message, on_delete=models.DO_NOTHING, related_name="earlier_versions"
    )
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="+")
    number = models.PositiveIntegerField()
    content = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    token_count = models.PositiveIntegerField(default=0)
    tool_calls = models.JSONField(null=True, blank=True)
    model = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    usage = models.JSONField(null=True, blank=True)
    finish_reason = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    context = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "number"], name="message_version_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} v{self.number}"


class Summary(models.Model):
    """A rolling summary of a session's messages 1..covers_to_seq, as one reply sent it.

    Written by llm/summaries.py, never by rewriting messages. Each row folds the previous row
    (which covered 1..covers_from_seq-1) plus the messages covers_from_seq..covers_to_seq, so
    the rows of a session tile 1..N: covers_from_seq is unique per session, and two replies
    racing to fold the same range store one row (the other reads it).
    """

    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="summaries")
    # The first seq this row newly folded (the previous row's covers_to_seq + 1).
    covers_from_seq = models.PositiveIntegerField()
    covers_to_seq = models.PositiveIntegerField()
    text = models.TextField()
    # Tokens of the system message that carries it into a context (capped by
    # LLM_SUMMARY_MAX_TOKENS).
    token_count = models.PositiveIntegerField()
    model = models.CharField(max_length=128)
    usage = models.JSONField(null=True, blank=True)  # the summarising call's own usage
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["session", "covers_from_seq"], name="summary_session_from_uniq"
            ),
            # Also the index the latest summary is read by.
            models.UniqueConstraint(
                fields=["session", "covers_to_seq"], name="summary_session_to_uniq"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.session_id} summary 1..{self.covers_to_seq}"


class IdempotencyKey(models.Model):
    """A caller's `Idempotency-Key` and the response it produced; see conversations/idempotency.py.

    `response_status` is null while the request that claimed the key is still running (only in
    the non-atomic mode used for long operations such as LLM replies).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idempotency_keys"
    )
    key = models.CharField(max_length=255)
    # The session whose URL the key was claimed on: its response holds that session's content,
    # so deleting the session deletes the key (a retry then finds no session: 404).
    session = models.ForeignKey(
        ChatSession, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    # sha256 of method, path and the canonical JSON body: a reuse for another request is a 409.
    fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # While in progress: when the current owner took the key; a stale lease may be taken over.
    locked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_user_key_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key}"
