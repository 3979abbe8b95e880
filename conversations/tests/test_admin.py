"""The support admin through Django's test client: as a superuser, as support staff who may
archive, and as view-only staff."""

import json
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from conversations import services
from conversations.models import ChatSession, Message
from conversations.tests.factories import ChatSessionFactory, UserFactory

pytestmark = pytest.mark.django_db

LIST_URL = reverse("admin:conversations_chatsession_changelist")
MESSAGE_LIST_URL = reverse("admin:conversations_message_changelist")


def change_url(session: ChatSession) -> str:
    return reverse("admin:conversations_chatsession_change", args=[session.pk])


def _staff(*codenames: str):
    user = UserFactory(is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def viewer_client(client):
    """Staff with only the view permissions (the read-only support role)."""
    client.force_login(_staff("view_chatsession", "view_message"))
    return client


@pytest.fixture
def support_client(client):
    """Staff who may also change sessions (archive), not a superuser."""
    client.force_login(_staff("view_chatsession", "change_chatsession", "view_message"))
    return client


def seed_history(session: ChatSession, count: int, *, prefix: str = "msg") -> None:
    """`count` alternating user/assistant messages, bulk-inserted (seq 1..count) for speed."""
    start = session.last_seq
    now = timezone.now()
    Message.objects.bulk_create(
        Message(
            session=session,
            seq=start + i,
            role="user" if i % 2 else "assistant",
            content=f"{prefix} {start + i}",
            token_count=3,
        )
        for i in range(1, count + 1)
    )
    session.last_seq = start + count
    session.message_count += count
    session.total_tokens += 3 * count
    session.last_message_at = now
    session.save()


def add_reply(session: ChatSession, content: str = "Here you go.", **fields) -> Message:
    defaults = {
        "token_count": 7,
        "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127},
        "finish_reason": "stop",
        "latency_ms": 812,
    }
    return services.append_message(
        session=session, role="assistant", content=content, **{**defaults, **fields}
    )


def listed_ids(response) -> list[str]:
    return [str(obj.pk) for obj in response.context["cl"].result_list]


# --- Session list -----------------------------------------------------------------------


def test_list_shows_sessions_most_recent_activity_first_and_empty_ones_last(admin_client):
    older = ChatSessionFactory(title="Older chat")
    newer = ChatSessionFactory(title="Newer chat")
    empty = ChatSessionFactory(title="Never used")
    services.append_message(session=older, role="user", content="hi", token_count=1)
    services.append_message(session=newer, role="user", content="hello", token_count=2)

    response = admin_client.get(LIST_URL)

    assert response.status_code == 200
    assert listed_ids(response) == [str(newer.pk), str(older.pk), str(empty.pk)]
    html = response.content.decode()
    assert "Newer chat" in html
    assert newer.user.email in html


def test_list_filters_by_archived_model_errors_and_last_activity(admin_client):
    archived = ChatSessionFactory(archived=True, model="gpt-4o")
    failed = ChatSessionFactory(model="gpt-4o-mini")
    add_reply(failed, content="partial", finish_reason="interrupted")
    fine = ChatSessionFactory(model="gpt-4o-mini")
    add_reply(fine)
    stale = ChatSessionFactory()
    seed_history(stale, 2)
    ChatSession.objects.filter(pk=stale.pk).update(
        last_message_at=timezone.now() - timedelta(days=40)
    )

    assert listed_ids(admin_client.get(LIST_URL, {"archived__exact": "1"})) == [str(archived.pk)]
    assert set(listed_ids(admin_client.get(LIST_URL, {"model": "gpt-4o-mini"}))) == {
        str(failed.pk),
        str(fine.pk),
    }
    assert listed_ids(admin_client.get(LIST_URL, {"has_errors": "yes"})) == [str(failed.pk)]
    assert str(failed.pk) not in listed_ids(admin_client.get(LIST_URL, {"has_errors": "no"}))
    # The value of the filter's own "Past 7 days" link: local midnight seven days ago.
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    week_ago = str(midnight - timedelta(days=7))
    recent = listed_ids(admin_client.get(LIST_URL, {"last_message_at__gte": week_ago}))
    assert str(stale.pk) not in recent
    assert str(fine.pk) in recent


def test_an_error_reply_from_the_user_role_does_not_count_as_a_failed_reply(admin_client):
    session = ChatSessionFactory()
    services.append_message(session=session, role="user", content="x", finish_reason="error")

    assert listed_ids(admin_client.get(LIST_URL, {"has_errors": "yes"})) == []


def test_search_finds_sessions_by_exact_id_title_username_and_email(admin_client):
    alice = UserFactory(username="alice", email="alice@corp.example")
    lisbon = ChatSessionFactory(user=alice, title="Trip to Lisbon")
    other = ChatSessionFactory(title="Budget review")

    def search(term):
        return listed_ids(admin_client.get(LIST_URL, {"q": term}))

    assert search(str(other.pk)) == [str(other.pk)]
    assert search(str(uuid.uuid4())) == []
    assert search("lisbon") == [str(lisbon.pk)]
    assert search("alice") == [str(lisbon.pk)]
    assert search("corp.example") == [str(lisbon.pk)]


def test_search_finds_sessions_by_a_phrase_in_any_message(admin_client):
    hit = ChatSessionFactory(title="Untitled")
    services.append_message(
        session=hit, role="user", content="My ORDER-4471 never arrived", token_count=5
    )
    miss = ChatSessionFactory()
    services.append_message(session=miss, role="user", content="order arrived", token_count=2)

    response = admin_client.get(LIST_URL, {"q": "order-4471 NEVER"})

    assert listed_ids(response) == [str(hit.pk)]


def test_search_shorter_than_three_characters_does_not_scan_message_content(admin_client):
    session = ChatSessionFactory(title="Something")
    services.append_message(session=session, role="user", content="ok go", token_count=1)

    assert listed_ids(admin_client.get(LIST_URL, {"q": "go"})) == []


@pytest.mark.postgres
def test_content_search_query_can_use_the_trigram_index():
    from conversations import selectors

    qs = ChatSession.objects.filter(pk__in=selectors.session_ids_with_content(phrase="refund"))
    with transaction.atomic(), connection.cursor() as cursor:
        # Tiny test tables make a sequential scan cheaper; forbid it to see the usable index.
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = qs.explain()

    assert "message_content_upper_trgm_idx" in plan


def test_list_runs_the_same_number_of_queries_for_3_and_30_sessions(admin_client):
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = admin_client.get(LIST_URL, {"q": "chat"})
        assert response.status_code == 200
        return len(ctx.captured_queries)

    for i in range(3):
        add_reply(ChatSessionFactory(title=f"chat {i}", model=f"m{i}"))
    small = count_queries()
    for i in range(27):
        session = ChatSessionFactory(title=f"chat more {i}", model=f"m{i}")
        add_reply(session, finish_reason="error" if i % 2 else "stop")
    large = count_queries()

    assert len(listed_ids(admin_client.get(LIST_URL, {"q": "chat"}))) == 30
    assert small == large
    assert large <= 12


# --- Session page and transcript --------------------------------------------------------


def test_transcript_shows_the_newest_hundred_messages_first_in_order(admin_client):
    session = ChatSessionFactory()
    seed_history(session, 250)

    response = admin_client.get(change_url(session))

    assert response.status_code == 200
    page = response.context["transcript"]
    assert (page.number, page.num_pages) == (1, 3)
    assert [m.seq for m in page.messages] == list(range(151, 251))
    html = response.content.decode()
    assert html.index('id="msg-151"') < html.index('id="msg-250"')
    assert 'id="msg-150"' not in html
    assert "transcript_page=2" in html


def test_transcript_pages_back_to_the_start_of_the_conversation(admin_client):
    session = ChatSessionFactory()
    seed_history(session, 250)

    middle = admin_client.get(change_url(session), {"transcript_page": 2}).context["transcript"]
    last = admin_client.get(change_url(session), {"transcript_page": 3}).context["transcript"]
    clamped = admin_client.get(change_url(session), {"transcript_page": 99}).context["transcript"]
    junk = admin_client.get(change_url(session), {"transcript_page": "x"}).context["transcript"]

    assert [m.seq for m in middle.messages] == list(range(51, 151))
    assert [m.seq for m in last.messages] == list(range(1, 51))
    assert clamped.number == 3
    assert junk.number == 1


def test_transcript_shows_reply_details_tool_calls_prompt_and_metadata(admin_client):
    session = ChatSessionFactory(
        system_prompt="You are terse.", metadata={"ticket": "SUP-12", "tier": "gold"}
    )
    services.append_message(session=session, role="user", content="Weather?", token_count=3)
    add_reply(
        session,
        content="",
        finish_reason="tool_calls",
        tool_calls=[
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Lisbon"}'},
            }
        ],
    )
    services.append_message(
        session=session, role="tool", content="18C", tool_call_id="call_1", token_count=2
    )
    add_reply(session, content="Sorry, I fail", finish_reason="error", latency_ms=30001)

    html = admin_client.get(change_url(session)).content.decode()

    assert "You are terse." in html
    assert "&quot;ticket&quot;: &quot;SUP-12&quot;" in html  # pretty JSON, escaped
    assert "model <code>gpt-4o-mini</code>" in html
    assert "usage 120 prompt + 7 completion = 127 tokens" in html
    assert "812 ms" in html
    assert "finish: tool_calls" in html
    assert "&quot;name&quot;: &quot;weather&quot;" in html
    assert "answers tool call <code>call_1</code>" in html
    assert "ce-failed" in html
    assert "30001 ms" in html


