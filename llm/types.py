"""Plain frozen values passed between the context builder, the providers and the services.

No Django model and no `openai` type crosses these boundaries: the builder and the providers
see only these. The two made per message of every context (`HistoryMessage`, `ChatMessage`)
are named tuples: as immutable as a frozen dataclass and about four times cheaper to build,
which a 100-message context does 200 times (docs/performance.md, "Context build").
"""

from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple


@dataclass(frozen=True)
class ToolCall:
    """One function call requested by an assistant message (OpenAI chat format)."""

    id: str
    name: str
    arguments: str  # JSON text, as the model produced it

    def as_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    @classmethod
    def from_openai(cls, data: dict[str, Any]) -> "ToolCall":
        return cls(
            id=data["id"], name=data["function"]["name"], arguments=data["function"]["arguments"]
        )


class ChatMessage(NamedTuple):
    """One message as sent to a provider."""

    role: str
    content: str
    name: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""

    def as_openai(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name:
            data["name"] = self.name
        if self.tool_calls:
            data["tool_calls"] = [call.as_openai() for call in self.tool_calls]
        if self.tool_call_id:
            data["tool_call_id"] = self.tool_call_id
        return data


class HistoryMessage(NamedTuple):
    """A stored message (or the one about to be stored: seq None) as the builder sees it.

    Its fields are selectors.CONTEXT_COLUMNS, in that order.
    """

    seq: int | None
    role: str
    content: str
    token_count: int
    name: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""

    def to_chat(self) -> ChatMessage:
        return ChatMessage(self.role, self.content, self.name, self.tool_calls, self.tool_call_id)


@dataclass(frozen=True)
class SummaryNote:
    """A stored rolling summary as the builder sees it: it stands for messages 1..covers_to_seq.

    `token_count` is the tokens of the system message that carries it (see
    llm.context.summary_message).
    """

    id: int
    covers_to_seq: int
    text: str
    token_count: int

    def as_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "covers_from_seq": 1,
            "covers_to_seq": self.covers_to_seq,
            "tokens": self.token_count,
        }


@dataclass(frozen=True)
class Context:
    """What one reply sends: the messages in chronological order and how they were chosen."""

    messages: tuple[ChatMessage, ...]
    tokens: int
    budget: int
    messages_included: int  # history messages sent (not counting the session's system_prompt)
    messages_dropped: int  # history messages left out
    first_seq: int | None
    last_seq: int | None
    encoding: str
    # seqs of the history messages sent; None stands for the not-yet-stored new message.
    seqs: tuple[int | None, ...] = field(default=(), repr=False)
    strategy: str = "window"
    summary: SummaryNote | None = None  # the summary sent in place of messages 1..N
    # The newest seq left out of the window and not covered by `summary`: what a summary
    # strategy folds next. None: nothing is left out beyond the summary.
    evicted_to_seq: int | None = None

    def with_pending_seq(self, seq: int) -> "Context":
        """The same context once the new message was stored and got its seq."""
        seqs = tuple(seq if s is None else s for s in self.seqs)
        known = [s for s in seqs if s is not None]
        return replace(
            self,
            seqs=seqs,
            first_seq=min(known) if known else None,
            last_seq=max(known) if known else None,
        )

    def as_record(self) -> dict[str, Any]:
        """The `context` stored on a reply, enough to explain and reproduce it."""
        return {
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "messages_included": self.messages_included,
            "messages_dropped": self.messages_dropped,
            "tokens": self.tokens,
            "budget": self.budget,
            "encoding": self.encoding,
            "strategy": self.strategy,
            "summary": self.summary.as_record() if self.summary else None,
        }


@dataclass(frozen=True)
class GenerationOptions:
    """Per-request options passed through to the model; None / empty: the model's default."""

    temperature: float | None = None
    top_p: float | None = None
    tools: tuple[dict[str, Any], ...] = ()  # chat-completions `tools` (function tools)

    def as_openai(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.top_p is not None:
            body["top_p"] = self.top_p
        if self.tools:
            body["tools"] = list(self.tools)
        return body


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class Completion:
    """A whole reply from a provider."""

    text: str
    model: str
    finish_reason: str
    usage: Usage | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class StreamChunk:
    """One streamed piece: a text delta, and on the last piece(s) the finish reason/usage."""

    delta: str = ""
    model: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
