import time
from contextvars import ContextVar
from dataclasses import replace

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chatengine.exceptions import Conflict, ContextOverflow, LLMUpstreamError
from conversations import idempotency, selectors
from conversations import services as conversation_services
from conversations.idempotency import Checkpoint
from conversations.models import ChatSession, IdempotencyKey, Message
from conversations.tests.cache_events import events
from conversations.tests.factories import ChatSessionFactory, MessageFactory
from llm import services
from llm.tokens import counter_for_model
from llm.types import Completion, GenerationOptions, HistoryMessage, Usage


def seed(session: ChatSession, count: int, *, tokens: int = 10) -> None:
    """`count` alternating user/assistant messages, inserted in bulk (counts are given)."""
    start = session.last_seq
    Message.objects.bulk_create(
        Message(
            session=session,
            seq=start + i,
            role="user" if i % 2 else "assistant",
            content=f"m{start + i}",
            token_count=tokens,
        )
        for i in range(1, count + 1)
    )
    ChatSession.objects.filter(pk=session.pk).update(
        last_seq=start + count,
        message_count=session.message_count + count,
        total_tokens=session.total_tokens + count * tokens,
    )
    session.refresh_from_db()


@pytest.mark.django_db
class TestTokenCountAtWrite:
    def test_append_counts_the_message_once_with_the_sessions_model(self):
        session = ChatSessionFactory(model="gpt-4")
        message = conversation_services.append_message(
            session=session, role="user", content="How far is the Moon?", name="alice"
        )
        expected = counter_for_model("gpt-4").count_message(
            role="user", content="How far is the Moon?", name="alice"
        )
        assert message.token_count == expected
        session.refresh_from_db()
        assert session.total_tokens == expected

    def test_factories_store_counted_messages_too(self):
        message = MessageFactory(content="hello world")
        assert message.token_count == counter_for_model("gpt-4o-mini").count_message(
            role="user", content="hello world"
        )

    def test_a_reply_keeps_total_tokens_equal_to_the_sum_of_its_messages(self, settings):
        settings.LLM_PROVIDER = "echo"
        session = ChatSessionFactory()
        services.reply(session=session, content="Hi")
        services.reply(session=session, content="Again")
        session.refresh_from_db()
        assert session.total_tokens == sum(
            Message.objects.filter(session=session).values_list("token_count", flat=True)
        )
        assert session.message_count == 4


@pytest.mark.django_db
class TestReply:
    def test_it_stores_the_user_message_and_the_reply_with_what_went_into_it(self, fake_openai):
        fake_openai.latency_ms = 60  # the provider call takes at least this long
        session = ChatSessionFactory(model="gpt-4o-mini")
        started = time.monotonic()
        result = services.reply(session=session, content="Hello?", metadata={"k": "v"})
        elapsed_ms = (time.monotonic() - started) * 1000
        user, reply = result.user_message, result.message
        assert (user.seq, user.role, user.content, user.metadata) == (
            1,
            "user",
            "Hello?",
            {"k": "v"},
        )
        assert (reply.seq, reply.role, reply.content) == (2, "assistant", fake_openai.reply_text)
        assert reply.model == "gpt-4o-mini"
        assert reply.finish_reason == "stop"
        assert reply.usage["completion_tokens"] == len(fake_openai.reply_text.split())
        assert (
            reply.usage["total_tokens"]
            == reply.usage["prompt_tokens"] + reply.usage["completion_tokens"]
        )
        assert 60 <= reply.latency_ms <= elapsed_ms  # the provider call, in milliseconds
        assert reply.metadata == {}
        assert reply.context == {
            "first_seq": 1,
            "last_seq": 1,
            "messages_included": 1,
            "messages_dropped": 0,
            "tokens": result.context.tokens,
            "budget": result.context.budget,
            "encoding": "cl100k_base",
            "strategy": "window",
            "summary": None,
        }
        assert user.model is None
        assert user.usage is None
        assert user.context is None

    def test_what_the_server_receives_is_exactly_the_built_context(self, settings, fake_openai):
        settings.LLM_MODEL_CONTEXT_WINDOWS = {"tiny": 300}
        session = ChatSessionFactory(model="tiny", system_prompt="You are terse.")
        seed(session, 40)
        MessageFactory(session=session, content="the question")
        expected = services.build_context(session, max_output_tokens=100)
        assert 0 < expected.messages_included < 41  # trimmed
        services.reply(session=session, max_output_tokens=100)
        (received,) = fake_openai.requests
        assert received["messages"] == [m.as_openai() for m in expected.messages]
        assert received["messages"][0] == {"role": "system", "content": "You are terse."}
        assert received["messages"][-1]["content"] == "the question"

    def test_an_overflow_is_rejected_before_anything_is_stored(self, settings):
        settings.LLM_PROVIDER = "echo"
        settings.LLM_MODEL_CONTEXT_WINDOWS = {"tiny": 200}
        session = ChatSessionFactory(model="tiny")
        with pytest.raises(ContextOverflow):
            services.reply(session=session, content="word " * 500, max_output_tokens=50)
        assert Message.objects.filter(session=session).count() == 0

    def test_an_archived_session_is_a_conflict_and_stores_nothing(self):
        session = ChatSessionFactory(archived=True)
        with pytest.raises(Conflict):
            services.reply(session=session, content="hi")
        assert Message.objects.count() == 0

    def test_an_empty_session_needs_content(self):
        with pytest.raises(Conflict):
            services.reply(session=ChatSessionFactory())

    def test_when_the_llm_fails_the_user_message_stays(self, fake_openai):
        fake_openai.fail_next("server_error")
        session = ChatSessionFactory()
        with pytest.raises(LLMUpstreamError):
            services.reply(session=session, content="hi")
        assert list(Message.objects.filter(session=session).values_list("role", flat=True)) == [
            "user"
        ]


