"""Responses over chatengine's reply orchestration (llm.services), and the item writes.

A stored response: the input items are appended and the reply prepared in ONE short
transaction (so a request refused before the LLM is called stores nothing, not even a new
conversation), committed before the LLM is called; `llm.services.complete_reply` /
`stream_reply` then call the provider with no transaction open and store the reply.
`store: false` appends nothing: the context is built in memory from the session (if any) plus
the input, and the reply comes back unsaved.
"""

import copy
from dataclasses import dataclass, replace

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from accounting import services as accounting
from chatengine.exceptions import Conflict, NotFound
from conversations import idempotency, selectors, services
from conversations.models import ChatSession, Message
from llm import services as replies
from llm.providers.base import get_provider
from llm.tokens import counter_for_model
from llm.types import GenerationOptions, HistoryMessage
from openai_api import ids
from openai_api.errors import InvalidParameter
from openai_api.serializers import NewMessage, ResponseRequest, parse_items


# --- Conversations and items ------------------------------------------------------------------
def get_conversation(*, user: AbstractBaseUser, conversation_id: str) -> ChatSession:
    try:
        return selectors.get_session_for_user(
            user=user, session_id=ids.parse_conversation_id(conversation_id)
        )
    except NotFound:
        raise NotFound("Conversation not found.") from None


def append_items(*, session: ChatSession, items: list[NewMessage]) -> list[Message]:
    """Append the items' messages, oldest first; the caller holds the transaction."""
    return [
        services.append_message(
            session=session,
            role=item.role,
            content=item.content,
            tool_calls=[c.as_openai() for c in item.tool_calls] or None,
            tool_call_id=item.tool_call_id,
        )
        for item in items
    ]


@transaction.atomic
def create_conversation(
    *, user: AbstractBaseUser, items: list[NewMessage], metadata: dict | None
) -> ChatSession:
    session = services.create_session(user=user, metadata=metadata)
    append_items(session=session, items=items)
    return session


@transaction.atomic
def add_items(*, session: ChatSession, items: list[NewMessage]) -> list[Message]:
    return append_items(session=session, items=items)


def get_item(*, session: ChatSession, item_id: str) -> Message:
    message = Message.objects.filter(pk=ids.parse_item_id(item_id), session=session).first()
    if message is None:
        raise NotFound("Item not found.")
    return message


# --- Responses -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedResponse:
    """A response ready for the LLM call: its id, and the prepared reply (input stored)."""

    response_id: str
    created_at: int
    request: ResponseRequest
    prepared: replies.PreparedReply


def get_response(*, user: AbstractBaseUser, response_id: str) -> tuple[Message, Message]:
    """(the newest message the response answered, its reply); 404 for another user's."""
    asked = (
        Message.objects.select_related("session")
        .filter(pk=ids.parse_response_id(response_id), session__user=user)
        .first()
    )
    reply = None
    if asked is not None:
        # The reply whose context ended at `asked`: each reply records the seq of the newest
        # message it was sent. The newest such reply wins (a retried stream leaves two).
        reply = (
            Message.objects.select_related("session")
            .filter(
                session_id=asked.session_id,
                role=Message.Role.ASSISTANT,
                seq__gt=asked.seq,
                context__last_seq=asked.seq,
            )
            .order_by("-seq")
            .first()
        )
    if reply is None:
        raise NotFound("Response not found.")
    return asked, reply


def delete_response(*, user: AbstractBaseUser, response_id: str) -> None:
    """Delete the response's output (its reply message); the input stays in the conversation."""
    _, reply = get_response(user=user, response_id=response_id)
    services.delete_message(message=reply)


def _working_session(session: ChatSession, request: ResponseRequest) -> ChatSession:
    """The session as this call sees it: `instructions` after its own system prompt, and
    the `summary` strategy if `context_management` asks for compaction.

    A copy, never saved: both apply to one call (as OpenAI's do).
    """
    if not request.instructions and request.compact_threshold is None:
        return session
    working = copy.copy(session)
    if request.instructions:
        working.system_prompt = "\n\n".join(
            p for p in (session.system_prompt, request.instructions) if p
        )
    if request.compact_threshold is not None:
        working.context_strategy = ChatSession.ContextStrategy.SUMMARY
    return working


def _input_items(
    data: dict, *, user: AbstractBaseUser, source: ChatSession | None
) -> list[NewMessage]:
    """The input's messages. A compaction item of the conversation being continued is left
    out: that conversation sends its summary already."""
    if data.get("input") is None:
        return []
    items = parse_items(data["input"], param="input", user_id=user.pk)
    if source is None:
        return items
    return [
        item
        for item in items
        if item.compaction is None or item.compaction.session_id != str(source.pk)
    ]


def source_session(
    *, user: AbstractBaseUser, conversation: str | None, previous_response_id: str | None
) -> ChatSession | None:
    # Not both: refused by the input serializer.
    if conversation is not None:
        return get_conversation(user=user, conversation_id=conversation)
    if previous_response_id is not None:
        _, reply = get_response(user=user, response_id=previous_response_id)
        later = Message.objects.filter(
            session_id=reply.session_id, role=Message.Role.ASSISTANT, seq__gt=reply.seq
        )
        if later.exists():
            # Branching a conversation is not supported (yet): only its newest response
            # can be continued.
            raise Conflict(
                "previous_response_id: not the newest response of its conversation; "
                "chatengine continues only the newest one (no branching).",
                details={"previous_response_id": ["Not the newest response."]},
            )
        return reply.session
    return None


