"""Regenerate an answer and edit a question, through the reply's own steps.

A regenerate is a reply that stores nothing before the LLM call and replaces the last
message's answer instead of appending (conversations/branching.replace_answer keeps the one it
replaces). An edit forks the session and, if asked, replies in the fork. As for a reply, no
transaction is open while the model talks.
"""

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from chatengine.exceptions import Conflict
from conversations import branching, idempotency, selectors
from conversations.models import ChatSession, Message
from llm.providers.base import get_provider
from llm.services import (
    PreparedReply,
    ReplyResult,
    build_context,
    complete_reply,
    prepare_reply,
    resolve_model,
)
from llm.tokens import counter_for_model


def prepare_regenerate(
    *,
    session: ChatSession,
    message: Message,
    model: str | None = None,
    max_output_tokens: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> PreparedReply:
    """Check that `message` (of `session`) may be regenerated and build the context it was
    answered from (the history before it). Stores nothing.

    Conflict unless it is the session's last message and an assistant's, and the session is
    not archived.
    """
    seq = message.seq
    if session.archived:
        raise Conflict("The session is archived; unarchive it to regenerate an answer.")
    if message.role != Message.Role.ASSISTANT:
        raise Conflict(
            f"Only an assistant message can be regenerated; message {seq} is a "
            f"{message.role} message."
        )
    if selectors.has_message_after(session=session, seq=seq):
        raise Conflict(
            f"Only the last message can be regenerated; message {seq} has messages after it "
            f"(fork at {seq}, POST .../fork/, to try another answer from there)."
        )
    model = resolve_model(session=session, model=model)
    max_output_tokens = max_output_tokens or settings.LLM_DEFAULT_MAX_OUTPUT_TOKENS
    context = build_context(
        session, model=model, max_output_tokens=max_output_tokens, replacing=seq
    )
    if not context.messages:
        raise Conflict(f"Message {seq} has nothing before it to answer; nothing to regenerate.")
    return PreparedReply(
        session=session,
        user_message=None,
        context=context,
        model=model,
        max_output_tokens=max_output_tokens,
        metadata=metadata,
        counter=counter_for_model(model),
        provider=get_provider(),
        replaces=message,
    )


def regenerate(
    *,
    session: ChatSession,
    message: Message,
    model: str | None = None,
    max_output_tokens: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> ReplyResult:
    """Ask the model again for `message`'s answer and make it the current one."""
    prepared = prepare_regenerate(
        session=session,
        message=message,
        model=model,
        max_output_tokens=max_output_tokens,
        metadata=metadata,
    )
    return complete_reply(prepared)


@dataclass(frozen=True)
class EditResult:
    session: ChatSession  # the fork
    user_message: Message  # the edited message, the fork's last before any reply
    reply: ReplyResult | None


def edit(
    *,
    session: ChatSession,
    message: Message,
    content: str,
    metadata: dict[str, Any] | None = None,
    reply: bool = False,
    model: str | None = None,
    max_output_tokens: int | None = None,
    checkpoint: idempotency.Checkpoint | None = None,
) -> EditResult:
    """Edit user message `message`: a new session (a fork at seq - 1 plus the edited message),
    answered by the model there when `reply` is true. `session` is left as it was.

    With an Idempotency-Key (`checkpoint`), the fork is recorded on it: a retry after a failed
    LLM call replies in the fork it made, without forking again.
    """
    resumed = _fork_of_a_failed_attempt(session=session, checkpoint=checkpoint)
    if resumed is not None:
        fork, edited = resumed
    else:
        with transaction.atomic():
            fork, edited = branching.edit_message(
                session=session, message=message, content=content, metadata=metadata
            )
            if checkpoint is not None:
                checkpoint.save(fork_id=str(fork.pk), user_message_id=edited.pk)
    if not reply:
        return EditResult(session=fork, user_message=edited, reply=None)
    # The edited message is stored: the reply answers the fork's history as it is (a retry
    # finds user_message_id in the checkpoint and does not store it again either).
    prepared = prepare_reply(
        session=fork, model=model, max_output_tokens=max_output_tokens, checkpoint=checkpoint
    )
    result = complete_reply(prepared)
    fork.refresh_from_db()
    return EditResult(session=fork, user_message=edited, reply=result)


def _fork_of_a_failed_attempt(
    *, session: ChatSession, checkpoint: idempotency.Checkpoint | None
) -> tuple[ChatSession, Message] | None:
    if checkpoint is None:
        return None
    progress = checkpoint.progress
    fork_id, message_id = progress.get("fork_id"), progress.get("user_message_id")
    if fork_id is None or message_id is None:
        return None
    fork = ChatSession.objects.filter(pk=fork_id, forked_from=session).first()
    message = Message.objects.filter(pk=message_id, session=fork).first() if fork else None
    if message is None:
        return None
    return fork, message
