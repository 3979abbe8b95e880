"""One structured log line per domain event (`session.created`, `message.appended`, ...).

Fields go in the record's `extra`, so a JSON formatter emits them as keys. Never pass message
content, system prompts, API keys or tokens as fields.
"""

import logging
from typing import Any

logger = logging.getLogger("chatengine.events")


def log_event(event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, event, extra={"event": event, **fields})
