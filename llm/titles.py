"""Automatic session titles: after a reply, a session nobody named gets a short title.

One short provider call on the first user message, made with no transaction open (after the
reply is stored and committed) and never failing the reply: any error is logged and the
session stays untitled until its next reply tries again. The title is stored by a conditional
update, so a title the user set meanwhile is never overwritten; the call's usage is recorded
with the title, in one transaction. CHATENGINE_AUTO_TITLE=0 turns it off.
"""

import logging
import re

from django.conf import settings
from django.db import connection, transaction

from accounting import services as accounting
from accounting.models import CallKind
from conversations import selectors, services
from conversations.models import ChatSession
from llm.providers import echo
from llm.providers.base import LLMProvider
from llm.types import ChatMessage

logger = logging.getLogger("chatengine.llm")

TITLE_INSTRUCTION = (
    "Write a title of at most six words for a conversation that starts with the user's "
    "message below. Answer with the title only: no quotes, no trailing period."
)
MAX_TITLE_WORDS = 8
MAX_TITLE_CHARS = 80
MAX_OUTPUT_TOKENS = 24
MAX_INPUT_CHARS = 2_000  # the start of a long first message says what it is about


def wants_title(session: ChatSession) -> bool:
    return settings.CHATENGINE_AUTO_TITLE and not session.title and session.title_source is None


def clean_title(text: str) -> str:
    """The first line of the model's answer, unquoted, at most MAX_TITLE_WORDS words."""
    text = text.removeprefix(echo.LABEL).strip()
    line = text.splitlines()[0] if text else ""
    line = re.sub(r"^(title:\s*)", "", line, flags=re.IGNORECASE).strip().strip("\"'“”«»`*#")
    words = line.split()[:MAX_TITLE_WORDS]
    return " ".join(words)[:MAX_TITLE_CHARS].rstrip(" .,:;-")


def give_title(*, session: ChatSession, provider: LLMProvider, model: str) -> None:
    """Title the session if it wants one; never raises."""
    if not wants_title(session):
        return
    if connection.in_atomic_block:
        # Never hold a transaction across an LLM call: a caller inside one gets no title.
        logger.warning("auto title skipped: called inside a transaction")
        return
    try:
        first = selectors.first_user_message(session=session)
        if first is None or not first.content.strip():
            return
        completion = provider.complete(
            [
                ChatMessage(role="system", content=TITLE_INSTRUCTION),
                ChatMessage(role="user", content=first.content[:MAX_INPUT_CHARS]),
            ],
            model=model,
            max_output_tokens=MAX_OUTPUT_TOKENS,
        )
        title = clean_title(completion.text)
        with transaction.atomic():
            # The call was made and paid for, whether or not its title is kept.
            accounting.record_usage(
                user_id=session.user_id,
                session_id=session.pk,
                kind=CallKind.TITLE,
                model=completion.model,
                usage=completion.usage,
            )
            if title:
                services.set_auto_title(session=session, title=title)
    except Exception:
        logger.warning("auto title failed", exc_info=True, extra={"session_id": str(session.pk)})
