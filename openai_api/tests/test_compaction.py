"""Compaction on /v1/ (issue 17): `POST /v1/responses/compact`, compaction items sent back as
input, and `context_management` on a response, all mapped onto chatengine's rolling summaries.
The stock SDK on this process's WSGI app, the fake OpenAI server as the model."""

import openai
import pytest

from accounting.models import CallKind, UsageRecord
from accounts.tests.factories import api_key_for
from conversations.models import ChatSession, Message, Summary
from llm.context import summary_message
from llm.tests.test_summaries import folded_seqs, is_summary_call
from openai_api import ids
from openai_api.tests.test_api import openai_error, rows

pytestmark = pytest.mark.django_db

TINY = "tiny-compact-model"


@pytest.fixture
def tiny(settings):
    """A model with a 600-token window (468 of prompt with 100 of output); summaries of at
    most 128 tokens; no automatic title calls among the requests the fake server records."""
    settings.LLM_MODEL_CONTEXT_WINDOWS = {**settings.LLM_MODEL_CONTEXT_WINDOWS, TINY: 600}
    settings.LLM_ALLOWED_MODELS = [*settings.LLM_ALLOWED_MODELS, TINY]
    settings.LLM_SUMMARY_MAX_TOKENS = 128
    settings.CHATENGINE_AUTO_TITLE = False
    return TINY


def conversation_with(sdk, turns: int):
    items = []
    for i in range(turns):
        items.append({"role": "user", "content": f"question {i} about the harbour"})
        items.append({"role": "assistant", "content": f"answer {i} about the boats"})
    return sdk.conversations.create(items=items)


def session_of(conversation_id: str) -> ChatSession:
    return ChatSession.objects.get(pk=ids.parse_conversation_id(conversation_id))


def summaries_of(session: ChatSession) -> list[Summary]:
    return list(Summary.objects.filter(session=session).order_by("covers_from_seq"))


def as_input(items) -> list[dict]:
    # The SDK types compact output as output items; its user messages carry input_text.
    return [item.model_dump(exclude_none=True, warnings=False) for item in items]


def summary_calls(fake) -> list[dict]:
    return [body for body in fake.requests if is_summary_call(body)]


def assert_folded_in_tiles(summaries: list[Summary], calls: list[dict], *, first: int, last: int):
    """The summaries tile first..last, each call folded exactly its summary's messages."""
    assert [s.covers_from_seq for s in summaries] == [
        first,
        *(s.covers_to_seq + 1 for s in summaries[:-1]),
    ]
    assert summaries[-1].covers_to_seq == last
    for summary, call in zip(summaries, calls, strict=True):
        assert folded_seqs(call) == list(range(summary.covers_from_seq, summary.covers_to_seq + 1))


