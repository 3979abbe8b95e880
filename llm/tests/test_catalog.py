"""The one lookup of per-model settings: exact name, then the longest prefix."""

from llm import services, tokens
from llm.catalog import for_model

TABLE = {"gpt-4": 1, "gpt-4o": 2, "gpt-4o-mini": 3}


def test_an_exact_name_wins_over_a_prefix():
    assert for_model(TABLE, "gpt-4o") == 2


def test_a_dated_variant_takes_the_longest_matching_prefix():
    assert for_model(TABLE, "gpt-4o-mini-2024-07-18") == 3
    assert for_model(TABLE, "gpt-4o-2024-08-06") == 2
    assert for_model(TABLE, "gpt-4-0613") == 1


def test_a_name_no_entry_starts_is_none():
    assert for_model(TABLE, "llama-3") is None
    assert for_model(TABLE, "gpt") is None  # an entry starting with the name is no match


def test_context_windows_and_encodings_match_a_model_the_same_way(settings):
    settings.LLM_MODEL_CONTEXT_WINDOWS = {"acme": 1000, "acme-large": 9000}
    settings.LLM_MODEL_ENCODINGS = {"acme": "cl100k_base", "acme-large": "o200k_base"}
    settings.LLM_DEFAULT_CONTEXT_TOKENS = 7
    assert services.context_window_for_model("acme-large-2") == 9000
    assert tokens.encoding_name_for_model("acme-large-2") == "o200k_base"
    assert services.context_window_for_model("acme-small") == 1000
    assert tokens.encoding_name_for_model("acme-small") == "cl100k_base"
    assert services.context_window_for_model("other") == 7
