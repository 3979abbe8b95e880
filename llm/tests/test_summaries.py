"""The `summary` context strategy: rolling summaries of what falls out of the window."""

import itertools
import logging
import threading

import pytest
from django.db import connection

from chatengine.exceptions import ContextOverflow
from conversations.models import ChatSession, Message, Summary
from conversations.tests.factories import ChatSessionFactory
from llm import services
from llm.context import SUMMARY_INSTRUCTIONS, select_messages
from llm.tests.test_services import seed
from llm.types import Completion, HistoryMessage, SummaryNote, Usage

SUMMARY = ChatSession.ContextStrategy.SUMMARY
TINY = "tiny-test-model"


@pytest.fixture
def tiny_model(settings):
    """A model with a small window: budget 600 - 100 (output) - 32 (margin) = 468 tokens, of
    which 128 are set aside for the summary."""
    settings.LLM_MODEL_CONTEXT_WINDOWS = {**settings.LLM_MODEL_CONTEXT_WINDOWS, TINY: 600}
    settings.LLM_SUMMARY_MAX_TOKENS = 128
    return TINY


def is_summary_call(body: dict) -> bool:
    return body["messages"][0]["content"].startswith(SUMMARY_INSTRUCTIONS)


def folded_seqs(body: dict) -> list[int]:
    """The seqs of the messages a summarising call was sent ("[#12 user] ...")."""
    return [int(m["content"][2:].split(" ", 1)[0]) for m in body["messages"] if m["role"] == "user"]


# --- The pure builder -------------------------------------------------------------------
def msg(seq, role="user", tokens=10, content=None):
    return HistoryMessage(seq=seq, role=role, content=content or f"m{seq}", token_count=tokens)


def build(history, *, budget, summary=None, reserve=0, pinned=()):
    return select_messages(
        system_prompt="",
        system_prompt_tokens=0,
        pinned=list(pinned),
        history_newest_first=list(reversed(history)),
        total_messages=len(history),
        budget=budget,
        encoding="cl100k_base",
        strategy="summary",
        summary=summary,
        summary_reserve=reserve,
    )


class TestBuilderWithASummary:
    def test_the_summary_replaces_the_messages_it_covers_and_the_window_follows_it(self):
        history = [msg(i) for i in range(1, 11)]
        note = SummaryNote(id=7, covers_to_seq=6, text="the gist", token_count=20)
        context = build(history, budget=1000, summary=note, reserve=50)
        assert context.seqs == (7, 8, 9, 10)
        assert context.messages[0].role == "system"
        assert context.messages[0].content.startswith("Summary of messages 1-6")
        assert context.messages[0].content.endswith("the gist")
        assert context.summary == note
        assert context.evicted_to_seq is None
        assert context.as_record()["summary"] == {
            "id": 7,
            "covers_from_seq": 1,
            "covers_to_seq": 6,
            "tokens": 20,
        }

    def test_the_reserve_is_set_aside_so_folding_never_changes_the_window(self):
        history = [msg(i) for i in range(1, 11)]
        # 3 priming + 50 reserved: 4 messages of 10 fit in 100.
        before = build(history, budget=100, reserve=50)
        assert before.seqs == (7, 8, 9, 10)
        assert before.evicted_to_seq == 6
        note = SummaryNote(id=1, covers_to_seq=6, text="x", token_count=50)
        after = build(history, budget=100, summary=note, reserve=50)
        assert after.seqs == before.seqs
        assert after.evicted_to_seq is None
        assert after.tokens <= after.budget

    def test_pinned_messages_the_summary_covers_come_before_it(self):
        history = [msg(i) for i in range(1, 11)]
        pinned = [msg(2, content="remember the code word")]
        note = SummaryNote(id=1, covers_to_seq=6, text="x", token_count=10)
        context = build(history, budget=1000, summary=note, reserve=20, pinned=pinned)
        assert [m.content for m in context.messages[:2]] == [
            "remember the code word",
            context.messages[1].content,
        ]
        assert context.messages[1].content.startswith("Summary of messages 1-6")
        assert context.seqs == (2, 7, 8, 9, 10)

    def test_pinned_messages_that_no_longer_fit_are_a_context_overflow_saying_so(self):
        history = [msg(i) for i in range(1, 4)]
        pinned = [msg(1, tokens=80), msg(2, tokens=30)]
        with pytest.raises(ContextOverflow) as caught:
            build(history, budget=100, pinned=pinned)
        assert "pinned messages do not fit" in caught.value.message
        assert caught.value.details["over_by"] == 13  # 3 priming + 110 - 100


