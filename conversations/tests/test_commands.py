"""export_sessions, import_sessions, prune_sessions and seed_demo, through call_command and,
where the exit status or stdin matters, through a real `manage.py` subprocess."""

import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command, load_command_class
from django.db import connection
from django.db.models.signals import post_save
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.selectors import token_for_key
from accounts.tests.factories import api_key_for
from conversations import branching, bulk, services, transfer
from conversations.management.cli import Progress
from conversations.models import ChatSession, Message, MessageVersion
from conversations.tests.factories import ChatSessionFactory, MessageFactory, UserFactory

User = get_user_model()


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def export_lines(*args: str) -> list[str]:
    out, _ = run("export_sessions", *args)
    return out.splitlines()


def snapshot() -> dict:
    """Every column of every session and message, keyed by id: 'equal data' made testable."""
    sessions = {
        str(s["id"]): s
        for s in ChatSession.objects.values(*[f.attname for f in ChatSession._meta.fields])
    }
    for s in sessions.values():
        s["user"] = User.objects.get(pk=s.pop("user_id")).get_username()
    messages = {
        m["id"]: {**m, "session_id": str(m["session_id"])}
        for m in Message.objects.values(*[f.attname for f in Message._meta.fields])
    }
    versions = {
        (str(v["session_id"]), v["message_id"], v["number"]): v
        for v in MessageVersion.objects.values(
            *[f.attname for f in MessageVersion._meta.fields if f.attname != "id"]
        )
    }
    return {"sessions": sessions, "messages": messages, "versions": versions}