def test_transcript_shows_html_in_messages_escaped(admin_client):
    session = ChatSessionFactory(title="<i>title</i>", system_prompt="<b>prompt</b>")
    services.append_message(
        session=session,
        role="user",
        content="<script>alert('x')</script><img src=x onerror=alert(1)>",
        token_count=4,
    )

    html = admin_client.get(change_url(session)).content.decode()

    assert "<script>alert('x')</script>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "&lt;b&gt;prompt&lt;/b&gt;" in html
    list_html = admin_client.get(LIST_URL).content.decode()
    assert "<i>title</i>" not in list_html
    assert "&lt;i&gt;title&lt;/i&gt;" in list_html


def test_transcript_page_runs_the_same_number_of_queries_for_short_and_long_sessions(
    admin_client,
):
    short = ChatSessionFactory()
    seed_history(short, 5)
    long = ChatSessionFactory()
    seed_history(long, 400)

    counts = []
    for session in (short, long):
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(change_url(session)).status_code == 200
        counts.append(len(ctx.captured_queries))

    assert counts[0] == counts[1]
    assert counts[1] <= 8


# --- Actions ------------------------------------------------------------------------------


def _action(client, action: str, sessions):
    return client.post(
        LIST_URL,
        {"action": action, "_selected_action": [str(s.pk) for s in sessions]},
    )


