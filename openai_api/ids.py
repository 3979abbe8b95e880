"""OpenAI-style ids for chatengine's rows, one-to-one and without a lookup table.

- `conv_<hex>`: a session (its UUID as 32 hex digits).
- `msg_<n>`: a message (its id). An assistant message with tool calls is also one
  `fc_<n>_<i>` item per call; a `tool` message is the item `fco_<n>`.
- `resp_<n>`: a response, named after the newest message it answered (the input it stored,
  or the conversation's newest message when it was sent no input): message `n`'s reply.
- `resp_nostore_<hex>`: a `store: false` response; nothing is stored, so it cannot be read back.
- `cmp_<n>`: a compaction of a stored conversation, named after its newest summary row;
  `cmp_nostore_<hex>`: a compaction of `input` alone (nothing stored).
"""

import re
import uuid

from chatengine.exceptions import NotFound

_CONVERSATION = re.compile(r"conv_([0-9a-f]{32})")
_ITEM = re.compile(r"(?:msg_(\d{1,19})|fc_(\d{1,19})_\d{1,4}|fco_(\d{1,19}))")
_RESPONSE = re.compile(r"resp_(\d{1,19})")


def conversation_id(session_id: uuid.UUID) -> str:
    return f"conv_{session_id.hex}"


def message_id(pk: int | None) -> str:
    # An unsaved message (`store: false`) has no id of its own to carry.
    return f"msg_{pk}" if pk is not None else f"msg_nostore_{uuid.uuid4().hex}"


def function_call_id(pk: int, index: int) -> str:
    return f"fc_{pk}_{index}"


def function_call_output_id(pk: int) -> str:
    return f"fco_{pk}"


def response_id(input_message_pk: int) -> str:
    return f"resp_{input_message_pk}"


def unstored_response_id() -> str:
    return f"resp_nostore_{uuid.uuid4().hex}"


def compaction_id(summary_pk: int | None) -> str:
    return f"cmp_{summary_pk}" if summary_pk is not None else f"cmp_nostore_{uuid.uuid4().hex}"


def parse_conversation_id(value: str) -> uuid.UUID:
    """The session id of `conv_…`; any other string is a 404, as a missing id is."""
    match = _CONVERSATION.fullmatch(value or "")
    if match is None:
        raise NotFound("Conversation not found.")
    return uuid.UUID(match.group(1))


def parse_item_id(value: str) -> int:
    """The message id of `msg_…`, `fc_…_i` or `fco_…`."""
    match = _ITEM.fullmatch(value or "")
    if match is None:
        raise NotFound("Item not found.")
    return _bigint(int(next(group for group in match.groups() if group is not None)), "Item")


def parse_response_id(value: str) -> int:
    """The id of the message a stored response answered."""
    match = _RESPONSE.fullmatch(value or "")
    if match is None:
        raise NotFound("Response not found.")
    return _bigint(int(match.group(1)), "Response")


def _bigint(value: int, what: str) -> int:
    # Past the column's range it cannot exist: a 404 before the database sees an overflow.
    if value >= 2**63:
        raise NotFound(f"{what} not found.")
    return value