class TestCompactingAStoredConversation:
    def test_every_message_is_folded_and_the_next_response_sends_the_summary_instead(
        self, fake_openai, tiny, inprocess_sdk
    ):
        conv = conversation_with(inprocess_sdk, 6)
        first = inprocess_sdk.responses.create(
            model=tiny, conversation=conv.id, input="one more", max_output_tokens=50
        )
        session = session_of(conv.id)
        assert session.last_seq == 14
        fake_openai.reset()

        compacted = inprocess_sdk.responses.compact(model=tiny, previous_response_id=first.id)

        assert compacted.object == "response.compaction"
        [item] = compacted.output
        assert item.type == "compaction"
        folded = summaries_of(session)
        assert_folded_in_tiles(folded, summary_calls(fake_openai), first=1, last=14)
        row = folded[-1]
        assert compacted.id == item.id == f"cmp_{row.pk}"
        assert compacted.usage.input_tokens == sum(s.usage["prompt_tokens"] for s in folded)
        assert compacted.usage.output_tokens == sum(s.usage["completion_tokens"] for s in folded)
        assert compacted.usage.output_tokens > 0
        session.refresh_from_db()
        assert session.context_strategy == ChatSession.ContextStrategy.SUMMARY

        fake_openai.reset()
        inprocess_sdk.responses.create(
            model=tiny, previous_response_id=first.id, input="and now?", max_output_tokens=50
        )
        [reply_call] = fake_openai.requests
        assert [m["content"] for m in reply_call["messages"]] == [
            summary_message(text=row.text, covers_to_seq=14).content,
            "and now?",
        ]
        assert len(rows(conv.id)) == 16  # every original message is still there

    def test_compacting_again_folds_only_the_messages_since_the_last_summary(
        self, fake_openai, tiny, inprocess_sdk
    ):
        conv = conversation_with(inprocess_sdk, 3)
        first = inprocess_sdk.responses.compact(model=tiny, extra_body={"conversation": conv.id})
        second_reply = inprocess_sdk.responses.create(
            model=tiny, conversation=conv.id, input="later", max_output_tokens=50
        )
        fake_openai.reset()

        again = inprocess_sdk.responses.compact(model=tiny, previous_response_id=second_reply.id)

        [call] = summary_calls(fake_openai)
        assert folded_seqs(call) == [7, 8]  # the new question and its reply, nothing older
        *_, earlier, newer = summaries_of(session_of(conv.id))
        assert [m["content"] for m in call["messages"] if m["role"] == "system"][1] == (
            summary_message(text=earlier.text, covers_to_seq=6).content
        )
        assert (newer.covers_from_seq, newer.covers_to_seq) == (7, 8)
        assert first.id != again.id == f"cmp_{newer.pk}"

        fake_openai.reset()
        unchanged = inprocess_sdk.responses.compact(
            model=tiny, extra_body={"conversation": conv.id}
        )
        assert fake_openai.requests == []  # nothing new to fold: no call
        assert unchanged.id == again.id
        assert (unchanged.usage.input_tokens, unchanged.usage.output_tokens) == (0, 0)

    def test_another_users_conversation_is_a_404(self, other_user, tiny, inprocess_sdk):
        conv = conversation_with(inprocess_sdk, 1)
        inprocess_sdk.api_key = api_key_for(other_user)
        with pytest.raises(openai.NotFoundError):
            inprocess_sdk.responses.compact(model=tiny, extra_body={"conversation": conv.id})
        assert not Summary.objects.exists()

    def test_an_empty_conversation_is_a_409(self, tiny, inprocess_sdk):
        conv = inprocess_sdk.conversations.create()
        with pytest.raises(openai.ConflictError) as raised:
            inprocess_sdk.responses.compact(model=tiny, extra_body={"conversation": conv.id})
        assert openai_error(raised.value)["code"] == "conflict"

    def test_a_failed_summarising_call_fails_the_compaction_and_changes_nothing(
        self, fake_openai, tiny, inprocess_sdk
    ):
        conv = conversation_with(inprocess_sdk, 2)
        fake_openai.fail_next("server_error")
        with pytest.raises(openai.InternalServerError):
            inprocess_sdk.responses.compact(model=tiny, extra_body={"conversation": conv.id})
        assert not Summary.objects.exists()
        assert session_of(conv.id).context_strategy == ChatSession.ContextStrategy.WINDOW

    def test_input_with_a_stored_conversation_and_unsupported_parameters_are_400s(
        self, tiny, inprocess_sdk
    ):
        conv = conversation_with(inprocess_sdk, 1)
        for extra, param in (
            ({"conversation": conv.id, "input": "x"}, "input"),
            ({"conversation": conv.id, "instructions": "be brief"}, "instructions"),
            ({"conversation": conv.id, "service_tier": "flex"}, "service_tier"),
            ({"conversation": conv.id, "model": "not-allowed-here"}, "model"),
            ({}, "input"),
        ):
            with pytest.raises(openai.BadRequestError) as raised:
                inprocess_sdk.responses.compact(model=tiny, extra_body=extra)
            assert openai_error(raised.value)["param"] == param
        assert not Summary.objects.exists()


