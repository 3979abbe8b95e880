"""Providers: the real `openai` SDK against the fake server over loopback, and echo."""

import asyncio
import re
import time

import pytest

from chatengine.exceptions import ContextOverflow, LLMTimeout, LLMUpstreamError, RateLimited
from llm.providers.base import LLMProvider, get_provider
from llm.providers.echo import EchoProvider
from llm.providers.openai import CREDENTIALS_REJECTED, OpenAIProvider
from llm.types import ChatMessage, ToolCall

MESSAGES = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="user", content="Hi there", name="alice"),
]


class TestSelection:
    def test_echo_is_chosen_by_short_name(self, settings):
        settings.LLM_PROVIDER = "echo"
        assert isinstance(get_provider(), EchoProvider)

    def test_a_dotted_path_picks_any_class(self, settings):
        settings.LLM_PROVIDER = "llm.providers.echo.EchoProvider"
        assert isinstance(get_provider(), EchoProvider)

    def test_openai_is_chosen_by_short_name(self, fake_openai):
        provider = get_provider()
        assert isinstance(provider, OpenAIProvider)
        assert isinstance(provider, LLMProvider)


class TestClientReuse:
    """One SDK client (and connection pool) per process and settings, not one per reply."""

    def test_replies_share_one_provider_and_one_sync_client(self, fake_openai):
        first, second = get_provider(), get_provider()
        assert first is second
        first.complete(MESSAGES, model="m", max_output_tokens=5)
        client = first._client
        second.complete(MESSAGES, model="m", max_output_tokens=5)
        assert second._client is client

    def test_an_event_loop_keeps_its_async_client_and_another_loop_gets_its_own(
        self, provider, fake_openai
    ):
        async def two_streams():
            for _ in range(2):
                [c async for c in provider.astream(MESSAGES, model="m", max_output_tokens=5)]
            return provider._async_client()

        async def client_of_this_loop():
            return provider._async_client(), provider._async_client()

        once, twice = asyncio.run(client_of_this_loop())
        assert once is twice
        assert asyncio.run(two_streams()) is not once  # a new loop: its own pool
        assert len(fake_openai.requests) == 2

    def test_changing_a_setting_builds_a_new_client_with_it(self, fake_openai, settings):
        before = get_provider()
        settings.OPENAI_API_KEY = "sk-rotated"
        after = get_provider()
        assert after is not before
        after.complete(MESSAGES, model="m", max_output_tokens=5)
        assert fake_openai.requests[-1]["_authorization"] == "Bearer sk-rotated"


class TestEcho:
    def test_it_echoes_the_last_user_message_labelled_echo(self):
        completion = EchoProvider().complete(MESSAGES, model="gpt-4o", max_output_tokens=10)
        assert completion.text == "Echo: Hi there"
        assert completion.model == "echo"
        assert completion.usage.completion_tokens > 0

    def test_its_stream_adds_up_to_the_same_text(self):
        chunks = list(EchoProvider().stream(MESSAGES, model="x", max_output_tokens=10))
        assert "".join(c.delta for c in chunks) == "Echo: Hi there"
        assert chunks[-1].finish_reason == "stop"


@pytest.fixture
def provider(fake_openai) -> OpenAIProvider:
    return get_provider()


class TestOpenAIComplete:
    def test_it_sends_the_messages_in_chat_format_and_returns_text_and_usage(
        self, provider, fake_openai
    ):
        call = ToolCall(id="c1", name="weather", arguments='{"city":"Lisbon"}')
        messages = [
            *MESSAGES,
            ChatMessage(role="assistant", content="", tool_calls=(call,)),
            ChatMessage(role="tool", content="18C", tool_call_id="c1"),
        ]
        completion = provider.complete(messages, model="gpt-4o-mini", max_output_tokens=50)
        assert completion.text == fake_openai.reply_text
        assert completion.finish_reason == "stop"
        assert completion.usage.completion_tokens == len(fake_openai.reply_text.split())
        (received,) = fake_openai.requests
        assert received["model"] == "gpt-4o-mini"
        assert received["max_completion_tokens"] == 50
        assert received["messages"] == [m.as_openai() for m in messages]
        assert received["messages"][2]["tool_calls"] == [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Lisbon"}'},
            }
        ]
        assert received["_authorization"] == "Bearer sk-test-not-a-real-key"

    def test_a_429_is_rate_limited_with_retry_after(self, provider, fake_openai):
        fake_openai.fail_next("rate_limit")
        with pytest.raises(RateLimited) as err:
            provider.complete(MESSAGES, model="m", max_output_tokens=5)
        assert err.value.headers == {"Retry-After": "7"}

    def test_a_500_is_an_upstream_error(self, provider, fake_openai):
        fake_openai.fail_next("server_error")
        with pytest.raises(LLMUpstreamError) as err:
            provider.complete(MESSAGES, model="m", max_output_tokens=5)
        assert err.value.details["upstream_status"] == 500

    def test_rejected_credentials_say_so_without_the_key(self, provider, fake_openai):
        fake_openai.fail_next("unauthorized")
        with pytest.raises(LLMUpstreamError) as err:
            provider.complete(MESSAGES, model="m", max_output_tokens=5)
        assert err.value.message == CREDENTIALS_REJECTED
        assert "sk-test" not in str(err.value.message) + str(err.value.details)

    def test_a_context_length_error_is_an_overflow(self, provider, fake_openai):
        fake_openai.fail_next("context_length")
        with pytest.raises(ContextOverflow):
            provider.complete(MESSAGES, model="m", max_output_tokens=5)

    def test_a_hang_past_the_timeout_is_a_timeout(self, settings, fake_openai):
        settings.LLM_TIMEOUT_S = 0.3
        fake_openai.fail_next("hang")
        started = time.monotonic()
        with pytest.raises(LLMTimeout):
            get_provider().complete(MESSAGES, model="m", max_output_tokens=5)
        assert time.monotonic() - started < 5

    def test_a_malformed_body_is_an_upstream_error(self, provider, fake_openai):
        fake_openai.fail_next("malformed")
        with pytest.raises(LLMUpstreamError):
            provider.complete(MESSAGES, model="m", max_output_tokens=5)

    def test_an_unreachable_server_is_an_upstream_error(self, settings, fake_openai):
        fake_openai.stop()
        with pytest.raises(LLMUpstreamError) as err:
            get_provider().complete(MESSAGES, model="m", max_output_tokens=5)
        assert err.value.details["category"] == "connection_error"