def make_rich_history():
    """Two users' sessions covering every column: tool calls, reply fields, archived, empty."""
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    trip = services.create_session(
        user=alice, title="Trip", system_prompt="Be brief.", model="gpt-4o", metadata={"k": "v"}
    )
    services.append_message(session=trip, role="user", content="  Weather?\n", token_count=4)
    services.append_message(
        session=trip,
        role="assistant",
        content="",
        token_count=9,
        tool_calls=[{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        model="gpt-4o",
        usage={"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
        finish_reason="tool_calls",
        latency_ms=812,
        context={
            "first_seq": 1,
            "last_seq": 1,
            "messages_included": 1,
            "messages_dropped": 0,
            "tokens": 20,
            "budget": 4096,
            "encoding": "o200k_base",
        },
    )
    services.append_message(
        session=trip, role="tool", content='{"t": 18}', name="w", tool_call_id="c1", token_count=3
    )
    services.append_message(
        session=trip,
        role="assistant",
        content="Sunny, 18 °C. 🌞",
        metadata={"x": "y"},
        token_count=7,
    )
    old = services.create_session(user=bob, title="Old")
    services.append_message(session=old, role="user", content="hello", token_count=1)
    services.update_session(session=old, archived=True)
    services.create_session(user=bob, title="Empty")
    return alice, bob


def wipe():
    ChatSession.objects.all().delete()
    User.objects.all().delete()


@pytest.mark.django_db
class TestExportImportRoundTrip:
    def test_export_then_import_into_an_empty_database_gives_equal_data(self, tmp_path):
        make_rich_history()
        before = snapshot()
        path = tmp_path / "all.jsonl"
        run("export_sessions", "--output", str(path))
        wipe()

        out, _ = run("import_sessions", str(path))

        assert snapshot() == before
        assert "Imported 3 session(s), 5 message(s)" in out
        assert "created user(s) without a usable password: alice, bob" in out
        assert not User.objects.get(username="alice").has_usable_password()

    def test_export_then_import_round_trips_forks_and_versions(self, tmp_path):
        make_rich_history()
        trip = ChatSession.objects.get(title="Trip")
        for text in ("Cloudy.", "Rain later."):
            branching.replace_answer(
                session=trip,
                seq=4,
                answer={
                    "content": text,
                    "token_count": 2,
                    "model": "m",
                    "finish_reason": "stop",
                    "context": {
                        "first_seq": 1,
                        "last_seq": 3,
                        "messages_included": 3,
                        "messages_dropped": 0,
                        "tokens": 30,
                        "budget": 4000,
                        "encoding": "o200k_base",
                    },
                },
            )
        fork = branching.fork_session(session=trip, at_seq=4, title="Trip, again")
        services.append_message(session=fork, role="user", content="And tomorrow?")
        before = snapshot()
        assert len(before["versions"]) == 2
        path = tmp_path / "all.jsonl"
        run("export_sessions", "--output", str(path))
        wipe()

        out, _ = run("import_sessions", str(path))

        assert "Imported 4 session(s)" in out
        after = snapshot()
        # The history cache's stamp (moved by the regenerate) is not data: not exported.
        for state in (before, after):
            for row in state["sessions"].values():
                row.pop("history_changed_at")
        assert after == before
        imported = ChatSession.objects.get(title="Trip, again")
        assert (imported.forked_from_id, imported.forked_at_seq) == (trip.pk, 4)
        again = tmp_path / "again.jsonl"
        run("export_sessions", "--output", str(again))
        assert again.read_bytes() == path.read_bytes()

    def test_an_import_keeps_timestamps_without_switching_auto_now_off_for_other_code(
        self, tmp_path
    ):
        # A request served meanwhile (another thread) must still get its own timestamps:
        # the import keeps the file's values with a default and an UPDATE, not by turning
        # the fields' auto_now off process-wide while it writes.
        make_rich_history()
        before = snapshot()
        path = tmp_path / "all.jsonl"
        run("export_sessions", "--output", str(path))
        wipe()
        seen = []

        def while_importing(sender, instance, **kwargs):
            seen.append(ChatSession._meta.get_field("updated_at").auto_now)

        post_save.connect(while_importing, sender=ChatSession, dispatch_uid="test-import")
        try:
            run("import_sessions", str(path))
        finally:
            post_save.disconnect(sender=ChatSession, dispatch_uid="test-import")

        assert seen == [True, True, True]
        assert snapshot() == before
        fresh = ChatSession.objects.create(user=User.objects.get(username="alice"))
        assert timezone.now() - fresh.created_at < timedelta(minutes=1)
        assert fresh.updated_at >= fresh.created_at

    def test_a_reimported_export_is_byte_identical(self, tmp_path):
        make_rich_history()
        first = tmp_path / "first.jsonl"
        run("export_sessions", "-o", str(first))
        wipe()
        run("import_sessions", str(first))
        second = tmp_path / "second.jsonl"
        run("export_sessions", "-o", str(second))
        assert second.read_bytes() == first.read_bytes()

    def test_reimporting_the_same_file_creates_nothing_new(self, tmp_path):
        make_rich_history()
        path = tmp_path / "all.jsonl"
        run("export_sessions", "-o", str(path))
        before = snapshot()

        out, _ = run("import_sessions", str(path))

        assert snapshot() == before
        assert "Imported 0 session(s), 0 message(s); skipped existing: 3; bad lines: 0." in out

    def test_appends_after_an_import_get_fresh_message_ids(self, tmp_path):
        # PostgreSQL's id sequence does not move on explicit ids; the import must move it.
        make_rich_history()
        path = tmp_path / "all.jsonl"
        run("export_sessions", "-o", str(path))
        highest = Message.objects.order_by("-id").first().id
        wipe()
        run("import_sessions", str(path))
        session = ChatSession.objects.get(title="Trip")
        services.update_session(session=session, archived=False)
        message = services.append_message(session=session, role="user", content="more")
        assert message.id > highest
        assert message.seq == 5

    def test_taken_message_ids_are_reassigned_not_clashed(self, tmp_path):
        alice, _ = make_rich_history()
        trip = ChatSession.objects.get(title="Trip")
        path = tmp_path / "trip.jsonl"
        run("export_sessions", "--session", str(trip.pk), "-o", str(path))
        kept_ids = set(trip.messages.values_list("id", flat=True))
        trip.delete()
        # Another session now holds one of the exported ids.
        clash = ChatSessionFactory(user=alice)
        Message.objects.create(session=clash, seq=1, role="user", content="x", id=min(kept_ids))

        out, _ = run("import_sessions", str(path))

        trip = ChatSession.objects.get(title="Trip")
        assert trip.messages.count() == 4
        assert list(trip.messages.order_by("seq").values_list("seq", flat=True)) == [1, 2, 3, 4]
        assert "1 session(s) got new message ids" in out

    def test_dry_run_reports_and_writes_nothing(self, tmp_path):
        make_rich_history()
        path = tmp_path / "all.jsonl"
        run("export_sessions", "-o", str(path))
        wipe()

        out, _ = run("import_sessions", str(path), "--dry-run")

        assert "Dry run: would import 3 session(s), 5 message(s)" in out
        assert "would create user(s) without a usable password: alice, bob" in out
        assert ChatSession.objects.count() == 0
        assert User.objects.count() == 0

    def test_no_create_users_makes_an_unknown_owner_a_bad_line(self, tmp_path):
        make_rich_history()
        path = tmp_path / "all.jsonl"
        run("export_sessions", "--user", "bob", "-o", str(path))
        wipe()
        UserFactory(username="alice")

        with pytest.raises(CommandError, match="2 bad line"):
            run("import_sessions", str(path), "--no-create-users")
        assert ChatSession.objects.count() == 0
        assert not User.objects.filter(username="bob").exists()


@pytest.mark.django_db
class TestExportFilters:
    def test_user_filter_keeps_only_that_users_sessions(self):
        make_rich_history()
        lines = export_lines("--user", "bob")
        assert sorted(json.loads(line)["title"] for line in lines) == ["Empty", "Old"]

    def test_session_filter_is_repeatable(self):
        make_rich_history()
        ids = [str(s.pk) for s in ChatSession.objects.filter(title__in=["Trip", "Empty"])]
        lines = export_lines("--session", ids[0], "--session", ids[1])
        assert sorted(json.loads(line)["id"] for line in lines) == sorted(ids)

    def test_since_and_until_select_by_last_activity(self):
        make_rich_history()
        now = timezone.now()
        ChatSession.objects.filter(title="Old").update(updated_at=now - timedelta(days=40))
        ChatSession.objects.filter(title="Empty").update(updated_at=now - timedelta(days=10))
        day = lambda d: (now - timedelta(days=d)).date().isoformat()  # noqa: E731

        def titles(*args):
            return sorted(json.loads(line)["title"] for line in export_lines(*args))

        assert titles("--since", day(20)) == ["Empty", "Trip"]
        assert titles("--until", day(20)) == ["Old"]
        assert titles("--since", day(20), "--until", day(5)) == ["Empty"]

    def test_each_line_lists_the_documented_fields_in_order(self):
        make_rich_history()
        record = json.loads(export_lines("--user", "alice")[0])
        assert tuple(record) == (*transfer.SESSION_FIELDS, "messages")
        assert tuple(record["messages"][0]) == transfer.MESSAGE_FIELDS
        assert record["user"] == "alice"
        assert [m["seq"] for m in record["messages"]] == [1, 2, 3, 4]

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("--since", "yesterday"), "--since: 'yesterday' is not an ISO date"),
            (("--session", "42"), "--session: '42' is not a session id"),
            (("--since", "2026-02-01", "--until", "2026-01-01"), "--since must be earlier"),
        ],
    )
    def test_bad_filters_are_a_clear_error(self, args, message):
        with pytest.raises(CommandError, match=message):
            run("export_sessions", *args)


