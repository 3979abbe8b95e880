"""The stock `openai` SDK against a live chatengine: the issue's snippet and the whole
surface, sync and async, streamed and not; what it writes is what /api/v1/ and the admin show.
"""

import asyncio
import io
import json

import openai
import pytest
from django.core.management import call_command

from accounts.tests.factories import api_key_for
from conversations.models import ChatSession, Message
from conversations.tests.factories import UserFactory
from llm.tests.fake_openai import DEFAULT_REPLY
from llm.titles import TITLE_INSTRUCTION
from openai_api import ids
from openai_api.tests.conftest import async_sdk, sdk
from tests.reliability.conftest import http, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

STREAM_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * len(DEFAULT_REPLY.split(" ")),
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def rows(session_id) -> list[tuple[str, str]]:
    return list(
        Message.objects.filter(session_id=session_id).order_by("seq").values_list("role", "content")
    )


def session_of(conversation_id: str):
    return ids.parse_conversation_id(conversation_id)


def reply_requests(fake) -> list[dict]:
    """The requests for replies: a new conversation's automatic title call left out."""
    return [r for r in fake.requests if r["messages"][0]["content"] != TITLE_INSTRUCTION]


def sent(fake, i=-1) -> list[tuple[str, str]]:
    """What the i-th reply request sent."""
    return [(m["role"], m["content"]) for m in reply_requests(fake)[i]["messages"]]


# --- The snippet ---------------------------------------------------------------------
class TestTheSnippet:
    def test_it_works_against_the_echo_provider(self, user_token, echo_server):
        client = sdk(echo_server, user_token)
        conv = client.conversations.create(
            items=[{"type": "message", "role": "user", "content": "Hi"}]
        )
        r = client.responses.create(model="gpt-4o-mini", conversation=conv.id, input="And then?")
        assert r.output_text == "Echo: And then?"
        assert r.conversation.id == conv.id
        assert rows(session_of(conv.id)) == [
            ("user", "Hi"),
            ("user", "And then?"),
            ("assistant", "Echo: And then?"),
        ]

    def test_it_works_streamed_and_chained_against_the_echo_provider(self, user_token, echo_server):
        client = sdk(echo_server, user_token)
        conv = client.conversations.create(items=[{"role": "user", "content": "Hi"}])
        events = list(
            client.responses.create(
                model="gpt-4o-mini", conversation=conv.id, input="And then?", stream=True
            )
        )
        assert events[-1].type == "response.completed"
        first = events[-1].response
        assert first.output_text == "Echo: And then?"
        second = client.responses.create(
            model="gpt-4o-mini", previous_response_id=first.id, input="Go on"
        )
        assert second.output_text == "Echo: Go on"
        assert second.conversation.id == conv.id
        assert [role for role, _ in rows(session_of(conv.id))] == [
            "user", "user", "assistant", "user", "assistant",
        ]  # fmt: skip

    def test_it_works_against_the_fake_openai_server(self, user_token, fake_server, fake_llm):
        client = sdk(fake_server, user_token)
        conv = client.conversations.create(
            items=[{"type": "message", "role": "user", "content": "Hi"}]
        )
        r = client.responses.create(model="gpt-4o-mini", conversation=conv.id, input="And then?")
        assert r.output_text == DEFAULT_REPLY
        assert sent(fake_llm) == [("user", "Hi"), ("user", "And then?")]
        assert reply_requests(fake_llm)[-1]["model"] == "gpt-4o-mini"
        # Usage from the provider (the fake counts words).
        assert r.usage.input_tokens == 3
        assert r.usage.output_tokens == len(DEFAULT_REPLY.split())
        assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens

    def test_the_stream_helper_assembles_the_final_response(
        self, user_token, fake_server, fake_llm
    ):
        client = sdk(fake_server, user_token)
        conv = client.conversations.create()
        with client.responses.stream(
            model="gpt-4o-mini", conversation=conv.id, input="Tell me"
        ) as stream:
            events = list(stream)
            final = stream.get_final_response()
        assert [e.type for e in events] == STREAM_EVENTS
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert final.output_text == DEFAULT_REPLY
        assert final.status == "completed"
        # The final response is the stored one, as any later read returns it.
        again = client.responses.retrieve(final.id)
        assert again.output[0].id == final.output[0].id
        assert again.output_text == DEFAULT_REPLY
        stored = Message.objects.get(pk=ids.parse_item_id(final.output[0].id))
        assert (stored.role, stored.content) == ("assistant", DEFAULT_REPLY)

    def test_chaining_by_previous_response_id_sends_the_whole_conversation(
        self, user_token, fake_server, fake_llm
    ):
        client = sdk(fake_server, user_token)
        first = client.responses.create(model="gpt-4o-mini", input="One")
        second = client.responses.create(
            model="gpt-4o-mini", previous_response_id=first.id, input="Two"
        )
        assert second.conversation.id == first.conversation.id
        assert sent(fake_llm) == [("user", "One"), ("assistant", DEFAULT_REPLY), ("user", "Two")]


