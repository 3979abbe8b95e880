"""The OpenAI-compatible facade replies through llm/services: its calls are accounted and its
replies refused past the monthly quota, stored or not (issue 19)."""

import openai
import pytest

from accounting.models import DailyUsage, SessionUsage, UsageRecord
from conversations.models import Message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _echo_no_titles(settings):
    settings.LLM_PROVIDER = "echo"
    settings.CHATENGINE_AUTO_TITLE = False


def test_a_stored_response_is_accounted_on_its_conversation(inprocess_sdk, user):
    conv = inprocess_sdk.conversations.create()
    response = inprocess_sdk.responses.create(
        model="gpt-4o-mini", conversation=conv.id, input="hello"
    )
    reply = Message.objects.get(role="assistant")
    record = UsageRecord.objects.get()
    assert (record.session_id, record.message_id) == (reply.session_id, reply.pk)
    assert record.input_tokens == response.usage.input_tokens == reply.usage["prompt_tokens"]
    assert SessionUsage.objects.get(session_id=reply.session_id).calls == 1


def test_a_response_stored_nowhere_still_counts_on_the_user(inprocess_sdk, user):
    response = inprocess_sdk.responses.create(model="gpt-4o-mini", input="alone", store=False)
    record = UsageRecord.objects.get()
    assert record.session_id is None
    assert record.message_id is None
    assert record.output_tokens == response.usage.output_tokens > 0
    assert not SessionUsage.objects.exists()
    assert DailyUsage.objects.get(user=user).calls == 1


@pytest.mark.parametrize("store", [True, False])
def test_the_quota_refuses_facade_replies_too(inprocess_sdk, user, settings, store):
    settings.CHATENGINE_MONTHLY_TOKEN_QUOTA = 1
    inprocess_sdk.responses.create(
        model="gpt-4o-mini", input="first", store=store
    )  # under the quota
    with pytest.raises(openai.RateLimitError) as caught:
        inprocess_sdk.responses.create(model="gpt-4o-mini", input="second", store=store)
    assert caught.value.status_code == 429
    assert UsageRecord.objects.count() == 1