@pytest.mark.django_db
class TestExportReadsInBoundedBatches:
    def test_messages_are_read_in_keyset_batches_never_all_at_once(self):
        session = ChatSessionFactory()
        for _ in range(25):
            MessageFactory(session=session)
        ChatSessionFactory(user=session.user)  # an empty one: one short query, no more

        out = io.StringIO()
        with CaptureQueriesContext(connection) as queries:
            result = transfer.export_sessions(
                sessions=transfer.sessions_for_export(), out=out, message_batch_size=10
            )

        message_queries = [q["sql"] for q in queries if 'FROM "conversations_message"' in q["sql"]]
        # 25 messages by 10: three batches, then one (empty) read for the second session.
        assert len(message_queries) == 4
        assert all("LIMIT 10" in sql and "ORDER BY" in sql for sql in message_queries)
        assert all("OFFSET" not in sql for sql in message_queries)
        assert (result.sessions, result.messages) == (2, 25)
        assert [m["seq"] for m in json.loads(out.getvalue().splitlines()[0])["messages"]] == list(
            range(1, 26)
        )

    def test_a_line_is_written_message_by_message(self):
        # The writer sees each message as it is read: a session's line is never built whole.
        session = ChatSessionFactory()
        for _ in range(5):
            MessageFactory(session=session)

        class Recorder(io.StringIO):
            writes = 0

            def write(self, text):
                Recorder.writes += 1
                return super().write(text)

        transfer.export_sessions(
            sessions=transfer.sessions_for_export(), out=Recorder(), message_batch_size=2
        )
        assert Recorder.writes >= 1 + 5 + 1

    @pytest.mark.postgres
    def test_sessions_come_from_a_server_side_cursor_in_chunks(self):
        for _ in range(3):
            ChatSessionFactory()
        out = io.StringIO()
        with CaptureQueriesContext(connection) as queries:
            transfer.export_sessions(
                sessions=transfer.sessions_for_export(), out=out, session_chunk_size=2
            )
        session_queries = [
            q["sql"] for q in queries if 'FROM "conversations_chatsession"' in q["sql"]
        ]
        # One query, fetched through a named cursor 2 rows at a time (not a list()).
        assert len(session_queries) == 1
        assert len(out.getvalue().splitlines()) == 3


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.django_db
class TestImportRejectsBadLines:
    @pytest.fixture
    def good_lines(self):
        make_rich_history()
        lines = export_lines()
        wipe()
        return lines

    def corrupt(self, line: str, change) -> str:
        record = json.loads(line)
        change(record)
        return json.dumps(record)

    def test_bad_lines_are_reported_by_number_and_the_rest_is_imported(self, tmp_path, good_lines):
        trip, old, empty = good_lines
        lines = [
            trip,
            old[: len(old) // 2],  # truncated
            self.corrupt(empty, lambda r: r.update(title=5)),  # wrong type
            self.corrupt(trip, lambda r: r.update(id=str(uuid.uuid4()))),  # fine, new id
        ]
        bad_role = self.corrupt(old, lambda r: r["messages"][0].update(role="robot"))
        lines.append(bad_role)
        path = write_lines(tmp_path / "mixed.jsonl", lines)

        out, err = io.StringIO(), io.StringIO()
        with pytest.raises(CommandError, match=r"3 bad line\(s\): 2, 3, 5"):
            call_command("import_sessions", str(path), stdout=out, stderr=err)

        err = err.getvalue()
        assert "line 2: not valid JSON" in err
        assert "line 3: title: Expected a string, got int." in err
        assert 'line 5: messages[0].role: "robot" is not a valid choice.' in err
        assert sorted(ChatSession.objects.values_list("title", flat=True)) == ["Trip", "Trip"]
        # The bad lines left nothing behind: no session, no message, no user of theirs.
        assert Message.objects.count() == 8
        assert not User.objects.filter(username="bob").exists()

    @pytest.mark.parametrize(
        ("change", "expected"),
        [
            (lambda r: r["messages"][1].update(seq=1), "messages[1].seq: duplicate seq 1"),
            (lambda r: r["messages"].pop(1), "message_count: 4, but the line has 3 messages"),
            (
                lambda r: r["messages"][0].update(token_count="4"),
                "messages[0].token_count: Expected an integer, got str.",
            ),
            (lambda r: r["messages"][0].update(colour="red"), "messages[0].colour: Unknown field."),
            (lambda r: r.update(created_at="last week"), "created_at: Not an ISO 8601 date-time"),
            (lambda r: r.update(id="nope"), "id: Not a UUID"),
            (lambda r: r.update(archived="yes"), "archived: Expected true or false, got str."),
            (lambda r: r["messages"][-1].update(seq=9), "last_seq: 4, but a message has seq 9"),
            (lambda r: r.update(total_tokens=1), "total_tokens: 1, but the messages add up to 23"),
            (lambda r: r.pop("messages"), "messages: missing"),
            (lambda r: r.update(forked_from="nope"), "forked_from: Not a UUID"),
            (
                lambda r: r["messages"][3].update(versions=2),
                "messages[3].earlier_versions: versions is 2, so 1 earlier versions are due, not 0",
            ),
            (
                lambda r: r["messages"][3].update(
                    versions=2,
                    earlier_versions=[{"number": 2, "content": "x", "created_at": "2026-01-01"}],
                ),
                "messages[3].earlier_versions[0].number: 2, but it is version 1 of the list",
            ),
        ],
    )
    def test_each_kind_of_corruption_is_named(self, tmp_path, good_lines, change, expected):
        path = write_lines(tmp_path / "bad.jsonl", [self.corrupt(good_lines[0], change)])
        err = io.StringIO()
        with pytest.raises(CommandError, match="1 bad line"):
            call_command("import_sessions", str(path), stdout=io.StringIO(), stderr=err)
        assert "line 1: " in err.getvalue()
        assert expected in err.getvalue()
        assert ChatSession.objects.count() == 0
        assert Message.objects.count() == 0

    @pytest.mark.parametrize(
        ("change", "expected"),
        [
            (
                lambda r: r.update(metadata={f"k{i}": "v" for i in range(17)}),
                "metadata: At most 16 keys are allowed.",
            ),
            (
                lambda r: r.update(metadata={"k": 1}),
                "metadata: Value of 'k' must be a string, got int.",
            ),
            (lambda r: r.update(model="no-such-model"), "model: "),
            (lambda r: r.update(title="t" * 256), "title: Ensure this field has no more than 255"),
            (lambda r: r.update(colour="red"), "colour: Unknown field."),
        ],
    )
    def test_a_session_is_validated_as_the_api_validates_it(
        self, tmp_path, good_lines, change, expected
    ):
        path = write_lines(tmp_path / "bad.jsonl", [self.corrupt(good_lines[0], change)])
        err = io.StringIO()
        with pytest.raises(CommandError, match="1 bad line"):
            call_command("import_sessions", str(path), stdout=io.StringIO(), stderr=err)
        assert f"line 1: {expected}" in err.getvalue()
        assert ChatSession.objects.count() == 0

    def test_a_database_refusal_rolls_the_whole_session_back(self, tmp_path, good_lines):
        # Valid JSON the database rejects at the last message: the session must not remain.
        record = json.loads(good_lines[0])
        record["messages"][-1]["role"] = "user"
        record["messages"][-1]["content"] = "x"
        line = json.dumps(record)
        path = write_lines(tmp_path / "one.jsonl", [line])
        original = transfer.Message.objects.bulk_create

        def failing_bulk_create(objs, **kwargs):
            original(objs[:-1], **kwargs)
            from django.db import IntegrityError

            raise IntegrityError("simulated refusal")

        transfer.Message.objects.bulk_create = failing_bulk_create
        try:
            with pytest.raises(CommandError, match="1 bad line"):
                run("import_sessions", str(path))
        finally:
            del transfer.Message.objects.bulk_create
        assert ChatSession.objects.count() == 0
        assert Message.objects.count() == 0

    # The trip line's messages: user, assistant calling a tool (a generated reply), tool, assistant.
    @pytest.mark.parametrize(
        ("change", "expected"),
        [
            (
                lambda m: m[1].update(tool_calls=[1]),
                "messages[1].tool_calls: Tool call 0: Invalid data. Expected a dictionary, but "
                "got int.",
            ),
            (
                lambda m: m[1]["tool_calls"][0].pop("function"),
                "messages[1].tool_calls: Tool call 0: function: This field is required.",
            ),
            (
                lambda m: m[0].update(tool_calls=m[1]["tool_calls"]),
                "messages[0].tool_calls: Only assistant messages carry this field, not user ones.",
            ),
            (
                lambda m: m[2].update(tool_call_id=""),
                "messages[2].tool_call_id: A tool message must say which call it answers.",
            ),
            (
                lambda m: m[3].update(content=""),
                "messages[3].content: This field may not be blank.",
            ),
            (
                lambda m: m[0].update(metadata={"k": 1}),
                "messages[0].metadata: Value of 'k' must be a string, got int.",
            ),
            (
                lambda m: m[1]["usage"].update(prompt_tokens="20"),
                "messages[1].usage.prompt_tokens: Expected an integer, got str.",
            ),
            (
                lambda m: m[1].update(context=[1]),
                "messages[1].context: Invalid data. Expected a dictionary, but got list.",
            ),
            (
                lambda m: m[1].update(created_at="2026-11-27T09:15:02"),
                "messages[1].created_at: Needs a UTC offset (e.g. +00:00).",
            ),
        ],
    )
    def test_a_message_is_validated_as_the_api_validates_it_and_the_line_named(
        self, tmp_path, good_lines, change, expected
    ):
        line = self.corrupt(good_lines[0], lambda r: change(r["messages"]))
        path = write_lines(tmp_path / "bad.jsonl", [good_lines[1], line])
        err = io.StringIO()
        with pytest.raises(CommandError, match=r"1 bad line\(s\): 2"):
            call_command("import_sessions", str(path), stdout=io.StringIO(), stderr=err)
        assert f"line 2: {expected}" in err.getvalue()
        assert list(ChatSession.objects.values_list("title", flat=True)) == ["Old"]

    def test_a_session_refused_for_bad_tool_calls_is_not_there_to_break_a_reply(
        self, tmp_path, good_lines
    ):
        trip = json.loads(good_lines[0])
        alice = UserFactory(username="alice")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(alice)}")
        reply_url = f"/api/v1/sessions/{trip['id']}/reply/"
        bad = self.corrupt(good_lines[0], lambda r: r["messages"][1].update(tool_calls=[1]))

        err = io.StringIO()
        with pytest.raises(CommandError, match="1 bad line"):
            call_command(
                "import_sessions",
                str(write_lines(tmp_path / "bad.jsonl", [bad])),
                stdout=io.StringIO(),
                stderr=err,
            )
        assert "line 1: messages[1].tool_calls: Tool call 0: " in err.getvalue()
        # Imported, it made every reply on the session a 500; refused, there is no session.
        assert client.post(reply_url, {"content": "And now?"}, format="json").status_code == 404

        run("import_sessions", str(write_lines(tmp_path / "good.jsonl", [good_lines[0]])))
        response = client.post(reply_url, {"content": "And now?"}, format="json")
        assert response.status_code == 201, response.content
        assert ChatSession.objects.get(pk=trip["id"]).message_count == 6