# --- Replies ----------------------------------------------------------------------------
@pytest.mark.django_db
class TestRollingSummaries:
    def test_300_messages_with_a_small_budget_make_summaries_that_tile_1_to_n(
        self, fake_openai, tiny_model
    ):
        fake_openai.reply_text = "Short answer here."
        session = ChatSessionFactory(model=tiny_model, context_strategy=SUMMARY)
        for i in range(150):
            services.reply(
                session=session,
                content=f"question {i} about the project plan",
                max_output_tokens=100,
            )
        assert session.message_count == 300

        rows = list(Summary.objects.filter(session=session).order_by("covers_to_seq"))
        assert len(rows) > 10
        assert rows[0].covers_from_seq == 1
        for earlier, later in itertools.pairwise(rows):
            assert later.covers_from_seq == earlier.covers_to_seq + 1  # no gap, no overlap
        assert all(r.token_count <= 128 for r in rows)
        assert all(r.usage and r.usage["total_tokens"] > 0 for r in rows)

        # Each summarising call sent the previous summary plus only the new evictions.
        calls = [body for body in fake_openai.requests if is_summary_call(body)]
        assert len(calls) == len(rows)
        previous = None
        for body, row in zip(calls, rows, strict=True):
            assert folded_seqs(body) == list(range(row.covers_from_seq, row.covers_to_seq + 1))
            systems = [m["content"] for m in body["messages"][1:] if m["role"] == "system"]
            if previous is None:
                assert systems == []
            else:
                assert systems == [
                    f"Summary of messages 1-{previous.covers_to_seq} of this conversation "
                    f"(they are not shown):\n{previous.text}"
                ]
            previous = row

        # Every reply after the first summary sent it, followed by the window with no gap.
        replies = Message.objects.filter(session=session, role="assistant").order_by("seq")
        summarised = [m.context for m in replies if m.context["summary"]]
        assert summarised
        for context in summarised:
            assert context["strategy"] == "summary"
            assert context["first_seq"] == context["summary"]["covers_to_seq"] + 1
        last = replies.last().context["summary"]
        assert last["id"] == rows[-1].pk
        # History keeps every original message.
        assert Message.objects.filter(session=session).count() == 300

    def test_a_window_session_never_summarises(self, fake_openai, tiny_model):
        session = ChatSessionFactory(model=tiny_model)
        for i in range(40):
            services.reply(session=session, content=f"question {i}", max_output_tokens=100)
        assert not Summary.objects.filter(session=session).exists()
        assert not any(is_summary_call(b) for b in fake_openai.requests)
        assert session.messages.order_by("-seq").first().context["summary"] is None

    def test_system_messages_survive_every_summary(self, fake_openai, tiny_model):
        session = ChatSessionFactory(model=tiny_model, context_strategy=SUMMARY)
        services.reply(session=session, content="The code word is PELICAN.", max_output_tokens=100)
        from conversations import services as conversation_services

        conversation_services.append_message(
            session=session, role="system", content="Always answer in French."
        )
        for i in range(40):
            services.reply(session=session, content=f"question {i}", max_output_tokens=100)
        assert Summary.objects.filter(session=session).exists()
        last_call = [b for b in fake_openai.requests if not is_summary_call(b)][-1]
        contents = [m["content"] for m in last_call["messages"]]
        assert "Always answer in French." in contents
        # The summaries never folded the system message.
        for body in fake_openai.requests:
            if is_summary_call(body):
                assert 3 not in folded_seqs(body)

    def test_a_failed_summary_call_still_answers_with_the_plain_window(
        self, fake_openai, tiny_model, caplog
    ):
        session = ChatSessionFactory(model=tiny_model, context_strategy=SUMMARY)
        seed(session, 60)
        fake_openai.fail_next("server_error")  # the summarising call comes first
        with caplog.at_level(logging.WARNING, logger="chatengine.events"):
            result = services.reply(session=session, content="still there?", max_output_tokens=100)
        assert result.message.content == fake_openai.reply_text
        assert result.message.context["summary"] is None
        assert not Summary.objects.filter(session=session).exists()
        failed = [r for r in caplog.records if getattr(r, "event", "") == "summary.failed"]
        assert len(failed) == 1
        assert failed[0].error_type == "llm_upstream_error"
        # The next reply folds what it could not.
        services.reply(session=session, content="and now?", max_output_tokens=100)
        assert Summary.objects.filter(session=session, covers_from_seq=1).exists()

    def test_a_backlog_is_folded_in_chunks_that_each_fit_the_model(self, fake_openai, tiny_model):
        session = ChatSessionFactory(model=tiny_model, context_strategy=SUMMARY)
        seed(session, 120)  # a window session switched to summary late: 120 messages out
        services.reply(session=session, content="catch up", max_output_tokens=100)
        rows = list(Summary.objects.filter(session=session).order_by("covers_to_seq"))
        assert len(rows) >= 2
        for earlier, later in itertools.pairwise(rows):
            assert later.covers_from_seq == earlier.covers_to_seq + 1
        for body in fake_openai.requests:
            if is_summary_call(body):
                assert len(folded_seqs(body)) * 10 <= 468  # each chunk fits the budget