class RecordingProvider:
    """Records whether a transaction was open when it was called."""

    name = "recording"
    calls: list[bool] = []

    def complete(self, messages, *, model, max_output_tokens):
        RecordingProvider.calls.append(connection.in_atomic_block)
        return Completion(text="ok", model=model, finish_reason="stop", usage=Usage(1, 1, 2))


@pytest.mark.django_db(transaction=True)
def test_the_provider_is_called_with_no_transaction_open(settings):
    settings.LLM_PROVIDER = "llm.tests.test_services.RecordingProvider"
    RecordingProvider.calls.clear()
    services.reply(session=ChatSessionFactory(), content="hi")
    assert RecordingProvider.calls == [False]


@pytest.mark.django_db
class TestReadShape:
    """Reading history costs what fits in the window, not what the session holds."""

    def _history_queries(self, session, budget):
        with CaptureQueriesContext(connection) as queries:
            context = services.build_context(session, budget=budget)
        selects = [
            q["sql"] for q in queries.captured_queries if "conversations_message" in q["sql"]
        ]
        return context, selects

    @pytest.mark.parametrize("window_messages", [20, 250])
    def test_rows_read_follow_the_window_not_the_history(self, window_messages, settings):
        # The database path's query shape; a cache miss instead rebuilds the tail with one
        # bounded read (conversations/tests/test_cache.py).
        settings.CHATENGINE_CACHE_ENABLED = False
        small, big = ChatSessionFactory(system_prompt=""), ChatSessionFactory(system_prompt="")
        seed(small, 600)
        seed(big, 3_000)
        budget = 3 + 10 * window_messages  # reply priming + window_messages of 10 tokens
        small_ctx, small_queries = self._history_queries(small, budget)
        big_ctx, big_queries = self._history_queries(big, budget)
        assert small_ctx.messages_included == big_ctx.messages_included == window_messages
        assert big_ctx.messages_dropped == 3_000 - window_messages
        # The same queries whatever the history size: one for the (pinned) system messages,
        # then one keyset batch sized from the session's average message (the window plus a
        # margin of 2 and the has-more probe row), never the history.
        assert len(small_queries) == len(big_queries)
        batches = [q for q in big_queries if "LIMIT" in q]
        assert len(batches) == 1
        assert f"LIMIT {window_messages + 3}" in batches[0]
        assert all("OFFSET" not in q for q in big_queries)
        assert big_ctx.first_seq == 3_000 - window_messages + 1

    def _with_system_message_at(self, seq: int, count: int) -> ChatSession:
        session = ChatSessionFactory(system_prompt="")
        seed(session, count)
        Message.objects.filter(session=session, seq=seq).update(role="system", content="rules")
        return session

    def test_a_history_read_in_one_batch_pins_its_system_messages_without_another_query(
        self, settings
    ):
        settings.CHATENGINE_CACHE_ENABLED = False
        session = self._with_system_message_at(1, count=6)
        # Room for the system message and 3 more: the walk stops before seq 1, but the
        # batch (sized for the window) holds all 6 rows.
        context, queries = self._history_queries(session, budget=3 + 10 * 4)
        assert len(queries) == 1
        assert context.seqs == (1, 4, 5, 6)
        assert context.messages[0].role == "system"

    @pytest.mark.redis
    def test_the_context_is_read_in_one_query_and_never_from_the_history_cache(self, settings):
        settings.CHATENGINE_CACHE_ENABLED = True
        session = ChatSessionFactory(system_prompt="")
        seed(session, 30)
        selectors.list_messages(session=session, limit=50, order="desc")  # a warm tail
        events.reset()
        context, queries = self._history_queries(session, budget=3 + 10 * 20)
        assert events() == {"hit": 0, "miss": 0, "error": 0, "rebuild": 0}
        assert len(queries) == 1
        assert context.seqs == tuple(range(11, 31))

    def test_a_system_message_older_than_the_first_batch_is_still_sent_in_the_same_query(
        self, settings
    ):
        settings.CHATENGINE_CACHE_ENABLED = False
        session = self._with_system_message_at(1, count=200)
        context, queries = self._history_queries(session, budget=3 + 10 * 4)
        assert len(queries) == 1  # the batch and the system messages in one round trip
        assert context.seqs == (1, 198, 199, 200)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("key", "nested"), [(None, False), ("k-1", True)])