class TestCompactingInputAlone:
    def test_the_input_is_summarised_and_nothing_is_stored(self, fake_openai, tiny, inprocess_sdk):
        compacted = inprocess_sdk.responses.compact(
            model=tiny,
            input=[
                {"role": "user", "content": "my name is Ada"},
                {"role": "assistant", "content": "hello Ada"},
                {"role": "user", "content": "I live in Lyon"},
            ],
        )
        # As OpenAI's: the user messages, then the compaction.
        assert [i.type for i in compacted.output] == ["message", "message", "compaction"]
        assert [i.content[0].text for i in compacted.output[:2]] == [
            "my name is Ada",
            "I live in Lyon",
        ]
        [call] = fake_openai.requests
        assert folded_seqs(call) == [1, 2, 3]
        assert compacted.id.startswith("cmp_nostore_")
        assert not ChatSession.objects.exists()
        assert not Summary.objects.exists()
        [record] = UsageRecord.objects.all()
        assert (record.kind, record.session_id) == (CallKind.SUMMARY, None)
        assert record.input_tokens == compacted.usage.input_tokens

    def test_its_output_sent_as_input_carries_the_summary_into_a_new_conversation(
        self, fake_openai, tiny, inprocess_sdk
    ):
        fake_openai.reply_text = "Ada lives in Lyon."
        compacted = inprocess_sdk.responses.compact(
            model=tiny, input=[{"role": "user", "content": "my name is Ada"}]
        )
        fake_openai.reply_text = "Hi Ada."
        fake_openai.reset()
        r = inprocess_sdk.responses.create(
            model=tiny,
            input=[*as_input(compacted.output), {"role": "user", "content": "who am I?"}],
            max_output_tokens=50,
        )
        summary = summary_message(text="Ada lives in Lyon.", covers_to_seq=1).content
        assert rows(r.conversation.id) == [
            ("user", "my name is Ada"),
            ("system", summary),
            ("user", "who am I?"),
            ("assistant", "Hi Ada."),
        ]
        [call] = fake_openai.requests
        assert {"role": "system", "content": summary} in call["messages"]

    def test_a_compaction_in_the_input_counts_as_the_messages_it_covers(
        self, fake_openai, tiny, inprocess_sdk
    ):
        first = inprocess_sdk.responses.compact(
            model=tiny,
            input=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
        )
        fake_openai.reset()
        again = inprocess_sdk.responses.compact(
            model=tiny,
            input=[
                first.output[-1].model_dump(exclude_none=True),
                {"role": "user", "content": "3"},
            ],
        )
        [call] = fake_openai.requests
        assert folded_seqs(call) == [2, 3]  # the compaction stands for messages 1-2
        r = inprocess_sdk.responses.create(
            model=tiny,
            input=[
                again.output[-1].model_dump(exclude_none=True),
                {"role": "user", "content": "?"},
            ],
            max_output_tokens=50,
        )
        assert rows(r.conversation.id)[0][1].startswith("Summary of messages 1-3 ")


