"""The facade's rules, through the stock SDK on this process's WSGI app (settings per test):
errors in OpenAI's shape as the SDK's exception classes, what is refused, what `store`,
`instructions`, `truncation`, `tools` and the sampling options do."""

import json

import openai
import pytest

from conversations import services as conversation_services
from conversations.models import ChatSession, Message
from llm.tests.fake_openai import DEFAULT_REPLY
from openai_api import ids

pytestmark = pytest.mark.django_db


def rows(conversation_id: str) -> list[tuple[str, str]]:
    return list(
        Message.objects.filter(session_id=ids.parse_conversation_id(conversation_id))
        .order_by("seq")
        .values_list("role", "content")
    )


def openai_error(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# --- Errors ----------------------------------------------------------------------------------
class TestErrorsArriveAsTheSDKsExceptions:
    def test_400_bad_request(self, inprocess_sdk):
        with pytest.raises(openai.BadRequestError) as raised:
            inprocess_sdk.responses.create(model="gpt-4o-mini", input="x", temperature=7)
        error = openai_error(raised.value)
        assert (error["type"], error["param"]) == ("invalid_request_error", "temperature")

    def test_401_authentication(self, inprocess_sdk):
        inprocess_sdk.api_key = "not-a-token"
        with pytest.raises(openai.AuthenticationError) as raised:
            inprocess_sdk.conversations.create()
        assert openai_error(raised.value)["type"] == "authentication_error"

    def test_404_not_found_also_for_unknown_paths(self, inprocess_sdk):
        with pytest.raises(openai.NotFoundError) as raised:
            inprocess_sdk.conversations.retrieve("conv_" + "0" * 32)
        assert openai_error(raised.value)["code"] == "not_found"
        with pytest.raises(openai.NotFoundError) as raised:
            inprocess_sdk.models.list()  # /v1/models: not served
        assert openai_error(raised.value)["message"] == "Unknown path: /v1/models."

    def test_409_conflict_is_not_retried(self, user, inprocess_sdk):
        conv = inprocess_sdk.conversations.create()
        session = ChatSession.objects.get(pk=ids.parse_conversation_id(conv.id))
        conversation_services.update_session(session=session, archived=True)
        with pytest.raises(openai.ConflictError) as raised:
            inprocess_sdk.responses.create(model="gpt-4o-mini", conversation=conv.id, input="x")
        assert raised.value.response.headers["x-should-retry"] == "false"
        assert openai_error(raised.value)["code"] == "conflict"

    def test_422_unprocessable_when_the_input_cannot_fit(self, inprocess_sdk):
        with pytest.raises(openai.UnprocessableEntityError) as raised:
            inprocess_sdk.responses.create(
                model="gpt-4o-mini", input="x", max_output_tokens=900_000
            )
        assert openai_error(raised.value)["code"] == "context_overflow"
        assert not Message.objects.exists()
        assert not ChatSession.objects.exists()  # not even the new conversation

    def test_429_from_the_provider_with_retry_after(self, inprocess_sdk, fake_openai):
        fake_openai.fail_next("rate_limit")
        with pytest.raises(openai.RateLimitError) as raised:
            inprocess_sdk.responses.create(model="gpt-4o-mini", input="x")
        assert raised.value.response.headers["Retry-After"] == "7"
        assert openai_error(raised.value)["type"] == "rate_limit_error"

    def test_429_from_chatengines_own_rate_limit_with_retry_after(self, settings, inprocess_sdk):
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {
                **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                "replies": "1/min",
            },
        }
        inprocess_sdk.responses.create(model="gpt-4o-mini", input="x")
        with pytest.raises(openai.RateLimitError) as raised:
            inprocess_sdk.responses.create(model="gpt-4o-mini", input="y")
        assert int(raised.value.response.headers["Retry-After"]) > 0

    def test_500_a_bug_never_leaks(self, settings, inprocess_sdk):
        settings.LLM_PROVIDER = "openai_api.tests.providers.FailingProvider"
        with pytest.raises(openai.InternalServerError) as raised:
            inprocess_sdk.responses.create(model="gpt-4o-mini", input="bug")
        assert raised.value.status_code == 500
        error = openai_error(raised.value)
        assert (error["type"], error["code"]) == ("server_error", "internal_error")
        assert "bug in a provider" not in raised.value.response.text

    def test_502_the_provider_failed(self, inprocess_sdk, fake_openai):
        fake_openai.fail_next("server_error")
        with pytest.raises(openai.InternalServerError) as raised:
            inprocess_sdk.responses.create(model="gpt-4o-mini", input="x")
        assert raised.value.status_code == 502
        assert openai_error(raised.value)["code"] == "llm_upstream_error"

    def test_503_a_dependency_is_unavailable(self, settings, inprocess_sdk):
        settings.LLM_PROVIDER = "openai_api.tests.providers.FailingProvider"
        with pytest.raises(openai.InternalServerError) as raised:
            inprocess_sdk.responses.create(model="gpt-4o-mini", input="unavailable")
        assert raised.value.status_code == 503
        assert openai_error(raised.value)["code"] == "service_unavailable"

    def test_504_the_provider_timed_out(self, settings, inprocess_sdk, fake_openai):
        settings.LLM_TIMEOUT_S = 0.3
        fake_openai.fail_next("hang")
        with pytest.raises(openai.InternalServerError) as raised:
            inprocess_sdk.responses.create(model="gpt-4o-mini", input="x")
        assert raised.value.status_code == 504
        assert openai_error(raised.value)["code"] == "llm_timeout"

    def test_the_api_v1_envelope_is_unchanged(self, auth_client):
        body = auth_client.get("/api/v1/sessions/nope/").json()
        assert set(body["error"]) == {"type", "message", "details", "request_id"}


