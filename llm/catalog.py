"""Model names: which ones callers may name, and how a per-model setting finds its entry.

`is_allowed_model` (settings.LLM_ALLOWED_MODELS, matched exactly) is asked wherever a model name
comes in from outside (the session and reply serializers, the context preview's query,
`manage.py chat --model`), before anything is stored or sent. `for_model` is the one lookup of
the per-model tables (LLM_MODEL_CONTEXT_WINDOWS, LLM_MODEL_ENCODINGS).
"""

from typing import TypeVar

from django.conf import settings

T = TypeVar("T")

ANY_MODEL = "*"
NOT_ALLOWED = "This model is not available on this server."


def is_allowed_model(model: str) -> bool:
    allowed = settings.LLM_ALLOWED_MODELS
    return ANY_MODEL in allowed or model in allowed


def for_model(table: dict[str, T], model: str) -> T | None:
    """`table`'s entry for `model`: its exact name, else the longest name it starts with (so
    a dated variant, "gpt-4o-2024-08-06", inherits "gpt-4o"'s), else None."""
    if model in table:
        return table[model]
    prefixes = [name for name in table if model.startswith(name)]
    return table[max(prefixes, key=len)] if prefixes else None