class RecordingProvider:
    """Records whether a transaction was open at each call (summaries and replies alike)."""

    name = "recording"
    calls: list[bool] = []

    def complete(self, messages, *, model, max_output_tokens, options=None):
        RecordingProvider.calls.append(connection.in_atomic_block)
        return Completion(text="ok", model=model, finish_reason="stop", usage=Usage(1, 1, 2))


@pytest.mark.django_db(transaction=True)
def test_the_summarising_call_runs_with_no_transaction_open(settings, tiny_model):
    settings.LLM_PROVIDER = "llm.tests.test_summaries.RecordingProvider"
    RecordingProvider.calls.clear()
    session = ChatSessionFactory(model=tiny_model, context_strategy=SUMMARY)
    seed(session, 40)  # one chunk to fold
    services.reply(session=session, content="hi", max_output_tokens=100)
    assert Summary.objects.filter(session=session).count() == 1
    assert RecordingProvider.calls == [False, False]  # the summary, then the reply


@pytest.mark.django_db
def test_the_echo_provider_summarises_deterministically(settings, tiny_model):
    settings.LLM_PROVIDER = "echo"
    session = ChatSessionFactory(model=tiny_model, context_strategy=SUMMARY)
    seed(session, 40)  # one chunk to fold
    services.reply(session=session, content="hi", max_output_tokens=100)
    row = Summary.objects.get(session=session, covers_from_seq=1)
    assert row.text.startswith("[#1 user] m1 | [#2 assistant] m2 | [#3 user] m3")
    assert row.model == "echo"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_replies_make_one_summary_per_range(fake_openai, tiny_model):
    fake_openai.latency_ms = 300  # both replies wait on the summarising call together
    session = ChatSessionFactory(model=tiny_model, context_strategy=SUMMARY)
    seed(session, 40)  # one chunk to fold
    barrier = threading.Barrier(2)
    results, errors = {}, []

    def run(i):
        try:
            barrier.wait(timeout=10)
            own = ChatSession.objects.get(pk=session.pk)
            results[i] = services.reply(session=own, content=f"racing {i}", max_output_tokens=100)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    assert sum(is_summary_call(b) for b in fake_openai.requests) == 2  # both tried...
    rows = list(Summary.objects.filter(session=session))
    assert [(r.covers_from_seq) for r in rows] == [1]  # ...one row for the range
    for i in range(2):
        assert results[i].message.context["summary"]["id"] == rows[0].pk