# --- What chatengine cannot honour: a 400 naming the parameter ------------------------------
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"background": True}, "background"),
        ({"reasoning": {"effort": "low"}}, "reasoning"),
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"text": {"format": {"type": "json_object"}}}, "text"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"service_tier": "flex"}, "service_tier"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input.0.content.0.type",
        ),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0.type"),
        ({"input": [{"role": "critic", "content": "x"}]}, "input.0.role"),
        ({"conversation": "conv_" + "0" * 32, "previous_response_id": "resp_1"}, None),
        ({"tools": [{"type": "function", "name": "f"}], "stream": True}, "tools"),
        ({"no_such_field": 1}, "no_such_field"),
    ],
)
def test_what_chatengine_cannot_honour_is_a_400_naming_the_parameter(inprocess_sdk, body, param):
    body = {"model": "gpt-4o-mini", "input": "x", **body}
    with pytest.raises(openai.BadRequestError) as raised:
        inprocess_sdk.post("/responses", body=body, cast_to=object)
    error = openai_error(raised.value)
    if param is None:  # both: named after the second
        param = "previous_response_id"
    assert error["param"] == param, error
    assert not Message.objects.exists()


def test_harmless_defaults_of_unsupported_parameters_are_accepted(inprocess_sdk):
    r = inprocess_sdk.responses.create(
        model="gpt-4o-mini",
        input="x",
        background=False,
        parallel_tool_calls=True,
        tool_choice="auto",
        text={"format": {"type": "text"}},
    )
    assert r.output_text == "Echo: x"


# --- store, instructions, truncation ----------------------------------------------------------
def test_store_false_writes_nothing_and_cannot_be_read_back(inprocess_sdk):
    conv = inprocess_sdk.conversations.create(items=[{"role": "user", "content": "history"}])
    before = (ChatSession.objects.count(), Message.objects.count())
    r = inprocess_sdk.responses.create(
        model="gpt-4o-mini", conversation=conv.id, input="now", store=False
    )
    assert r.output_text == "Echo: now"
    assert r.store is False
    standalone = inprocess_sdk.responses.create(model="gpt-4o-mini", input="alone", store=False)
    assert standalone.output_text == "Echo: alone"
    assert (ChatSession.objects.count(), Message.objects.count()) == before
    with pytest.raises(openai.NotFoundError):
        inprocess_sdk.responses.retrieve(r.id)


def test_store_false_sends_the_conversations_history_with_the_input(inprocess_sdk, fake_openai):
    conv = inprocess_sdk.conversations.create(items=[{"role": "user", "content": "history"}])
    inprocess_sdk.responses.create(
        model="gpt-4o-mini", conversation=conv.id, input="now", store=False
    )
    sent = [(m["role"], m["content"]) for m in fake_openai.requests[-1]["messages"]]
    assert sent == [("user", "history"), ("user", "now")]
    assert rows(conv.id) == [("user", "history")]


def test_instructions_apply_to_one_call_and_are_not_carried_over(inprocess_sdk, fake_openai):
    first = inprocess_sdk.responses.create(model="gpt-4o-mini", input="a", instructions="Be terse.")
    inprocess_sdk.responses.create(model="gpt-4o-mini", input="b", previous_response_id=first.id)
    systems = [
        [m["content"] for m in request["messages"] if m["role"] == "system"]
        for request in fake_openai.requests
    ]
    assert systems == [["Be terse."], []]
    assert first.instructions == "Be terse."
    assert ("system", "Be terse.") not in rows(first.conversation.id)
    assert ChatSession.objects.get().system_prompt == ""