# --- Async, under ASGI --------------------------------------------------------------------------
def test_the_async_client_creates_responds_and_streams_under_asgi(
    user_token, asgi_fake_server, fake_llm
):
    async def scenario():
        client = async_sdk(asgi_fake_server, user_token)
        conv = await client.conversations.create(items=[{"role": "user", "content": "Hi"}])
        r = await client.responses.create(model="gpt-4o-mini", conversation=conv.id, input="A?")
        async with client.responses.stream(
            model="gpt-4o-mini", previous_response_id=r.id, input="B?"
        ) as stream:
            types = [event.type async for event in stream]
            final = await stream.get_final_response()
        page = await client.conversations.items.list(conv.id, order="asc")
        await client.close()
        return conv, r, types, final, [item.id for item in page.data]

    conv, r, types, final, item_ids = asyncio.run(scenario())
    assert r.output_text == final.output_text == DEFAULT_REPLY
    assert types == STREAM_EVENTS
    stored = Message.objects.filter(session_id=session_of(conv.id)).order_by("seq")
    assert item_ids == [ids.message_id(m.pk) for m in stored]
    assert [m.content for m in stored] == ["Hi", "A?", DEFAULT_REPLY, "B?", DEFAULT_REPLY]


# --- Conversations and items ---------------------------------------------------------------------
class TestConversations:
    def test_items_are_added_listed_paged_read_and_deleted(self, user_token, echo_server):
        client = sdk(echo_server, user_token)
        conv = client.conversations.create(
            items=[{"role": "user", "content": f"m{i}"} for i in range(3)], metadata={"k": "v"}
        )
        added = client.conversations.items.create(
            conv.id,
            items=[
                {"role": "assistant", "content": "a"},
                {"role": "developer", "content": "be nice"},
            ],
        )
        assert [item.role for item in added.data] == ["assistant", "system"]
        # Pages of two, oldest first, followed by the SDK's own auto-paging.
        listed = list(client.conversations.items.list(conv.id, limit=2, order="asc"))
        assert [item.content[0].text for item in listed] == ["m0", "m1", "m2", "a", "be nice"]
        newest_first = client.conversations.items.list(conv.id, limit=2)
        assert [i.content[0].text for i in newest_first.data] == ["be nice", "a"]
        assert newest_first.has_more
        one = client.conversations.items.retrieve(listed[1].id, conversation_id=conv.id)
        assert one.content[0].text == "m1"
        client.conversations.items.delete(listed[1].id, conversation_id=conv.id)
        assert rows(session_of(conv.id)) == [
            ("user", "m0"), ("user", "m2"), ("assistant", "a"), ("system", "be nice"),
        ]  # fmt: skip
        session = ChatSession.objects.get(pk=session_of(conv.id))
        assert session.message_count == 4
        assert client.conversations.retrieve(conv.id).metadata == {"k": "v"}
        updated = client.conversations.update(conv.id, metadata={"k": "w"})
        assert updated.metadata == {"k": "w"}
        client.conversations.delete(conv.id)
        assert not ChatSession.objects.filter(pk=session.pk).exists()
        with pytest.raises(openai.NotFoundError):
            client.conversations.retrieve(conv.id)

    def test_what_the_sdk_writes_is_what_the_api_shows_and_the_reverse(
        self, user, user_token, echo_server
    ):
        client = sdk(echo_server, user_token)
        conv = client.conversations.create(items=[{"role": "user", "content": "from the SDK"}])
        r = client.responses.create(model="gpt-4o-mini", conversation=conv.id, input="Q")
        session_id = session_of(conv.id)
        status, page = http(
            "GET", f"{echo_server}/api/v1/sessions/{session_id}/messages/", user_token
        )
        assert status == 200
        assert [(m["role"], m["content"]) for m in page["results"]] == [
            ("user", "from the SDK"), ("user", "Q"), ("assistant", "Echo: Q"),
        ]  # fmt: skip
        assert ids.message_id(page["results"][2]["id"]) == r.output[0].id
        assert ids.response_id(page["results"][1]["id"]) == r.id

        # The reverse: what /api/v1/ writes, the SDK reads.
        status, made = http("POST", f"{echo_server}/api/v1/sessions/", user_token, {"title": "t"})
        assert status == 201
        status, _ = http(
            "POST",
            f"{echo_server}/api/v1/sessions/{made['id']}/messages/",
            user_token,
            {"role": "user", "content": "from the API"},
        )
        assert status == 201
        conv_id = ids.conversation_id(ChatSession.objects.get(pk=made["id"]).pk)
        items = client.conversations.items.list(conv_id).data
        assert [i.content[0].text for i in items] == ["from the API"]
        assert client.responses.create(model="gpt-4o-mini", conversation=conv_id).output_text == (
            "Echo: from the API"
        )

    def test_the_admin_and_exports_show_what_the_sdk_wrote(
        self, user_token, echo_server, admin_client
    ):
        client = sdk(echo_server, user_token)
        conv = client.conversations.create(items=[{"role": "user", "content": "seen by support"}])
        r = client.responses.create(model="gpt-4o-mini", conversation=conv.id, input="and exported")
        page = admin_client.get(f"/admin/conversations/chatsession/{session_of(conv.id)}/change/")
        assert page.status_code == 200
        assert "seen by support" in page.content.decode()
        out = io.StringIO()
        call_command("export_sessions", "--session", str(session_of(conv.id)), stdout=out)
        [exported] = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [(m["role"], m["content"]) for m in exported["messages"]] == [
            ("user", "seen by support"), ("user", "and exported"), ("assistant", r.output_text),
        ]  # fmt: skip

    def test_another_users_conversation_response_and_item_are_404(self, user_token, echo_server):
        mine = sdk(echo_server, user_token)
        conv = mine.conversations.create(items=[{"role": "user", "content": "private"}])
        r = mine.responses.create(model="gpt-4o-mini", conversation=conv.id, input="x")
        item = mine.conversations.items.list(conv.id).data[0]
        theirs = sdk(echo_server, api_key_for(UserFactory()))
        for call in (
            lambda: theirs.conversations.retrieve(conv.id),
            lambda: theirs.conversations.items.list(conv.id),
            lambda: theirs.conversations.items.retrieve(item.id, conversation_id=conv.id),
            lambda: theirs.conversations.delete(conv.id),
            lambda: theirs.responses.retrieve(r.id),
            lambda: theirs.responses.input_items.list(r.id),
            lambda: theirs.responses.delete(r.id),
            lambda: theirs.responses.create(model="gpt-4o-mini", conversation=conv.id, input="y"),
            lambda: theirs.responses.create(
                model="gpt-4o-mini", previous_response_id=r.id, input="y"
            ),
        ):
            with pytest.raises(openai.NotFoundError):
                call()
        assert len(rows(session_of(conv.id))) == 3