@pytest.mark.django_db
class TestPrune:
    @pytest.fixture
    def aged(self):
        now = timezone.now()
        user = UserFactory()

        def session(title, days, archived=False, messages=2):
            s = ChatSessionFactory(user=user, title=title)
            for _ in range(messages):
                MessageFactory(session=s)
            ChatSession.objects.filter(pk=s.pk).update(
                archived=archived, updated_at=now - timedelta(days=days)
            )
            return s

        return {
            "recent": session("recent", 5),
            "old": session("old", 100),
            "old_archived": session("old archived", 200, archived=True, messages=3),
            "edge": session("edge", 89),
        }

    def titles(self):
        return sorted(ChatSession.objects.values_list("title", flat=True))

    def test_dry_run_counts_and_deletes_nothing(self, aged):
        out, _ = run("prune_sessions", "--older-than", "90d", "--dry-run")
        assert "Dry run: would delete 2 session(s) idle for more than 90d, with 5 message(s)." in (
            out
        )
        assert len(self.titles()) == 4

    def test_it_deletes_idle_sessions_and_their_messages(self, aged):
        out, _ = run("prune_sessions", "--older-than", "90d")
        assert "Deleted 2 session(s) idle for more than 90d, with 5 message(s)" in out
        assert self.titles() == ["edge", "recent"]
        assert not Message.objects.filter(session_id=aged["old"].pk).exists()

    def test_archived_only_spares_active_sessions(self, aged):
        run("prune_sessions", "--older-than", "13w", "--archived-only")
        assert self.titles() == ["edge", "old", "recent"]

    def test_it_deletes_in_batches_of_the_given_size(self, aged):
        out, _ = run("prune_sessions", "--older-than", "150h", "--batch-size", "1")
        assert "Deleted 3 session(s)" in out
        assert "in 3 batch(es)" in out
        assert self.titles() == ["recent"]

    def test_deletion_goes_through_the_delete_sessions_service(self, aged, monkeypatch):
        calls = []
        real = services.delete_sessions

        def spy(*, sessions):
            calls.append(sorted(str(pk) for pk in sessions.values_list("pk", flat=True)))
            return real(sessions=sessions)

        monkeypatch.setattr(services, "delete_sessions", spy)
        run("prune_sessions", "--older-than", "90d", "--batch-size", "1")
        assert len(calls) == 2

    def test_quiet_at_verbosity_zero(self, aged):
        out, err = run("prune_sessions", "--older-than", "90d", "--verbosity", "0")
        assert (out, err) == ("", "")
        assert len(self.titles()) == 2

    @pytest.mark.parametrize("value", ["90", "90x", "0d", "-3d", "d"])
    def test_a_bad_age_is_a_clear_error(self, value):
        with pytest.raises(CommandError, match="is not a duration like 90d"):
            run("prune_sessions", f"--older-than={value}")