def test_truncation_disabled_refuses_a_history_that_does_not_fit(settings, inprocess_sdk):
    settings.LLM_MODEL_CONTEXT_WINDOWS = {"tiny": 160}
    settings.LLM_ALLOWED_MODELS = ["tiny"]
    conv = inprocess_sdk.conversations.create(
        items=[{"role": "user", "content": f"message number {i} " * 5} for i in range(8)]
    )
    with pytest.raises(openai.BadRequestError) as raised:
        inprocess_sdk.responses.create(
            model="tiny", conversation=conv.id, input="x", truncation="disabled",
            max_output_tokens=16,
        )  # fmt: skip
    assert openai_error(raised.value)["param"] == "truncation"
    assert len(rows(conv.id)) == 8  # nothing stored
    r = inprocess_sdk.responses.create(
        model="tiny", conversation=conv.id, input="x", truncation="auto", max_output_tokens=16
    )
    assert r.output_text == "Echo: x"
    assert len(rows(conv.id)) == 10


# --- Tools and sampling options: passed through to the model ------------------------------------
def test_function_tools_and_sampling_options_reach_the_model_and_calls_come_back(
    inprocess_sdk, fake_openai
):
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    fake_openai.reply_tool_calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'},
        }
    ]
    r = inprocess_sdk.responses.create(
        model="gpt-4o-mini", input="Weather in Lima?", tools=[tool], temperature=0.2, top_p=0.9
    )
    sent = fake_openai.requests[-1]
    assert (sent["temperature"], sent["top_p"]) == (0.2, 0.9)
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": tool["parameters"],
            },
        }
    ]
    [call] = r.output
    assert (call.type, call.call_id, call.name) == ("function_call", "call_1", "get_weather")
    assert json.loads(call.arguments) == {"city": "Lima"}

    fake_openai.reply_tool_calls = None
    final = inprocess_sdk.responses.create(
        model="gpt-4o-mini",
        previous_response_id=r.id,
        input=[{"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 24C"}],
        tools=[tool],
    )
    assert final.output_text == DEFAULT_REPLY
    sent = fake_openai.requests[-1]["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == "call_1"
    assert sent[-1] == {"role": "tool", "content": "Sunny, 24C", "tool_call_id": "call_1"}
    items = inprocess_sdk.conversations.items.list(r.conversation.id, order="asc").data
    assert [i.type for i in items] == [
        "message", "function_call", "function_call_output", "message",
    ]  # fmt: skip
    assert final.id == ids.response_id(ids.parse_item_id(items[2].id))


def test_input_items_with_function_calls_are_stored_as_the_model_would_send_them(inprocess_sdk):
    conv = inprocess_sdk.conversations.create(
        items=[
            {"role": "user", "content": "Two cities?"},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2", "output": "two"},
        ]
    )
    calls = Message.objects.get(role="assistant")
    assert [c["id"] for c in calls.tool_calls] == ["c1", "c2"]  # one turn, two calls
    items = inprocess_sdk.conversations.items.list(conv.id, order="asc").data
    assert [i.id for i in items] == [
        ids.message_id(Message.objects.get(role="user").pk),
        ids.function_call_id(calls.pk, 0),
        ids.function_call_id(calls.pk, 1),
        *[ids.function_call_output_id(m.pk) for m in Message.objects.filter(role="tool")],
    ]
    one = inprocess_sdk.conversations.items.retrieve(items[2].id, conversation_id=conv.id)
    assert one.call_id == "c2"


@pytest.mark.django_db(transaction=True)
def test_the_model_is_called_with_no_transaction_open(settings, inprocess_sdk):
    from llm.tests.test_services import RecordingProvider

    settings.LLM_PROVIDER = "llm.tests.test_services.RecordingProvider"
    RecordingProvider.calls.clear()
    conv = inprocess_sdk.conversations.create()
    inprocess_sdk.responses.create(model="gpt-4o-mini", conversation=conv.id, input=[
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "r"},
        {"role": "user", "content": "and now?"},
    ])  # fmt: skip
    inprocess_sdk.responses.create(model="gpt-4o-mini", input="new conversation")
    # Each reply's call, then each new conversation's automatic title (issue 19): all four
    # with no transaction open.
    assert RecordingProvider.calls == [False, False, False, False]


def test_store_false_sends_several_input_items_in_their_order(inprocess_sdk, fake_openai):
    inprocess_sdk.responses.create(
        model="gpt-4o-mini",
        store=False,
        input=[
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
    )
    sent = [(m["role"], m["content"]) for m in fake_openai.requests[-1]["messages"]]
    assert sent == [("user", "a"), ("assistant", "b"), ("user", "c")]
    assert not Message.objects.exists()


def test_a_response_may_name_only_an_allowed_model(inprocess_sdk):
    with pytest.raises(openai.BadRequestError) as raised:
        inprocess_sdk.responses.create(model="o1-pro-on-someone-elses-bill", input="x")
    assert openai_error(raised.value)["param"] == "model"
    assert not Message.objects.exists()