def test_archive_and_unarchive_actions_flip_only_the_selected_sessions(support_client):
    chosen = [ChatSessionFactory(), ChatSessionFactory()]
    untouched = ChatSessionFactory()

    response = _action(support_client, "archive_sessions", chosen)
    assert response.status_code == 302
    assert set(ChatSession.objects.filter(archived=True)) == set(chosen)
    assert not ChatSession.objects.get(pk=untouched.pk).archived

    _action(support_client, "unarchive_sessions", chosen[:1])
    assert list(ChatSession.objects.filter(archived=True)) == [chosen[1]]


def test_export_json_contains_each_session_with_its_messages_in_order(viewer_client):
    session = ChatSessionFactory(title="Export me", metadata={"k": "v"})
    services.append_message(session=session, role="user", content='Quote " and é', token_count=4)
    add_reply(session, content="Answer")
    other = ChatSessionFactory(title="Empty")

    response = _action(viewer_client, "export_json", [session, other])

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("application/json")
    assert "attachment;" in response["Content-Disposition"]
    data = json.loads(b"".join(response.streaming_content))
    by_id = {item["id"]: item for item in data}
    exported = by_id[str(session.pk)]
    assert exported["title"] == "Export me"
    assert exported["metadata"] == {"k": "v"}
    assert exported["user"] == session.user.username
    assert [(m["seq"], m["role"], m["content"]) for m in exported["messages"]] == [
        (1, "user", 'Quote " and é'),
        (2, "assistant", "Answer"),
    ]
    assert exported["messages"][1]["usage"]["total_tokens"] == 127
    assert exported["messages"][1]["finish_reason"] == "stop"
    assert by_id[str(other.pk)]["messages"] == []