@pytest.mark.django_db
class TestSeedDemo:
    def test_it_creates_the_demo_user_token_and_sessions(self):
        out, _ = run("seed_demo", "--password", "s3cret-demo")
        demo = User.objects.get(username="demo")
        key = next(line for line in out.splitlines() if line.startswith("API token: "))[11:]
        assert demo.check_password("s3cret-demo")
        assert token_for_key(key=key).user == demo
        sessions = ChatSession.objects.filter(user=demo)
        assert sessions.count() == len(bulk.DEMO_SESSIONS)
        assert sessions.filter(archived=True).count() == 1
        tool = Message.objects.get(session__user=demo, role="tool")
        call = Message.objects.get(session=tool.session, seq=tool.seq - 1)
        assert call.tool_calls[0]["id"] == tool.tool_call_id
        assert all(s.system_prompt for s in sessions)

    def test_rerunning_duplicates_nothing_and_keeps_the_password(self):
        run("seed_demo", "--password", "first-pass")
        before = snapshot()
        out, _ = run("seed_demo")
        assert snapshot() == before
        assert "Demo sessions: 0 created, 4 already there." in out
        assert "Password: unchanged" in out
        assert User.objects.get(username="demo").check_password("first-pass")

    def test_rerunning_replaces_the_demo_token_with_the_printed_one(self):
        first, _ = run("seed_demo")
        second, _ = run("seed_demo")
        keys = [
            next(line for line in out.splitlines() if line.startswith("API token: "))[11:]
            for out in (first, second)
        ]
        demo = User.objects.get(username="demo")
        assert token_for_key(key=keys[0]) is None
        assert token_for_key(key=keys[1]).user == demo
        assert demo.api_tokens.count() == 1

    def test_a_new_demo_user_gets_a_printed_password(self):
        out, _ = run("seed_demo")
        password = next(line for line in out.splitlines() if line.startswith("Password: "))
        assert User.objects.get(username="demo").check_password(password.split(": ", 1)[1])

    def test_load_data_counters_match_the_messages(self):
        run("seed_demo", "--sessions", "7", "--messages", "5", "--batch-size", "12")
        load = ChatSession.objects.filter(title__startswith="Load session")
        assert load.count() == 7
        for session in load:
            messages = list(session.messages.order_by("seq"))
            assert [m.seq for m in messages] == [1, 2, 3, 4, 5]
            assert [m.role for m in messages[:2]] == ["user", "assistant"]
            assert session.message_count == 5
            assert session.last_seq == 5
            assert session.total_tokens == sum(m.token_count for m in messages)
            assert session.last_message_at == messages[-1].created_at
            assert session.updated_at == session.last_message_at
            assert session.created_at < messages[0].created_at

    def test_load_sessions_accept_appends_at_the_next_seq(self):
        run("seed_demo", "--sessions", "1", "--messages", "3", "--verbosity", "0")
        session = ChatSession.objects.get(title="Load session 1")
        assert services.append_message(session=session, role="user", content="hi").seq == 4

    def test_load_data_survives_an_export_import_round_trip(self, tmp_path):
        run("seed_demo", "--sessions", "3", "--messages", "4", "--verbosity", "0")
        before = snapshot()
        path = tmp_path / "seed.jsonl"
        run("export_sessions", "-o", str(path))
        wipe()
        run("import_sessions", str(path))
        after = snapshot()
        # The demo user comes back without a usable password; everything else is equal.
        assert after == before

    def test_quiet_at_verbosity_zero(self):
        assert run("seed_demo", "--verbosity", "0") == ("", "")

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("--sessions", "-1"), "must not be negative"),
            (("--password", ""), "--password must not be empty"),
        ],
    )
    def test_bad_arguments_are_a_clear_error(self, args, message):
        with pytest.raises(CommandError, match=message):
            run("seed_demo", *args)