def _pending(items: list[NewMessage], *, model: str) -> tuple[HistoryMessage, ...]:
    counter = counter_for_model(model)
    return tuple(
        HistoryMessage(
            seq=None,
            role=item.role,
            content=item.content,
            tool_calls=item.tool_calls,
            tool_call_id=item.tool_call_id,
            token_count=counter.count_message(
                role=item.role,
                content=item.content,
                tool_calls=item.tool_calls,
                tool_call_id=item.tool_call_id,
            ),
        )
        for item in items
    )


def _options(request: ResponseRequest) -> GenerationOptions | None:
    if request.temperature is None and request.top_p is None and not request.tools:
        return None
    return GenerationOptions(
        temperature=request.temperature, top_p=request.top_p, tools=request.tools
    )


def _check_truncation(request: ResponseRequest, context) -> None:
    if request.truncation == "disabled" and context.messages_dropped:
        raise InvalidParameter(
            "truncation",
            f"truncation: the conversation does not fit the model's context window "
            f"({context.messages_dropped} messages would be left out); use truncation 'auto'.",
        )


def plan_unstored(
    *, user: AbstractBaseUser, data: dict, request: ResponseRequest
) -> replies.PreparedReply:
    """The reply's context for `store: false` (and input_tokens), built without writing."""
    # The monthly token quota holds for replies stored nowhere too (prepare_reply checks the
    # stored ones).
    accounting.check_quota(user_id=user.pk)
    source = source_session(
        user=user,
        conversation=data.get("conversation"),
        previous_response_id=data.get("previous_response_id"),
    )
    session = source if source is not None else ChatSession(user=user)
    working = _working_session(session, request)
    items = _input_items(data, user=user, source=source)
    if not items and not session.message_count:
        # As prepare_reply says it: the same body is valid once the conversation has messages.
        raise Conflict("Nothing to respond to: no input and no conversation history.")
    model = replies.resolve_model(session=working, model=data.get("model"))
    max_output_tokens = request.max_output_tokens or settings.LLM_DEFAULT_MAX_OUTPUT_TOKENS
    context = replies.build_context(
        working,
        model=model,
        max_output_tokens=max_output_tokens,
        pending=_pending(items, model=model),
        max_context_tokens=request.compact_threshold or None,
    )
    _check_truncation(request, context)
    return replies.PreparedReply(
        session=working,
        user_message=None,
        context=context,
        model=model,
        max_output_tokens=max_output_tokens,
        metadata=request.metadata,
        counter=counter_for_model(model),
        provider=get_provider(),
        store=False,
        options=_options(request),
    )


def plan_response(
    *,
    user: AbstractBaseUser,
    data: dict,
    request: ResponseRequest,
    checkpoint: idempotency.Checkpoint | None = None,
) -> PlannedResponse:
    """Store the input and prepare the reply (one transaction, committed on return)."""
    if not request.store:
        prepared = plan_unstored(user=user, data=data, request=request)
        return PlannedResponse(
            response_id=ids.unstored_response_id(),
            created_at=int(timezone.now().timestamp()),
            request=request,
            prepared=prepared,
        )
    source = source_session(
        user=user,
        conversation=data.get("conversation"),
        previous_response_id=data.get("previous_response_id"),
    )
    items = _input_items(data, user=user, source=source)
    # An Idempotency-Key retry after a failed LLM call: what the first attempt stored (the new
    # conversation, the input items) is reused, never stored twice.
    progress = checkpoint.progress if checkpoint else {}
    with transaction.atomic():
        session = source
        if session is None and progress.get("openai_session_id"):
            session = selectors.get_session_for_user(
                user=user, session_id=progress["openai_session_id"]
            )
        if session is None:
            session = services.create_session(user=user)
        working = _working_session(session, request)
        last = items[-1] if items and items[-1].role == Message.Role.USER else None
        earlier = items[:-1] if last is not None else items
        if "openai_input_ids" in progress:
            stored = list(
                Message.objects.filter(pk__in=progress["openai_input_ids"]).order_by("seq")
            )
        else:
            stored = append_items(session=working, items=earlier)
            if checkpoint:
                checkpoint.save(
                    openai_session_id=str(session.pk), openai_input_ids=[m.pk for m in stored]
                )
        prepared = replies.prepare_reply(
            session=working,
            checkpoint=checkpoint,
            content=last.content if last is not None else None,
            model=data.get("model"),
            max_output_tokens=request.max_output_tokens,
            metadata=request.metadata,
            max_context_tokens=request.compact_threshold or None,
        )
        _check_truncation(request, prepared.context)
        asked = prepared.user_message or (stored[-1] if stored else None)
        if asked is None:
            asked = Message.objects.get(session=session, seq=prepared.context.last_seq)
    return PlannedResponse(
        response_id=ids.response_id(asked.pk),
        created_at=int(asked.created_at.timestamp()),
        request=request,
        prepared=replace(prepared, options=_options(request)),
    )


def response_input_messages(
    *, reply: Message, after: str | None, limit: int, order: str
) -> tuple[list[Message], bool]:
    """The history the reply was sent (its context's seq range), a page at a time."""
    context = reply.context or {}
    first, last = context.get("first_seq"), context.get("last_seq")
    if first is None or last is None:
        return [], False
    rows = Message.objects.filter(session_id=reply.session_id, seq__gte=first, seq__lte=last)
    if after:
        seq = get_item(session=reply.session, item_id=after).seq
        rows = rows.filter(seq__gt=seq) if order == "asc" else rows.filter(seq__lt=seq)
    page = list(rows.order_by("seq" if order == "asc" else "-seq")[: limit + 1])
    return page[:limit], len(page) > limit