class TestOpenAIStream:
    def test_it_streams_deltas_then_finish_and_usage(self, provider, fake_openai):
        chunks = list(provider.stream(MESSAGES, model="m", max_output_tokens=5))
        assert "".join(c.delta for c in chunks) == fake_openai.reply_text
        assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
        assert chunks[-1].usage is not None
        assert fake_openai.requests[0]["stream"] is True

    def test_async_stream_gives_the_same_chunks(self, provider, fake_openai):
        async def collect():
            return [c async for c in provider.astream(MESSAGES, model="m", max_output_tokens=5)]

        chunks = asyncio.run(collect())
        assert "".join(c.delta for c in chunks) == fake_openai.reply_text

    def test_the_standalone_fake_streams_its_first_chunk_without_a_delayed_ack_wait(self, settings):
        # The fake server must stream like a real one (TCP_NODELAY). With Nagle on, the first
        # chunk after the headers waited for the client's delayed ACK (~40 ms) on a kept-alive
        # connection, which the reply benchmark took for engine overhead. Run as the benchmark
        # runs it: its own process, 50 ms of thinking, a 20-turn conversation.
        import subprocess
        import sys
        from pathlib import Path

        argv = [sys.executable, "-m", "llm.tests.fake_openai", "--latency-ms", "50"]
        server = subprocess.Popen(
            argv,
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            # It prints "fake OpenAI server on http://127.0.0.1:PORT/v1 (mode ok)" once listening.
            base_url = re.search(r"http://\S+", server.stdout.readline()).group()
            settings.LLM_PROVIDER = "openai"
            settings.OPENAI_BASE_URL = base_url
            settings.LLM_MAX_RETRIES = 0
            provider = get_provider()
            conversation = [MESSAGES[0]] + [
                ChatMessage(role="user" if i % 2 else "assistant", content="word " * 60)
                for i in range(1, 21)
            ]

            async def first_chunk_ms() -> float:
                started, first = time.perf_counter(), None
                # Read to the end, as a reply does: only then is the connection kept alive.
                async for _chunk in provider.astream(conversation, model="m", max_output_tokens=5):
                    first = first or (time.perf_counter() - started) * 1000
                return first

            async def several() -> list[float]:
                return [await first_chunk_ms() for _ in range(7)]

            timings = asyncio.run(several())
        finally:
            server.terminate()
            server.wait(timeout=10)
        assert sorted(timings)[3] < 50 + 25, timings  # the median; the ACK wait alone is 40

    @pytest.mark.parametrize("mode", ["malformed", "close_mid_stream"])
    def test_a_broken_stream_raises_after_the_first_deltas(self, provider, fake_openai, mode):
        fake_openai.fail_next(mode)
        received = []

        def consume():
            for chunk in provider.stream(MESSAGES, model="m", max_output_tokens=5):
                received.append(chunk.delta)

        with pytest.raises(LLMUpstreamError):
            consume()
        assert "".join(received) == " ".join(fake_openai.reply_text.split(" ")[:2])

    def test_a_429_before_streaming_is_rate_limited(self, provider, fake_openai):
        fake_openai.fail_next("rate_limit")
        with pytest.raises(RateLimited):
            list(provider.stream(MESSAGES, model="m", max_output_tokens=5))


def test_the_server_entry_point_warns_once_that_replies_are_echoes():
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENAI_API_KEY"}
    env.update(LLM_PROVIDER="echo", LOG_STREAM="stderr", LOG_FORMAT="console")

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *argv],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    result = run("-c", "import chatengine.wsgi")
    assert result.stderr.count("replies are echoes") == 1
    quiet = run("manage.py", "check")
    assert "replies are echoes" not in quiet.stdout + quiet.stderr
