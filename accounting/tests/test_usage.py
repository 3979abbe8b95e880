"""Usage and cost: the ledger, the totals kept with each reply, the report, the quota, the admin."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import close_old_connections, connection
from django.db.models import Sum
from django.utils import timezone

from accounting import prices, selectors
from accounting.models import DailyUsage, SessionUsage, UsageRecord
from conversations.models import ChatSession, Message
from conversations.tests.factories import ChatSessionFactory, MessageFactory, UserFactory
from llm import services as llm_services

USAGE = "/api/v1/usage/"
ECHO_PRICE = (Decimal("1.5"), Decimal("6"))  # per million tokens


@pytest.fixture(autouse=True)
def _echo_priced_no_titles(settings):
    settings.LLM_PROVIDER = "echo"
    settings.LLM_PRICES = {"echo": ECHO_PRICE}
    settings.CHATENGINE_AUTO_TITLE = False


def reply_url(session):
    return f"/api/v1/sessions/{session.pk}/reply/"


def expected_cost(usage):
    return (
        usage["prompt_tokens"] * ECHO_PRICE[0] + usage["completion_tokens"] * ECHO_PRICE[1]
    ) / Decimal(1_000_000)


# --- Prices -----------------------------------------------------------------------------------
def test_price_matches_exact_names_and_dated_snapshots_only(settings):
    settings.LLM_PRICES = {
        "gpt-4o": (Decimal("2.5"), Decimal("10")),
        "gpt-4o-mini": (Decimal("0.15"), Decimal("0.6")),
    }
    assert prices.price_for("gpt-4o") == (Decimal("2.5"), Decimal("10"))
    assert prices.price_for("gpt-4o-mini-2024-07-18") == (Decimal("0.15"), Decimal("0.6"))
    assert prices.price_for("gpt-4o-2024-08-06") == (Decimal("2.5"), Decimal("10"))
    # Never a guess: a longer name is another model, an unknown one has no price.
    assert prices.price_for("gpt-4o-audio-preview") is None
    assert prices.price_for("llama3") is None
    assert prices.cost_of(model="llama3", input_tokens=10, output_tokens=10) is None
    assert prices.cost_of(model="gpt-4o", input_tokens=1_000_000, output_tokens=500_000) == Decimal(
        "7.5"
    )


def test_price_table_reads_the_environment(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from chatengine.settings import _env_model_map, _price

    monkeypatch.setenv("LLM_PRICES", "m1=0.15/0.60, m2=2/8")
    assert _env_model_map("LLM_PRICES", _price) == {
        "m1": (Decimal("0.15"), Decimal("0.60")),
        "m2": (Decimal("2"), Decimal("8")),
    }
    for bad in ["m1=0.15", "m1=a/b", "m1=-1/2", "m1=1/2/3"]:
        monkeypatch.setenv("LLM_PRICES", bad)
        with pytest.raises(ImproperlyConfigured):
            _env_model_map("LLM_PRICES", _price)


# --- Recording with the reply -----------------------------------------------------------------
@pytest.mark.django_db
def test_reply_records_usage_cost_and_totals(auth_client, user):
    session = ChatSessionFactory(user=user)
    response = auth_client.post(reply_url(session), {"content": "hello there"}, format="json")
    assert response.status_code == 201, response.content
    usage = response.json()["message"]["usage"]
    cost = expected_cost(usage)

    (record,) = UsageRecord.objects.all()
    assert record.kind == "reply"
    assert record.model == "echo"
    assert record.message_id == response.json()["message"]["id"]
    assert (record.input_tokens, record.output_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert record.cost == cost

    totals = SessionUsage.objects.get(session=session)
    assert (totals.calls, totals.input_tokens, totals.output_tokens, totals.cost) == (
        1,
        usage["prompt_tokens"],
        usage["completion_tokens"],
        cost,
    )
    day = DailyUsage.objects.get(user=user)
    assert day.day == timezone.now().astimezone(UTC).date()
    assert (day.calls, day.total_tokens, day.cost) == (1, usage["total_tokens"], cost)


@pytest.mark.django_db
def test_unpriced_model_has_no_cost_never_a_guess(auth_client, user, settings):
    settings.LLM_PRICES = {}
    session = ChatSessionFactory(user=user)
    auth_client.post(reply_url(session), {"content": "hi"}, format="json")
    assert UsageRecord.objects.get().cost is None
    day = DailyUsage.objects.get(user=user)
    assert (day.cost, day.unpriced_calls) == (Decimal(0), 1)


@pytest.mark.django_db
def test_streamed_reply_records_usage_too(auth_client, user):
    session = ChatSessionFactory(user=user)
    response = auth_client.post(
        f"/api/v1/sessions/{session.pk}/reply/stream/", {"content": "stream me"}, format="json"
    )
    b"".join(response.streaming_content)
    reply = Message.objects.get(session=session, role="assistant")
    record = UsageRecord.objects.get()
    assert record.message_id == reply.pk
    assert record.input_tokens == reply.usage["prompt_tokens"]
    assert (
        SessionUsage.objects.get(session=session).output_tokens == reply.usage["completion_tokens"]
    )


@pytest.mark.django_db
def test_openai_reply_usage_is_recorded_from_the_provider(auth_client, user, fake_openai, settings):
    settings.LLM_PRICES = {"gpt-4o-mini": (Decimal("0.15"), Decimal("0.6"))}
    session = ChatSessionFactory(user=user, model="gpt-4o-mini")
    response = auth_client.post(reply_url(session), {"content": "hi"}, format="json")
    assert response.status_code == 201, response.content
    usage = response.json()["message"]["usage"]
    record = UsageRecord.objects.get()
    assert record.input_tokens == usage["prompt_tokens"] > 0
    assert record.cost == (
        usage["prompt_tokens"] * Decimal("0.15") + usage["completion_tokens"] * Decimal("0.6")
    ) / Decimal(1_000_000)


@pytest.mark.django_db
def test_usage_survives_deleting_the_session(auth_client, user):
    session = ChatSessionFactory(user=user)
    auth_client.post(reply_url(session), {"content": "hi"}, format="json")
    assert auth_client.delete(f"/api/v1/sessions/{session.pk}/").status_code == 204
    assert not SessionUsage.objects.exists()  # the session's own totals go with it
    assert UsageRecord.objects.count() == 1  # the ledger and the month's count stay
    assert DailyUsage.objects.get(user=user).calls == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_usage_totals_equal_the_sum_of_the_messages_usage_under_concurrent_replies(settings):
    """12 threads, each on its own PostgreSQL connection, reply at once in 3 sessions of one
    user: the session and day totals are exactly the sum of the stored replies' usage."""
    user = UserFactory()
    sessions = [ChatSessionFactory(user=user) for _ in range(3)]
    workers = 12
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def reply(i: int) -> None:
        try:
            session = ChatSession.objects.get(pk=sessions[i % 3].pk)
            barrier.wait(timeout=10)
            llm_services.reply(session=session, content=f"question {i} " + "word " * i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=reply, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []

    replies = list(Message.objects.filter(session__user=user, role="assistant"))
    assert len(replies) == workers
    for session in sessions:
        mine = [m.usage for m in replies if m.session_id == session.pk]
        totals = SessionUsage.objects.get(session=session)
        assert totals.calls == len(mine)
        assert totals.input_tokens == sum(u["prompt_tokens"] for u in mine)
        assert totals.output_tokens == sum(u["completion_tokens"] for u in mine)
        assert totals.cost == sum(expected_cost(u) for u in mine)
    day = DailyUsage.objects.get(user=user)
    assert day.calls == workers
    assert day.total_tokens == sum(m.usage["total_tokens"] for m in replies)
    assert day.cost == UsageRecord.objects.aggregate(total=Sum("cost"))["total"]


# --- The report -------------------------------------------------------------------------------
def _record(user, session, *, model="echo", tokens=(10, 5), at=None, cost=None):
    from accounting.services import record_usage
    from llm.types import Usage

    return record_usage(
        user_id=user.pk,
        session_id=session.pk,
        kind="reply",
        model=model,
        usage=Usage(tokens[0], tokens[1], sum(tokens)),
        at=at,
    )


@pytest.mark.django_db
def test_usage_report_groups_by_day_model_and_session(auth_client, user):
    a, b = ChatSessionFactory(user=user), ChatSessionFactory(user=user)
    now = timezone.now()
    yesterday = now - timedelta(days=1)
    _record(user, a, tokens=(100, 10), at=yesterday)
    _record(user, a, model="other", tokens=(200, 20), at=now)
    _record(user, b, tokens=(300, 30), at=now)
    since = (now - timedelta(days=2)).isoformat()

    by_day = auth_client.get(USAGE, {"since": since, "group_by": "day"}).json()
    assert [(g["key"], g["input_tokens"]) for g in by_day["results"]] == [
        (yesterday.astimezone(UTC).date().isoformat(), 100),
        (now.astimezone(UTC).date().isoformat(), 500),
    ]
    assert by_day["totals"]["total_tokens"] == 660
    assert by_day["totals"]["calls"] == 3
    # echo is priced, "other" is not: its call adds no cost and is counted apart.
    assert by_day["totals"]["unpriced_calls"] == 1
    assert Decimal(by_day["totals"]["cost"]) == (
        400 * ECHO_PRICE[0] + 40 * ECHO_PRICE[1]
    ) / Decimal(1_000_000)

    by_model = auth_client.get(USAGE, {"since": since, "group_by": "model"}).json()
    assert {g["key"]: g["output_tokens"] for g in by_model["results"]} == {"echo": 40, "other": 20}

    by_session = auth_client.get(USAGE, {"since": since, "group_by": "session"}).json()
    assert {g["key"]: g["calls"] for g in by_session["results"]} == {str(a.pk): 2, str(b.pk): 1}


@pytest.mark.django_db
def test_usage_report_range_is_since_inclusive_until_exclusive(auth_client, user):
    session = ChatSessionFactory(user=user)
    moment = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
    _record(user, session, at=moment)
    _record(user, session, at=moment + timedelta(hours=1))
    body = auth_client.get(
        USAGE, {"since": moment.isoformat(), "until": (moment + timedelta(hours=1)).isoformat()}
    ).json()
    assert body["totals"]["calls"] == 1


@pytest.mark.django_db
def test_usage_report_defaults_to_this_month_and_shows_the_quota(auth_client, user, settings):
    settings.CHATENGINE_MONTHLY_TOKEN_QUOTA = 1000
    session = ChatSessionFactory(user=user)
    start, next_month = selectors.month_bounds(timezone.now())
    _record(user, session, tokens=(40, 2), at=start - timedelta(seconds=1))  # last month
    _record(user, session, tokens=(30, 3))
    body = auth_client.get(USAGE).json()
    assert body["group_by"] == "day"
    assert body["since"] == start.isoformat().replace("+00:00", "Z")
    assert body["totals"]["total_tokens"] == 33
    assert body["quota"] == {
        "limit": 1000,
        "used": 33,
        "resets_at": next_month.isoformat().replace("+00:00", "Z"),
    }


@pytest.mark.django_db
def test_usage_report_never_shows_another_users_calls(auth_client, user, other_user):
    _record(other_user, ChatSessionFactory(user=other_user), tokens=(999, 999))
    body = auth_client.get(USAGE, {"group_by": "session"}).json()
    assert body["results"] == []
    assert body["totals"]["calls"] == 0
    assert body["quota"]["used"] == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        {"group_by": "week"},
        {"since": "yesterday"},
        {"until": "2026-13-01T00:00:00Z"},
    ],
)
def test_usage_report_rejects_bad_parameters(auth_client, query):
    response = auth_client.get(USAGE, query)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "validation_error"