# --- The API ----------------------------------------------------------------------------
SESSIONS = "/api/v1/sessions/"


@pytest.mark.django_db
class TestApi:
    def test_the_strategy_is_set_on_create_and_by_patch_with_the_server_default(
        self, auth_client, settings
    ):
        settings.LLM_CONTEXT_STRATEGY = "summary"
        defaulted = auth_client.post(SESSIONS, {}, format="json").json()
        assert defaulted["context_strategy"] == "summary"
        chosen = auth_client.post(SESSIONS, {"context_strategy": "window"}, format="json").json()
        assert chosen["context_strategy"] == "window"
        patched = auth_client.patch(
            f"{SESSIONS}{chosen['id']}/", {"context_strategy": "summary"}, format="json"
        )
        assert patched.status_code == 200
        assert ChatSession.objects.get(pk=chosen["id"]).context_strategy == "summary"

    def test_an_unknown_strategy_is_a_400_in_the_envelope(self, auth_client):
        response = auth_client.post(SESSIONS, {"context_strategy": "forget"}, format="json")
        assert response.status_code == 400
        body = response.json()
        assert body["error"]["type"] == "validation_error"
        assert "context_strategy" in body["error"]["details"]

    def test_summaries_are_listed_oldest_range_first_and_paged(
        self, auth_client, user, settings, tiny_model
    ):
        settings.LLM_PROVIDER = "echo"
        session = ChatSessionFactory(user=user, model=tiny_model, context_strategy=SUMMARY)
        seed(session, 60)
        services.reply(session=session, content="hi", max_output_tokens=100)
        rows = list(Summary.objects.filter(session=session).order_by("covers_to_seq"))
        first = auth_client.get(f"{SESSIONS}{session.pk}/summaries/", {"limit": 1}).json()
        assert [r["id"] for r in first["results"]] == [rows[0].pk]
        assert first["results"][0]["covers_from_seq"] == 1
        assert first["results"][0]["covers_to_seq"] == rows[0].covers_to_seq
        assert first["results"][0]["usage"]["total_tokens"] > 0
        assert first["has_more"] is True
        second = auth_client.get(first["next"]).json()
        assert [r["id"] for r in second["results"]] == [rows[1].pk]

    def test_another_users_summaries_are_a_404(self, auth_client, other_user):
        session = ChatSessionFactory(user=other_user, context_strategy=SUMMARY)
        response = auth_client.get(f"{SESSIONS}{session.pk}/summaries/")
        assert response.status_code == 404

    def test_the_context_preview_names_the_summary_it_would_send(
        self, auth_client, user, settings, tiny_model
    ):
        settings.LLM_PROVIDER = "echo"
        session = ChatSessionFactory(user=user, model=tiny_model, context_strategy=SUMMARY)
        seed(session, 40)
        reply = services.reply(session=session, content="hi", max_output_tokens=100)
        row = Summary.objects.get(session=session)
        body = auth_client.get(
            f"{SESSIONS}{session.pk}/context/", {"max_output_tokens": 100}
        ).json()
        assert body["strategy"] == "summary"
        assert body["summary"] == {
            "id": row.pk,
            "covers_from_seq": 1,
            "covers_to_seq": row.covers_to_seq,
            "tokens": row.token_count,
        }
        assert body["messages"][1]["content"].startswith(
            f"Summary of messages 1-{row.covers_to_seq} "
        )
        assert reply.message.context["summary"]["id"] == row.pk