def test_export_markdown_is_a_readable_transcript_content_cannot_break_its_fence(
    viewer_client,
):
    session = ChatSessionFactory(title="Markdown me", system_prompt="Be brief.")
    tricky = "```\n# not a heading of the export\n```"
    services.append_message(session=session, role="user", content=tricky, token_count=4)
    add_reply(session, content="Done.")

    response = _action(viewer_client, "export_markdown", [session])

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    text = b"".join(response.streaming_content).decode()
    assert text.startswith("# Markdown me\n")
    assert "## System prompt\n\n```\nBe brief.\n```" in text
    assert f"````\n{tricky}\n````" in text
    assert text.index("## #1 user") < text.index("## #2 assistant")
    assert "model `gpt-4o-mini`; usage 120 prompt + 7 completion = 127 tokens; 812 ms" in text


# --- Permissions ----------------------------------------------------------------------------


def test_view_only_staff_can_read_list_transcript_and_messages(viewer_client):
    session = ChatSessionFactory(title="Readable")
    seed_history(session, 3)

    assert viewer_client.get(LIST_URL).status_code == 200
    page = viewer_client.get(change_url(session))
    assert page.status_code == 200
    assert [m.seq for m in page.context["transcript"].messages] == [1, 2, 3]
    assert viewer_client.get(MESSAGE_LIST_URL).status_code == 200


def test_view_only_staff_cannot_change_archive_or_delete(viewer_client):
    session = ChatSessionFactory(title="Keep")

    refused = viewer_client.post(change_url(session), {"archived": "on"})
    assert refused.status_code == 403
    listing = viewer_client.get(LIST_URL).content.decode()
    assert "archive_sessions" not in listing
    assert "export_json" in listing
    _action(viewer_client, "archive_sessions", [session])
    delete_url = reverse("admin:conversations_chatsession_delete", args=[session.pk])
    assert viewer_client.post(delete_url, {"post": "yes"}).status_code == 403

    session.refresh_from_db()
    assert session.archived is False
    assert ChatSession.objects.filter(pk=session.pk).exists()


def test_support_staff_may_archive_from_the_session_page_but_not_rewrite_it(support_client):
    session = ChatSessionFactory(title="Original", system_prompt="Original prompt")

    response = support_client.post(
        change_url(session), {"archived": "on", "title": "Rewritten", "system_prompt": "Evil"}
    )

    assert response.status_code == 302
    session.refresh_from_db()
    assert session.archived is True
    assert (session.title, session.system_prompt) == ("Original", "Original prompt")


def test_nobody_adds_or_deletes_sessions_from_the_admin(admin_client):
    session = ChatSessionFactory()
    delete_url = reverse("admin:conversations_chatsession_delete", args=[session.pk])

    assert admin_client.get(reverse("admin:conversations_chatsession_add")).status_code == 403
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert ChatSession.objects.filter(pk=session.pk).exists()