# --- Through manage.py: exit status, stdin, stdout ----------------------------------------
# These run real `manage.py` processes against their own SQLite files (a subprocess cannot
# see the test database's uncommitted transaction, nor SQLite's in-memory test database).

MANAGE = Path(settings.BASE_DIR) / "manage.py"


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cmd-db") / "template.sqlite3"
    result = manage("migrate", "--noinput", db=path)
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def fresh_db(migrated_template, tmp_path):
    """A new migrated, empty SQLite database file for each call."""
    count = 0

    def make() -> Path:
        nonlocal count
        count += 1
        path = tmp_path / f"db{count}.sqlite3"
        shutil.copyfile(migrated_template, path)
        return path

    return make


def manage(*args: str, db: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOG_LEVEL": "WARNING", "DATABASE_URL": f"sqlite:///{db}"}
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )


class TestThroughManagePy:
    def test_export_to_stdout_then_import_from_stdin_round_trips(self, fresh_db):
        source, target = fresh_db(), fresh_db()
        seeded = manage("seed_demo", "--sessions", "3", "--messages", "4", db=source)
        assert seeded.returncode == 0, seeded.stderr
        exported = manage("export_sessions", db=source)
        assert exported.returncode == 0, exported.stderr
        assert b"Exported 7 session(s), 26 message(s)." in exported.stderr
        assert len(exported.stdout.splitlines()) == 7

        imported = manage("import_sessions", db=target, stdin=exported.stdout)
        assert imported.returncode == 0, imported.stderr
        assert b"Imported 7 session(s), 26 message(s)" in imported.stdout

        again = manage("export_sessions", "--output", "-", db=target)
        assert again.stdout == exported.stdout
        reimported = manage("import_sessions", "-", db=target, stdin=exported.stdout)
        assert b"Imported 0 session(s), 0 message(s); skipped existing: 7" in reimported.stdout

    def test_import_of_a_corrupted_file_exits_1_after_reporting_every_bad_line(self, fresh_db):
        def line(title):
            return json.dumps(
                {
                    "id": str(uuid.uuid4()),
                    "user": "carol",
                    "title": title,
                    "created_at": "2026-01-02T03:04:05.000006+00:00",
                    "updated_at": "2026-01-02T03:04:05.000006+00:00",
                    "messages": [
                        {
                            "seq": 1,
                            "role": "user",
                            "content": "hi",
                            "created_at": "2026-01-02T03:04:05.000006+00:00",
                        }
                    ],
                }
            )

        data = "\n".join([line("a"), "{not json", line("b")[:30], line("c")]) + "\n"

        result = manage("import_sessions", "-", db=fresh_db(), stdin=data.encode())

        assert result.returncode == 1
        err = result.stderr.decode()
        assert "line 2: not valid JSON" in err
        assert "line 3: not valid JSON" in err
        assert "CommandError: 2 bad line(s): 2, 3" in err
        assert b"Imported 2 session(s), 2 message(s)" in result.stdout

    @pytest.mark.parametrize(
        "args",
        [
            ("prune_sessions", "--older-than", "soon"),  # a bad value: CommandError
            ("prune_sessions", "--older-than", "9d", "--bogus"),  # argparse's usage error
            ("import_sessions", "/nonexistent/file.jsonl"),
        ],
    )
    def test_bad_arguments_exit_with_status_1_and_a_message(self, args, migrated_template):
        result = manage(*args, db=migrated_template)
        assert result.returncode == 1
        assert result.stderr.strip()
        assert b"Traceback" not in result.stderr

    def test_help_exits_0(self, migrated_template):
        result = manage("prune_sessions", "--help", db=migrated_template)
        assert result.returncode == 0
        assert b"--older-than AGE" in result.stdout


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("export_sessions", "JSON Lines"),
        ("import_sessions", "Idempotent"),
        ("prune_sessions", "--older-than"),
        ("seed_demo", "curl"),
    ],
)
def test_help_explains_the_command(name, phrase):
    command = load_command_class("conversations", name)
    assert phrase in command.create_parser("manage.py", name).format_help()


class TestProgress:
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def test_it_redraws_one_line_on_a_terminal(self):
        stream = self.Terminal()
        progress = Progress(stream, verbosity=1, label="Seeded messages", total=200)
        progress.update(50)
        progress.update(200)
        progress.close()
        assert stream.getvalue() == (
            "\rSeeded messages: 50/200 (25%)\rSeeded messages: 200/200 (100%)\n"
        )

    @pytest.mark.parametrize(("stream", "verbosity"), [(io.StringIO(), 1), (Terminal(), 0)])
    def test_it_stays_silent_off_a_terminal_or_when_quiet(self, stream, verbosity):
        progress = Progress(stream, verbosity=verbosity, label="x", total=3)
        progress.update(1)
        progress.close()
        assert stream.getvalue() == ""


@pytest.mark.django_db
def test_export_and_import_are_quiet_at_verbosity_zero(tmp_path):
    make_rich_history()
    path = tmp_path / "all.jsonl"
    assert run("export_sessions", "-o", str(path), "--verbosity", "0") == ("", "")
    wipe()
    assert run("import_sessions", str(path), "--verbosity", "0") == ("", "")
    assert ChatSession.objects.count() == 3
