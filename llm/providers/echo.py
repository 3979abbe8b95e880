"""The offline development provider: replies with the last user message, labelled `echo`.

Like Django's console email backend: deterministic, no network, obviously not a model.
Asked for a summary (llm/summaries.py), it keeps the previous summary and adds the first
words of each new message, so the summary strategy works offline too.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence

from llm.context import SUMMARY_INSTRUCTIONS
from llm.tokens import counter_for_model
from llm.types import ChatMessage, Completion, GenerationOptions, StreamChunk, Usage

ECHO_MODEL = "echo"
LABEL = "Echo: "  # on every reply; an automatic title (llm/titles.py) is the words after it
SUMMARY_WORDS = 6  # words kept of each folded message


class EchoProvider:
    name = "echo"

    def _reply(self, messages: Sequence[ChatMessage]) -> str:
        if messages and messages[0].content.startswith(SUMMARY_INSTRUCTIONS):
            return self._summary(messages[1:])
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        return f"{LABEL}{last_user}" if last_user else f"{LABEL}(nothing to echo)"

    def _summary(self, messages: Sequence[ChatMessage]) -> str:
        parts = []
        for m in messages:
            if m.role == "system":  # the previous summary: kept as it was
                parts.append(m.content.partition("\n")[2])
            else:  # "[#12 user] what they said": the label and the first words
                parts.append(" ".join(m.content.split()[: SUMMARY_WORDS + 2]))
        return " | ".join(p for p in parts if p)

    def _usage(self, messages: Sequence[ChatMessage], text: str) -> Usage:
        counter = counter_for_model(ECHO_MODEL)
        prompt = counter.count_prompt(messages)
        completion = counter.count_text(text)
        return Usage(prompt, completion, prompt + completion)

    def _pieces(self, text: str) -> list[str]:
        words = text.split(" ")
        return [w if i == 0 else f" {w}" for i, w in enumerate(words)]

    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        max_output_tokens: int,
        options: GenerationOptions | None = None,
    ) -> Completion:
        text = self._reply(messages)
        return Completion(
            text=text, model=ECHO_MODEL, finish_reason="stop", usage=self._usage(messages, text)
        )

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        max_output_tokens: int,
        options: GenerationOptions | None = None,
    ) -> Iterator[StreamChunk]:
        text = self._reply(messages)
        for piece in self._pieces(text):
            yield StreamChunk(delta=piece, model=ECHO_MODEL)
        yield StreamChunk(model=ECHO_MODEL, finish_reason="stop", usage=self._usage(messages, text))

    async def astream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        max_output_tokens: int,
        options: GenerationOptions | None = None,
    ) -> AsyncIterator[StreamChunk]:
        for chunk in self.stream(
            messages, model=model, max_output_tokens=max_output_tokens, options=options
        ):
            yield chunk
            await asyncio.sleep(0)