def test_the_user_message_is_appended_in_a_transaction_of_its_own_unless_a_key_checkpoints_it(
    api_client, user, fake_openai, monkeypatch, key, nested
):
    # With an Idempotency-Key the message and the key's checkpoint commit together; without
    # one there is nothing to commit with it, and an enclosing transaction only costs round
    # trips (a savepoint, or BEGIN/COMMIT) before the LLM call.
    seen = []
    append = conversation_services.append_message

    def spy(**kwargs):
        if kwargs["role"] == "user":
            seen.append(connection.in_atomic_block)
        return append(**kwargs)

    monkeypatch.setattr(conversation_services, "append_message", spy)
    session = ChatSessionFactory(user=user)
    api_client.force_authenticate(user)
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    response = api_client.post(
        f"/api/v1/sessions/{session.pk}/reply/", {"content": "hi"}, format="json", **headers
    )
    assert response.status_code == 201
    assert seen == [nested]


# --- Hooks for callers that store differently (the /v1/ facade) ------------------------------
@pytest.mark.django_db
def test_build_context_takes_several_pending_messages_oldest_first():
    session = ChatSessionFactory()
    seed(session, 2)
    counter = counter_for_model(session.model or "gpt-4o-mini")
    pending = tuple(
        HistoryMessage(
            seq=None,
            role="user",
            content=text,
            token_count=counter.count_message(role="user", content=text),
        )
        for text in ("first new", "second new")
    )
    context = services.build_context(session, pending=pending)
    history = [m.content for m in context.messages if m.role != "system"]
    assert history == ["m1", "m2", "first new", "second new"]
    assert context.messages_included == 4


class OptionsProvider:
    """Records the generation options it was given (None: the parameter was not passed)."""

    name = "options"
    seen: list = []

    def complete(self, messages, *, model, max_output_tokens, **kwargs):
        OptionsProvider.seen.append(kwargs.get("options"))
        return Completion(text="ok", model=model, finish_reason="stop")


@pytest.mark.django_db
def test_generation_options_reach_the_provider_only_when_set(settings):
    settings.LLM_PROVIDER = "llm.tests.test_services.OptionsProvider"
    OptionsProvider.seen.clear()
    session = ChatSessionFactory()
    prepared = services.prepare_reply(session=session, content="hi")
    services.complete_reply(prepared)
    options = GenerationOptions(temperature=0.1)
    services.complete_reply(replace(prepared, options=options))
    assert OptionsProvider.seen == [None, options]


@pytest.mark.django_db
def test_a_reply_prepared_with_store_false_writes_nothing():
    session = ChatSessionFactory()
    seed(session, 2)
    prepared = services.prepare_reply(session=session)  # no content: nothing stored
    before = list(Message.objects.values_list("pk", flat=True))
    result = services.complete_reply(replace(prepared, store=False))
    assert result.message.pk is None
    assert result.message.content.startswith("Echo:")
    assert list(Message.objects.values_list("pk", flat=True)) == before
    session.refresh_from_db()
    assert session.message_count == 2


@pytest.mark.django_db
class TestCheckpoint:
    """The Idempotency-Key's checkpoint is an argument of prepare_reply, not ambient state."""

    def _checkpoint(self, session: ChatSession, progress: dict | None = None) -> Checkpoint:
        record = IdempotencyKey.objects.create(
            user=session.user, key="k", fingerprint="f", session=session, response_body=progress
        )
        return Checkpoint(record)

    def test_the_stored_user_message_is_recorded_on_the_checkpoint_it_is_given(self, settings):
        settings.LLM_PROVIDER = "echo"
        session = ChatSessionFactory()
        checkpoint = self._checkpoint(session)
        prepared = services.prepare_reply(session=session, content="hi", checkpoint=checkpoint)
        stored = IdempotencyKey.objects.get(pk=checkpoint.record.pk).response_body
        assert stored == {"user_message_id": prepared.user_message.pk}

    def test_a_checkpoint_of_a_failed_attempt_reuses_its_user_message(self, settings):
        settings.LLM_PROVIDER = "echo"
        session = ChatSessionFactory()
        first = MessageFactory(session=session, content="hi")
        checkpoint = self._checkpoint(session, {"user_message_id": first.pk})
        prepared = services.prepare_reply(session=session, content="hi", checkpoint=checkpoint)
        assert prepared.user_message == first
        assert Message.objects.filter(session=session).count() == 1

    def test_without_a_checkpoint_nothing_is_reused_or_recorded(self, settings):
        settings.LLM_PROVIDER = "echo"
        session = ChatSessionFactory()
        MessageFactory(session=session, content="hi")
        self._checkpoint(session, {"user_message_id": Message.objects.get().pk})
        prepared = services.prepare_reply(session=session, content="hi")
        assert prepared.user_message.seq == 2
        assert IdempotencyKey.objects.get().response_body == {
            "user_message_id": Message.objects.get(seq=1).pk
        }


def test_idempotency_keeps_no_request_state_in_a_context_variable():
    assert not [name for name, value in vars(idempotency).items() if isinstance(value, ContextVar)]