# --- The quota --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_quota_refuses_a_reply_at_the_limit_with_the_reset_time(auth_client, user, settings):
    settings.CHATENGINE_MONTHLY_TOKEN_QUOTA = 50
    session = ChatSessionFactory(user=user)
    MessageFactory(session=session, content="earlier")
    _record(user, session, tokens=(40, 10))  # exactly the limit
    before = Message.objects.filter(session=session).count()

    response = auth_client.post(reply_url(session), {"content": "one more?"}, format="json")

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["type"] == "quota_exceeded"
    _, next_month = selectors.month_bounds(timezone.now())
    assert error["details"] == {"limit": 50, "used": 50, "resets_at": next_month.isoformat()}
    assert 0 < int(response["Retry-After"]) <= 31 * 86400
    assert Message.objects.filter(session=session).count() == before  # nothing stored

    streamed = auth_client.post(
        f"/api/v1/sessions/{session.pk}/reply/stream/", {"content": "x"}, format="json"
    )
    assert streamed.status_code == 429
    assert streamed.json()["error"]["type"] == "quota_exceeded"

    # Appends still work.
    appended = auth_client.post(
        f"/api/v1/sessions/{session.pk}/messages/",
        {"role": "user", "content": "note"},
        format="json",
    )
    assert appended.status_code == 201


