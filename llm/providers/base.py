"""The provider protocol and how one is chosen (`LLM_PROVIDER`, like EMAIL_BACKEND)."""

import functools
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Protocol, runtime_checkable

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from llm.types import ChatMessage, Completion, GenerationOptions, StreamChunk

PROVIDER_ALIASES = {
    "echo": "llm.providers.echo.EchoProvider",
    "openai": "llm.providers.openai.OpenAIProvider",
}


@runtime_checkable
class LLMProvider(Protocol):
    """Talks to one kind of LLM. Knows chat messages, never our tables.

    Failures are raised as chatengine.exceptions errors (RateLimited, LLMUpstreamError,
    LLMTimeout, ContextOverflow), never as a vendor SDK's exception. `options` is passed only
    when a request sets any (so a provider without the parameter keeps working without them).
    """

    name: str

    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        max_output_tokens: int,
        options: GenerationOptions | None = None,
    ) -> Completion: ...

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        max_output_tokens: int,
        options: GenerationOptions | None = None,
    ) -> Iterator[StreamChunk]: ...

    def astream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        max_output_tokens: int,
        options: GenerationOptions | None = None,
    ) -> AsyncIterator[StreamChunk]: ...


@functools.cache
def _provider(path: str) -> LLMProvider:
    return import_string(PROVIDER_ALIASES.get(path, path))()


def get_provider() -> LLMProvider:
    """The configured provider (one instance per process and setting)."""
    return _provider(settings.LLM_PROVIDER)


@receiver(setting_changed)
def _forget_provider(*, setting: str, **kwargs) -> None:
    if setting.startswith(("LLM_", "OPENAI_")):
        _provider.cache_clear()