def test_message_content_cannot_be_edited_added_or_deleted_even_by_a_superuser(admin_client):
    session = ChatSessionFactory()
    message = services.append_message(session=session, role="user", content="as said")
    url = reverse("admin:conversations_message_change", args=[message.pk])

    view = admin_client.get(url)
    assert view.status_code == 200
    assert 'name="content"' not in view.content.decode()
    assert admin_client.post(url, {"content": "rewritten"}).status_code == 403
    assert admin_client.get(reverse("admin:conversations_message_add")).status_code == 403
    delete_url = reverse("admin:conversations_message_delete", args=[message.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    admin_client.post(
        MESSAGE_LIST_URL, {"action": "delete_selected", "_selected_action": [message.pk]}
    )

    message.refresh_from_db()
    assert message.content == "as said"


def test_non_staff_users_are_sent_to_the_login_page(client):
    client.force_login(UserFactory(is_staff=False))

    response = client.get(LIST_URL)

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


# --- Message admin (content search) -----------------------------------------------------------


def test_message_search_finds_the_phrase_and_links_to_its_transcript_page(viewer_client):
    session = ChatSessionFactory(title="Long one")
    seed_history(session, 150)
    services.append_message(
        session=session, role="user", content="the blue widget broke", token_count=4
    )
    seed_history(session, 120)  # the hit (seq 151) is now on transcript page 2

    response = viewer_client.get(MESSAGE_LIST_URL, {"q": "BLUE WIDGET"})

    assert [m.seq for m in response.context["cl"].result_list] == [151]
    html = response.content.decode()
    assert f"{change_url(session)}?transcript_page=2#msg-151" in html
    page2 = viewer_client.get(change_url(session), {"transcript_page": 2})
    assert "the blue widget broke" in page2.content.decode()


def test_message_search_by_session_id_and_short_terms(viewer_client):
    session = ChatSessionFactory()
    seed_history(session, 3)
    seed_history(ChatSessionFactory(), 2)

    by_id = viewer_client.get(MESSAGE_LIST_URL, {"q": str(session.pk)})
    short = viewer_client.get(MESSAGE_LIST_URL, {"q": "ms"})

    assert sorted(m.seq for m in by_id.context["cl"].result_list) == [1, 2, 3]
    assert list(short.context["cl"].result_list) == []


def test_message_list_shows_content_escaped_and_runs_constant_queries(viewer_client):
    session = ChatSessionFactory()
    services.append_message(session=session, role="user", content="<script>x()</script>")

    def count_queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = viewer_client.get(MESSAGE_LIST_URL)
        assert response.status_code == 200
        assert "<script>x()</script>" not in response.content.decode()
        return len(ctx.captured_queries)

    small = count_queries()
    for _ in range(10):
        seed_history(ChatSessionFactory(), 4)
    large = count_queries()

    assert small == large


def test_message_list_filters_by_role_and_finish_reason(viewer_client):
    session = ChatSessionFactory()
    services.append_message(session=session, role="user", content="question")
    add_reply(session, content="fine")
    failed = add_reply(session, content="boom", finish_reason="error")

    errors = viewer_client.get(MESSAGE_LIST_URL, {"finish_reason": "error"})
    users = viewer_client.get(MESSAGE_LIST_URL, {"role__exact": "user"})

    assert [m.pk for m in errors.context["cl"].result_list] == [failed.pk]
    assert [m.content for m in users.context["cl"].result_list] == ["question"]


@pytest.mark.postgres
def test_unfiltered_message_list_uses_the_row_estimate_not_count_on_a_big_table(
    viewer_client, monkeypatch
):
    from conversations import admin as conversations_admin

    seed_history(ChatSessionFactory(), 30)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE conversations_message")
    monkeypatch.setattr(conversations_admin, "ESTIMATE_COUNT_ABOVE", 10)

    with CaptureQueriesContext(connection) as ctx:
        unfiltered = viewer_client.get(MESSAGE_LIST_URL)
    sqls = [q["sql"] for q in ctx.captured_queries]
    with CaptureQueriesContext(connection) as ctx:
        filtered = viewer_client.get(MESSAGE_LIST_URL, {"role__exact": "user"})
    filtered_sqls = [q["sql"] for q in ctx.captured_queries]

    assert unfiltered.context["cl"].result_count == 30  # ANALYZE saw all 30 rows
    assert any("reltuples" in sql for sql in sqls)
    assert not any("COUNT(*)" in sql for sql in sqls)
    assert filtered.context["cl"].result_count == 15
    assert any("COUNT(*)" in sql for sql in filtered_sqls)


# --- Branching: forks and versions ----------------------------------------------------------
def test_a_fork_links_to_its_parent_and_the_parent_lists_its_forks(admin_client):
    from conversations import branching

    parent = ChatSessionFactory(title="The parent")
    services.append_message(session=parent, role="user", content="hi", token_count=1)
    fork = branching.fork_session(session=parent, at_seq=1, title="The fork")

    shown = admin_client.get(change_url(fork)).content.decode()
    assert f'<a href="{change_url(parent)}">The parent</a>, after its message #1' in shown
    listed = admin_client.get(change_url(parent)).content.decode()
    assert f'<a href="{change_url(fork)}">The fork</a> (at #1)' in listed


def test_a_regenerated_message_says_how_often_and_shows_its_earlier_versions(admin_client):
    from conversations import branching

    session = ChatSessionFactory()
    services.append_message(session=session, role="user", content="hi", token_count=1)
    services.append_message(session=session, role="assistant", content="first", token_count=1)
    for text in ("second", "third"):
        branching.replace_answer(session=session, seq=2, answer={"content": text, "token_count": 1})
    message = Message.objects.get(session=session, seq=2)

    transcript = admin_client.get(change_url(session)).content.decode()
    assert "regenerated 2 times" in transcript
    detail = admin_client.get(
        reverse("admin:conversations_message_change", args=[message.pk])
    ).content.decode()
    assert "regenerated 2 times" in detail
    assert detail.index(">first<") < detail.index(">second<")
    assert ">third<" in detail  # the current content, in its own field