@pytest.mark.django_db
def test_quota_allows_replies_below_the_limit_and_counts_only_this_month(
    auth_client, user, settings
):
    settings.CHATENGINE_MONTHLY_TOKEN_QUOTA = 50
    session = ChatSessionFactory(user=user)
    start, _ = selectors.month_bounds(timezone.now())
    _record(user, session, tokens=(500, 500), at=start - timedelta(days=1))  # last month
    _record(user, session, tokens=(40, 9))  # one token under
    response = auth_client.post(reply_url(session), {"content": "hi"}, format="json")
    assert response.status_code == 201


@pytest.mark.django_db
def test_no_quota_by_default(auth_client, user):
    session = ChatSessionFactory(user=user)
    _record(user, session, tokens=(10**9, 10**9))
    assert auth_client.post(reply_url(session), {"content": "hi"}, format="json").status_code == 201


def test_month_bounds_roll_over_the_year():
    start, end = selectors.month_bounds(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


# --- The admin --------------------------------------------------------------------------------
@pytest.fixture
def staff_client(client, db):
    admin = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin)
    return client


@pytest.mark.django_db
def test_admin_lists_totals_per_user_and_day_and_exports_csv(staff_client, user, other_user):
    _record(user, ChatSessionFactory(user=user), tokens=(100, 10))
    _record(user, ChatSessionFactory(user=user), tokens=(1, 1))
    _record(other_user, ChatSessionFactory(user=other_user), tokens=(7, 3))

    page = staff_client.get("/admin/accounting/dailyusage/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Totals of the selected rows" in html
    assert user.username in html
    assert other_user.username in html
    assert "112" in html  # the user's day: 101 + 11 tokens, on one row

    rows = DailyUsage.objects.order_by("user__username")
    response = staff_client.post(
        "/admin/accounting/dailyusage/",
        {"action": "export_csv", "_selected_action": [r.pk for r in rows]},
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[0] == "user,day,calls,input_tokens,output_tokens,total_tokens,cost,unpriced_calls"
    by_user = {line.split(",")[0]: line.split(",") for line in lines[1:]}
    assert by_user[user.username][2:6] == ["2", "101", "11", "112"]
    assert by_user[other_user.username][2:6] == ["1", "7", "3", "10"]


@pytest.mark.django_db
def test_admin_usage_is_read_only(staff_client, user):
    _record(user, ChatSessionFactory(user=user))
    day = DailyUsage.objects.get()
    assert staff_client.get("/admin/accounting/dailyusage/add/").status_code == 403
    assert staff_client.post(f"/admin/accounting/dailyusage/{day.pk}/delete/").status_code == 403


@pytest.mark.django_db
def test_usage_report_of_a_range_ending_before_it_starts_is_empty(auth_client, user):
    _record(user, ChatSessionFactory(user=user))
    body = auth_client.get(
        USAGE, {"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}
    ).json()
    assert body["results"] == []
    assert body["totals"]["calls"] == 0


def test_a_regenerated_answer_is_accounted_like_a_reply(auth_client, user):
    session = ChatSessionFactory(user=user)
    auth_client.post(reply_url(session), {"content": "hello there"}, format="json")
    response = auth_client.post(
        f"/api/v1/sessions/{session.pk}/messages/2/regenerate/", {}, format="json"
    )
    assert response.status_code == 201, response.content
    message = response.json()["message"]

    records = UsageRecord.objects.order_by("id")
    assert [(r.kind, r.message_id) for r in records] == [
        ("reply", message["id"]),
        ("reply", message["id"]),
    ]
    assert SessionUsage.objects.get(session=session).calls == 2
    assert DailyUsage.objects.get(user=user).calls == 2
