"""The `summary` context strategy: rolling summaries of what falls out of the window."""

import itertools
import logging
import threading

import pytest
from django.db import connection

from accounting.models import SessionUsage, UsageRecord
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


# --- Pinned messages --------------------------------------------------------------------
@pytest.mark.django_db
class TestPinned:
    def test_a_message_is_pinned_on_append_and_by_patch(self, auth_client, user):
        session = ChatSessionFactory(user=user)
        url = f"{SESSIONS}{session.pk}/messages/"
        created = auth_client.post(
            url, {"role": "user", "content": "My name is Ana.", "pinned": True}, format="json"
        )
        assert created.status_code == 201
        assert created.json()["pinned"] is True
        other = auth_client.post(url, {"role": "user", "content": "Hi"}, format="json").json()
        assert other["pinned"] is False
        patched = auth_client.patch(f"{url}2/", {"pinned": True}, format="json")
        assert patched.status_code == 200
        assert patched.json()["pinned"] is True
        assert Message.objects.get(session=session, seq=2).pinned is True
        unpinned = auth_client.patch(f"{url}1/", {"pinned": False}, format="json").json()
        assert unpinned["pinned"] is False
        # The history (served through the cache) says so too.
        history = auth_client.get(url).json()["results"]
        assert [m["pinned"] for m in history] == [False, True]

    @pytest.mark.parametrize(
        "body", [{"pinned": "yes"}, {"pinned": None}, {"pinned": True, "content": "rewritten"}]
    )
    def test_a_bad_patch_is_a_400_and_changes_nothing(self, auth_client, user, body):
        session = ChatSessionFactory(user=user)
        from conversations import services as conversation_services

        conversation_services.append_message(session=session, role="user", content="Hi")
        response = auth_client.patch(f"{SESSIONS}{session.pk}/messages/1/", body, format="json")
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "validation_error"
        stored = Message.objects.get(session=session, seq=1)
        assert (stored.pinned, stored.content) == (False, "Hi")

    def test_another_users_message_or_a_missing_seq_is_a_404(self, auth_client, user, other_user):
        from conversations import services as conversation_services

        theirs = ChatSessionFactory(user=other_user)
        conversation_services.append_message(session=theirs, role="user", content="secret")
        response = auth_client.patch(
            f"{SESSIONS}{theirs.pk}/messages/1/", {"pinned": True}, format="json"
        )
        assert response.status_code == 404
        assert Message.objects.get(session=theirs).pinned is False
        mine = ChatSessionFactory(user=user)
        missing = auth_client.patch(
            f"{SESSIONS}{mine.pk}/messages/7/", {"pinned": True}, format="json"
        )
        assert missing.status_code == 404

    def test_a_pinned_message_stays_in_the_window_however_old(self, auth_client, user):
        from conversations import services as conversation_services

        session = ChatSessionFactory(user=user)
        conversation_services.append_message(
            session=session, role="user", content="The code word is PELICAN."
        )
        seed(session, 300)
        context = services.build_context(session, budget=500)
        assert 1 not in context.seqs
        auth_client.patch(f"{SESSIONS}{session.pk}/messages/1/", {"pinned": True}, format="json")
        session.refresh_from_db()
        context = services.build_context(session, budget=500)
        assert context.seqs[0] == 1
        assert context.messages[1].content == "The code word is PELICAN."
        assert context.tokens <= 500

    def test_pinned_messages_that_no_longer_fit_are_a_422_and_store_nothing(
        self, auth_client, user, settings, tiny_model
    ):
        settings.LLM_PROVIDER = "echo"
        session = ChatSessionFactory(user=user, model=tiny_model)
        url = f"{SESSIONS}{session.pk}/messages/"
        for _ in range(3):
            auth_client.post(
                url,
                {"role": "user", "content": "remember this " * 100, "pinned": True},
                format="json",
            )
        response = auth_client.post(
            f"{SESSIONS}{session.pk}/reply/",
            {"content": "and?", "max_output_tokens": 100},
            format="json",
        )
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["type"] == "context_overflow"
        assert "pinned messages do not fit" in error["message"]
        assert Message.objects.filter(session=session).count() == 3

    def test_pinned_messages_survive_summaries_and_are_never_folded(self, fake_openai, tiny_model):
        from conversations import services as conversation_services

        session = ChatSessionFactory(model=tiny_model, context_strategy=SUMMARY)
        conversation_services.append_message(
            session=session, role="user", content="The code word is PELICAN.", pinned=True
        )
        for i in range(40):
            services.reply(session=session, content=f"question {i}", max_output_tokens=100)
        assert Summary.objects.filter(session=session).count() >= 2
        for body in fake_openai.requests:
            if is_summary_call(body):
                assert 1 not in folded_seqs(body)
            else:
                contents = [m["content"] for m in body["messages"]]
                assert "The code word is PELICAN." in contents


# --- The admin --------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_admin_transcript_shows_where_a_summary_cut_in_and_every_message(
    admin_client, settings, tiny_model
):
    from django.urls import reverse

    settings.LLM_PROVIDER = "echo"
    session = ChatSessionFactory(model=tiny_model, context_strategy=SUMMARY)
    seed(session, 40)
    Message.objects.filter(session=session, seq=2).update(pinned=True)
    services.reply(session=session, content="hi", max_output_tokens=100)
    row = Summary.objects.get(session=session)
    html = admin_client.get(
        reverse("admin:conversations_chatsession_change", args=[session.pk])
    ).content.decode()
    assert f'id="summary-{row.pk}"' in html
    assert f'data-covers-to="{row.covers_to_seq}"' in html
    # The marker sits right after the last message it folded; every original message stays.
    after = html.index(f'id="msg-{row.covers_to_seq}"')
    assert (
        after
        < html.index(f'id="summary-{row.pk}"')
        < html.index(f'id="msg-{row.covers_to_seq + 1}"')
    )
    for seq in range(1, 43):
        assert f'id="msg-{seq}"' in html
    assert 'class="ce-pinned"' in html


@pytest.mark.django_db
def test_each_summarising_call_is_accounted_in_the_usage_totals(fake_openai, tiny_model):
    session = ChatSessionFactory(model=tiny_model, context_strategy=SUMMARY)
    for i in range(40):
        services.reply(
            session=session, content=f"question {i} about the plan", max_output_tokens=100
        )

    rows = list(Summary.objects.filter(session=session).order_by("covers_to_seq"))
    assert rows
    records = UsageRecord.objects.filter(session_id=session.pk, kind="summary").order_by("id")
    assert [(r.input_tokens, r.output_tokens) for r in records] == [
        (row.usage["prompt_tokens"], row.usage["completion_tokens"]) for row in rows
    ]
    totals = SessionUsage.objects.get(session=session)
    assert totals.calls == UsageRecord.objects.filter(session_id=session.pk).count()