# --- Responses ------------------------------------------------------------------------------------
class TestResponses:
    def test_a_response_is_read_back_its_input_listed_and_deleted(
        self, user_token, fake_server, fake_llm
    ):
        client = sdk(fake_server, user_token)
        conv = client.conversations.create(
            items=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        )
        r = client.responses.create(
            model="gpt-4o-mini", conversation=conv.id, input="c", metadata={"tag": "t1"}
        )
        got = client.responses.retrieve(r.id)
        assert got.id == r.id
        assert got.output_text == DEFAULT_REPLY
        assert got.metadata == {"tag": "t1"}
        assert got.usage.total_tokens == r.usage.total_tokens
        inputs = list(client.responses.input_items.list(r.id, order="asc", limit=2))
        assert [i.content[0].text for i in inputs] == ["a", "b", "c"]
        client.responses.delete(r.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(r.id)
        # Only the reply went; the conversation keeps its input.
        assert rows(session_of(conv.id)) == [("user", "a"), ("assistant", "b"), ("user", "c")]

    def test_input_tokens_are_chatengines_count_of_what_would_be_sent(
        self, user_token, fake_server, fake_llm
    ):
        client = sdk(fake_server, user_token)
        conv = client.conversations.create(items=[{"role": "user", "content": "Hello there"}])
        counted = client.responses.input_tokens.count(model="gpt-4o-mini", conversation=conv.id)
        status, preview = http(
            "GET",
            f"{fake_server}/api/v1/sessions/{session_of(conv.id)}/context/?model=gpt-4o-mini",
            user_token,
        )
        assert status == 200
        assert counted.input_tokens == preview["tokens"]
        more = client.responses.input_tokens.count(
            model="gpt-4o-mini", conversation=conv.id, input="and this"
        )
        assert more.input_tokens > counted.input_tokens
        assert fake_llm.requests == []  # counted, never sent
        assert len(rows(session_of(conv.id))) == 1  # nothing stored

    def test_continuing_a_response_that_is_not_the_newest_is_a_409_not_retried(
        self, user_token, echo_server
    ):
        client = sdk(echo_server, user_token, max_retries=2)
        first = client.responses.create(model="gpt-4o-mini", input="1")
        client.responses.create(model="gpt-4o-mini", previous_response_id=first.id, input="2")
        with pytest.raises(openai.ConflictError) as raised:
            client.responses.create(model="gpt-4o-mini", previous_response_id=first.id, input="3")
        assert raised.value.body["param"] == "previous_response_id"
        assert raised.value.response.headers["x-should-retry"] == "false"
        assert len(rows(session_of(first.conversation.id))) == 4  # nothing of the third

    @pytest.mark.parametrize("server", ["fake_server", "asgi_fake_server"])
    def test_a_client_leaving_mid_stream_keeps_the_partial_reply_as_interrupted(
        self, request, user_token, server, fake_llm
    ):
        fake_llm.chunk_delay_ms = 300
        client = sdk(request.getfixturevalue(server), user_token)
        conv = client.conversations.create()
        stream = client.responses.create(
            model="gpt-4o-mini", conversation=conv.id, input="long", stream=True
        )
        for event in stream:
            if event.type == "response.output_text.delta":
                break
        stream.close()
        session_id = session_of(conv.id)

        def interrupted() -> bool:
            return Message.objects.filter(
                session_id=session_id, role="assistant", finish_reason="interrupted"
            ).exists()

        wait_until(interrupted, timeout=20, what="the partial reply to be stored")
        partial = Message.objects.get(session_id=session_id, role="assistant")
        assert DEFAULT_REPLY.startswith(partial.content)
        assert partial.content != DEFAULT_REPLY
        assert client.responses.retrieve(ids.response_id(
            Message.objects.get(session_id=session_id, role="user").pk
        )).status == "incomplete"  # fmt: skip

    def test_an_llm_failure_mid_stream_ends_in_response_failed_and_an_sdk_error(
        self, user_token, fake_server, fake_llm
    ):
        client = sdk(fake_server, user_token)
        conv = client.conversations.create()
        fake_llm.fail_next("close_mid_stream")
        seen = []
        stream = client.responses.create(
            model="gpt-4o-mini", conversation=conv.id, input="hi", stream=True
        )
        with pytest.raises(openai.APIError) as raised:
            seen.extend(event.type for event in stream)
        assert seen[-1] == "response.failed"
        assert "response.completed" not in seen
        assert raised.value.body["code"] == "llm_upstream_error"
        assert [r for r, _ in rows(session_of(conv.id))] == ["user", "assistant"]


# --- Idempotency ----------------------------------------------------------------------------------
class TestIdempotency:
    def test_the_sdks_automatic_retry_with_a_key_stores_the_user_message_once(
        self, user_token, fake_server, fake_llm
    ):
        client = sdk(fake_server, user_token, max_retries=2)
        conv = client.conversations.create()
        fake_llm.fail_next("server_error")  # our 502: the SDK retries it, with the same key
        r = client.responses.create(
            model="gpt-4o-mini",
            conversation=conv.id,
            input="once",
            extra_headers={"Idempotency-Key": "sdk-retry-1"},
        )
        assert r.output_text == DEFAULT_REPLY
        assert len(reply_requests(fake_llm)) == 2  # the failed call and the retry
        assert rows(session_of(conv.id)) == [("user", "once"), ("assistant", DEFAULT_REPLY)]
        # Sent again with the key: the same response, replayed, nothing new stored.
        again = client.responses.with_raw_response.create(
            model="gpt-4o-mini",
            conversation=conv.id,
            input="once",
            extra_headers={"Idempotency-Key": "sdk-retry-1"},
        )
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.parse().id == r.id
        assert len(rows(session_of(conv.id))) == 2

    def test_the_sdks_own_retry_key_header_makes_a_retried_new_conversation_stored_once(
        self, user_token, fake_server, fake_llm
    ):
        # The SDK can send its own per-request key (reused on its retries) once told the
        # header's name; the stock client sends none.
        client = sdk(fake_server, user_token, max_retries=2)
        client._idempotency_header = "Idempotency-Key"
        fake_llm.fail_next("server_error")
        r = client.responses.create(model="gpt-4o-mini", input=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "new"},
        ])  # fmt: skip
        assert r.output_text == DEFAULT_REPLY
        assert ChatSession.objects.count() == 1
        assert rows(session_of(r.conversation.id)) == [
            ("system", "Be brief."), ("user", "new"), ("assistant", DEFAULT_REPLY),
        ]  # fmt: skip
