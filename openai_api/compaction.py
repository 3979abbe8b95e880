"""`POST /v1/responses/compact` over chatengine's rolling summaries (llm/summaries.py).

- A stored conversation (`previous_response_id`, or chatengine's `conversation`): every message
  not summarised yet is folded into summary rows, incrementally from the latest summary (the
  previous summary plus only the new messages per call, as a reply's folding does), and the
  session switches to the `summary` strategy, so the responses that continue it send the
  summary in place of those messages. The output is one `compaction` item; nothing else of
  the conversation changes (history, exports and the admin still show every message).
- `input` alone: one summarising call over the items, nothing stored; the output is the
  input's user messages and a `compaction` item, as OpenAI's is.

As a reply's, the summarising calls run with no transaction open, their usage is recorded,
and racing compactions (or a racing reply) store one summary per range.
"""

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from accounting import services as accounting
from accounting.models import CallKind
from chatengine.exceptions import Conflict, ContextOverflow
from conversations import selectors
from conversations import services as conversation_services
from conversations.models import ChatSession, Message
from llm import services as replies
from llm import summaries
from llm.context import compute_budget, summary_request
from llm.providers.base import get_provider
from llm.tokens import counter_for_model
from llm.types import HistoryMessage, Usage
from openai_api.errors import InvalidParameter
from openai_api.serializers import Compaction, NewMessage, parse_items
from openai_api.services import source_session

# Summarising calls one compaction may make (summaries.FOLD_BATCH messages each): a longer
# backlog is folded by the replies that follow, as under the summary strategy.
COMPACT_MAX_FOLDS = 25


@dataclass(frozen=True)
class Compacted:
    compaction: Compaction
    kept: list[Message]  # the user messages the output repeats (compacted input only)
    usage: Usage


def compact(*, user: AbstractBaseUser, data: dict) -> Compacted:
    """Compact the conversation `data` names, or its `input` (see the module docstring)."""
    source = source_session(
        user=user,
        conversation=data.get("conversation"),
        previous_response_id=data.get("previous_response_id"),
    )
    accounting.check_quota(user_id=user.pk)
    if source is not None:
        if data.get("input") is not None:
            raise InvalidParameter(
                "input",
                "input: compact a stored conversation (previous_response_id or conversation) "
                "or input, not both.",
            )
        return _compact_conversation(session=source, model=data.get("model"))
    if data.get("input") is None:
        raise InvalidParameter(
            "input", "input: send the input to compact, or previous_response_id or conversation."
        )
    items = parse_items(data["input"], param="input", user_id=user.pk)
    return _compact_input(user=user, items=items, model=data.get("model"))


def _summary_call_budget(model: str) -> int:
    """What one summarising call may send: the model's window less the summary it writes."""
    return compute_budget(
        context_window=replies.context_window_for_model(model),
        max_output_tokens=settings.LLM_SUMMARY_MAX_TOKENS,
        safety_margin=settings.LLM_CONTEXT_SAFETY_MARGIN,
    )


def _compact_conversation(*, session: ChatSession, model: str | None) -> Compacted:
    if not session.message_count:
        raise Conflict("Nothing to compact: the conversation has no messages.")
    model = replies.resolve_model(session=session, model=model)
    latest = selectors.latest_summary(session=session)
    folded = summaries.fold(
        session=session,
        previous=summaries.note(latest) if latest is not None else None,
        to_seq=session.last_seq,
        model=model,
        counter=counter_for_model(model),
        provider=get_provider(),
        input_budget=_summary_call_budget(model),
        max_folds=COMPACT_MAX_FOLDS,
    )
    if session.context_strategy != ChatSession.ContextStrategy.SUMMARY:
        conversation_services.update_session(
            session=session, context_strategy=ChatSession.ContextStrategy.SUMMARY
        )
    summary = folded.summary
    return Compacted(
        compaction=Compaction(
            text=summary.text,
            covers_to_seq=summary.covers_to_seq,
            user_id=session.user_id,
            session_id=str(session.pk),
            summary_id=summary.id,
        ),
        kept=[],
        usage=folded.usage,
    )


def _compact_input(
    *, user: AbstractBaseUser, items: list[NewMessage], model: str | None
) -> Compacted:
    if not items:
        raise Conflict("Nothing to compact: the input has no items.")
    model = model or settings.LLM_MODEL
    counter = counter_for_model(model)
    cap = settings.LLM_SUMMARY_MAX_TOKENS
    # Numbered as the messages they stand for: a compaction item for all it covers.
    folded, seq = [], 0
    for item in items:
        seq += item.compaction.covers_to_seq if item.compaction else 1
        folded.append(
            HistoryMessage(
                seq=seq,
                role=item.role,
                content=item.content,
                token_count=0,
                tool_calls=item.tool_calls,
                tool_call_id=item.tool_call_id,
            )
        )
    messages = summary_request(previous=None, evicted=folded, max_tokens=cap)
    budget = _summary_call_budget(model)
    sent = counter.count_prompt(messages)
    if sent > budget:
        raise ContextOverflow(
            f"The input does not fit one summarising call: it is {sent - budget} tokens over "
            f"the budget of {budget}. Compact it in parts.",
            details={"tokens": sent, "budget": budget, "over_by": sent - budget},
        )
    written = summaries.summarise(
        messages=messages,
        covers_to_seq=seq,
        model=model,
        counter=counter,
        provider=get_provider(),
        cap=cap,
    )
    accounting.record_usage(
        user_id=user.pk,
        session_id=None,
        kind=CallKind.SUMMARY,
        model=written.model,
        usage=written.reported,
    )
    return Compacted(
        compaction=Compaction(text=written.text, covers_to_seq=seq, user_id=user.pk),
        kept=[
            Message(role=Message.Role.USER, content=item.content)
            for item in items
            if item.role == Message.Role.USER
        ],
        usage=written.usage,
    )
