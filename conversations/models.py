import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone

# Assistant replies that did not complete: the admin's "has errors" filter looks for these.
FAILED_FINISH_REASONS = ("error", "interrupted")


class ChatSession(models.Model):
    """One conversation of one user, with counters kept in step by `append_message`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_sessions"
    )
    title = models.CharField(max_length=255, blank=True, default="")
    system_prompt = models.TextField(blank=True, default="")
    model = models.CharField(
        max_length=128, blank=True, default="", help_text="LLM model name; blank = the default."
    )
    metadata = models.JSONField(default=dict, blank=True)
    archived = models.BooleanField(default=False)

    # Denormalised, written only under the session row lock in append_message.
    message_count = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    last_message_at = models.DateTimeField(null=True, blank=True)
    # The highest seq handed out; seq stays gapless and unique even if a message is deleted.
    last_seq = models.PositiveIntegerField(default=0, editable=False)

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

    # Filled only on replies the engine generated (null elsewhere).
    # null, not "", on purpose: the API distinguishes "not generated" from an empty value.
    model = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    usage = models.JSONField(null=True, blank=True)
    finish_reason = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    context = models.JSONField(null=True, blank=True)

    # default=, not auto_now_add: an import keeps the time it is given (see ChatSession).
    created_at = models.DateTimeField(default=timezone.now, editable=False, blank=True)

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
            # The context always sends a session's system messages, however old: this partial
            # index finds them without scanning the session's history (it holds only them).
            models.Index(
                fields=["session", "seq"],
                condition=models.Q(role="system"),
                name="message_session_system_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.seq} {self.role}"


class IdempotencyKey(models.Model):
    """A caller's `Idempotency-Key` and the response it produced; see conversations/idempotency.py.

    `response_status` is null while the request that claimed the key is still running (only in
    the non-atomic mode used for long operations such as LLM replies).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idempotency_keys"
    )
    key = models.CharField(max_length=255)
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