class TestCompactionItems:
    def compaction(self, sdk, tiny):
        return sdk.responses.compact(model=tiny, input="remember PELICAN").output[-1]

    def test_an_altered_compaction_is_a_404_naming_it(self, tiny, inprocess_sdk):
        item = self.compaction(inprocess_sdk, tiny).model_dump(exclude_none=True)
        item["encrypted_content"] = item["encrypted_content"].replace("PELICAN", "X", 1) + "x"
        with pytest.raises(openai.NotFoundError) as raised:
            inprocess_sdk.responses.create(
                model=tiny, input=[item, {"role": "user", "content": "?"}]
            )
        assert openai_error(raised.value)["param"] == "input.0.encrypted_content"
        assert not ChatSession.objects.exists()

    def test_another_users_compaction_is_a_404(self, other_user, tiny, inprocess_sdk):
        item = self.compaction(inprocess_sdk, tiny).model_dump(exclude_none=True)
        inprocess_sdk.api_key = api_key_for(other_user)
        with pytest.raises(openai.NotFoundError) as raised:
            inprocess_sdk.responses.create(
                model=tiny, input=[item, {"role": "user", "content": "?"}]
            )
        assert openai_error(raised.value)["param"] == "input.0.encrypted_content"

    def test_the_compaction_of_the_conversation_being_continued_is_not_stored_twice(
        self, tiny, inprocess_sdk
    ):
        conv = conversation_with(inprocess_sdk, 2)
        compacted = inprocess_sdk.responses.compact(
            model=tiny, extra_body={"conversation": conv.id}
        )
        inprocess_sdk.responses.create(
            model=tiny,
            conversation=conv.id,
            input=[*as_input(compacted.output), {"role": "user", "content": "next"}],
            max_output_tokens=50,
        )
        assert [role for role, _ in rows(conv.id)][4:] == ["user", "assistant"]

    def test_conversation_items_do_not_take_compactions(self, tiny, inprocess_sdk):
        item = self.compaction(inprocess_sdk, tiny).model_dump(exclude_none=True)
        conv = inprocess_sdk.conversations.create()
        with pytest.raises(openai.BadRequestError) as raised:
            inprocess_sdk.conversations.items.create(conv.id, items=[item])
        assert openai_error(raised.value)["param"] == "items.0.type"


class TestContextManagement:
    def test_compaction_folds_a_window_conversation_for_that_call_at_its_threshold(
        self, fake_openai, tiny, inprocess_sdk
    ):
        conv = conversation_with(inprocess_sdk, 10)
        r = inprocess_sdk.responses.create(
            model=tiny,
            conversation=conv.id,
            input="and so?",
            max_output_tokens=50,
            context_management=[{"type": "compaction", "compact_threshold": 200}],
        )
        session = session_of(conv.id)
        folded = summaries_of(session)
        assert folded
        assert_folded_in_tiles(
            folded, summary_calls(fake_openai), first=1, last=folded[-1].covers_to_seq
        )
        reply = Message.objects.get(session=session, role="assistant", seq=22)
        assert reply.context["budget"] == 200
        assert reply.context["strategy"] == "summary"
        assert reply.context["summary"]["covers_to_seq"] == folded[-1].covers_to_seq
        assert reply.context["first_seq"] == folded[-1].covers_to_seq + 1
        assert r.usage.input_tokens <= 200
        # For that call only: the session keeps its strategy.
        assert session.context_strategy == ChatSession.ContextStrategy.WINDOW

    def test_without_a_threshold_it_folds_at_the_models_budget(
        self, fake_openai, tiny, inprocess_sdk
    ):
        conv = conversation_with(inprocess_sdk, 2)
        inprocess_sdk.responses.create(
            model=tiny,
            conversation=conv.id,
            input="short",
            max_output_tokens=50,
            context_management=[{"type": "compaction"}],
        )
        # Everything fits the model's budget: nothing to fold.
        assert not summary_calls(fake_openai)
        reply = Message.objects.get(session=session_of(conv.id), seq=6)
        assert reply.context["strategy"] == "summary"
        assert reply.context["budget"] == 600 - 50 - 32

    @pytest.mark.parametrize(
        ("value", "param"),
        [
            ([{"type": "truncate"}], "context_management.0.type"),
            (
                [{"type": "compaction", "compact_threshold": 5}],
                "context_management.0.compact_threshold",
            ),
            ([{"type": "compaction", "keep": 3}], "context_management.0"),
            ([{"type": "compaction"}, {"type": "compaction"}], "context_management"),
        ],
    )
    def test_what_chatengine_cannot_do_is_a_400_and_stores_nothing(
        self, value, param, tiny, inprocess_sdk
    ):
        with pytest.raises(openai.BadRequestError) as raised:
            inprocess_sdk.responses.create(model=tiny, input="x", context_management=value)
        assert openai_error(raised.value)["param"] == param
        assert not ChatSession.objects.exists()
