"""`manage.py chat` as a real subprocess fed by stdin, replying through the real `openai` SDK
against the fake OpenAI server on loopback.

The subprocess cannot see the test database's uncommitted transaction, so each test gets its
own migrated SQLite file (copied from a template made once per module) and reads it back with
sqlite3.
"""

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from llm.tests.fake_openai import DEFAULT_REPLY, FakeOpenAI

MANAGE = Path(settings.BASE_DIR) / "manage.py"
SESSION_ID = re.compile(r"session ([0-9a-f-]{36})", re.IGNORECASE)


def manage(*args: str, db: Path, stdin: str = "", fake: FakeOpenAI | None = None):
    env = {**os.environ, "LOG_LEVEL": "WARNING", "DATABASE_URL": f"sqlite:///{db}"}
    # These tests count and read the chat's own provider calls; the automatic title's extra
    # call after the first reply has its tests in test_titles.py.
    env["CHATENGINE_AUTO_TITLE"] = "0"
    env.pop("REDIS_URL", None)
    if fake is not None:
        env.update(
            LLM_PROVIDER="openai",
            OPENAI_BASE_URL=fake.base_url,
            OPENAI_API_KEY="sk-test-not-a-real-key",
            LLM_MAX_RETRIES="0",
        )
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chat-db") / "template.sqlite3"
    result = manage("migrate", "--noinput", db=path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(path) as db:
        for name in ("alice", "bob"):
            db.execute(
                "INSERT INTO auth_user (username, password, is_superuser, first_name, last_name,"
                " email, is_staff, is_active, date_joined) VALUES (?, '!', 0, '', '', '', 0, 1,"
                " '2026-01-01 00:00:00')",
                (name,),
            )
    return path


@pytest.fixture
def db(template, tmp_path) -> Path:
    path = tmp_path / "chat.sqlite3"
    shutil.copyfile(template, path)
    return path


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def query(db: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def messages(db: Path, session_id: str) -> list[tuple[str, str]]:
    return query(
        db,
        "SELECT role, content FROM conversations_message WHERE session_id = ? ORDER BY seq",
        session_id.replace("-", ""),
    )


def session_of(result) -> str:
    found = SESSION_ID.search(result.stderr + result.stdout)
    assert found, result.stderr
    return found.group(1)


class TestChat:
    def test_round_trip_streams_replies_and_sends_the_history(self, db, fake):
        result = manage("chat", "--user", "alice", db=db, fake=fake, stdin="Hi there\nAnd again\n")

        assert result.returncode == 0, result.stderr
        # Scripted: only the replies on stdout, one per line, no prompt, no colour.
        assert result.stdout == f"{DEFAULT_REPLY}\n{DEFAULT_REPLY}\n"
        assert len(fake.requests) == 2
        assert all(body["stream"] for body in fake.requests)
        sent = [(m["role"], m["content"]) for m in fake.requests[1]["messages"]]
        assert sent == [
            ("user", "Hi there"),
            ("assistant", DEFAULT_REPLY),
            ("user", "And again"),
        ]
        session = session_of(result)
        assert messages(db, session) == [*sent, ("assistant", DEFAULT_REPLY)]

    def test_resume_continues_the_session_and_prints_its_last_messages(self, db, fake):
        first = manage("chat", "--user", "alice", db=db, fake=fake, stdin="Remember 42\n")
        session = session_of(first)

        second = manage(
            "chat", "--user", "alice", "--session", session, db=db, fake=fake, stdin="Number?\n"
        )

        assert second.returncode == 0, second.stderr
        assert f"Resumed session {session}" in second.stderr
        assert "[1] user: Remember 42" in second.stderr
        assert f"[2] assistant: {DEFAULT_REPLY}" in second.stderr
        sent = [(m["role"], m["content"]) for m in fake.requests[-1]["messages"]]
        assert sent == [("user", "Remember 42"), ("assistant", DEFAULT_REPLY), ("user", "Number?")]
        assert len(messages(db, session)) == 4

    def test_slash_commands(self, db, fake):
        script = "\n".join(
            [
                "/help",
                "First question",
                "/title Trip to Lisbon",
                "/history",
                "/context",
                "/nonsense",
                "/new",
                "//slash at the start",
                "/quit",
                "never sent",
            ]
        )
        result = manage("chat", "--user", "alice", db=db, fake=fake, stdin=script + "\n")

        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "/context" in out
        assert "/title TEXT" in out
        assert "Title set: Trip to Lisbon" in out
        assert f"[1] user: First question\n[2] assistant: {DEFAULT_REPLY}\n" in out
        context = re.search(
            r"Context: (\d+) of (\d+) tokens; 2 message\(s\) included, 0 dropped; "
            r"encoding (\w+)",
            out,
        )
        assert context
        assert 0 < int(context.group(1)) < int(context.group(2))
        assert "Unknown command /nonsense" in result.stderr
        first = session_of(result)
        second = re.search(r"New session ([0-9a-f-]{36})", out).group(1)
        assert second != first
        assert query(
            db, "SELECT title FROM conversations_chatsession WHERE id = ?", first.replace("-", "")
        ) == [("Trip to Lisbon",)]
        # The message after /new went to the new session, with no history from the first;
        # nothing after /quit was read.
        assert messages(db, second) == [
            ("user", "/slash at the start"),
            ("assistant", DEFAULT_REPLY),
        ]
        assert [(m["role"], m["content"]) for m in fake.requests[-1]["messages"]] == [
            ("user", "/slash at the start")
        ]
        assert len(fake.requests) == 2

    def test_an_llm_error_is_reported_and_the_session_goes_on(self, db, fake):
        fake.fail_next("server_error")

        result = manage("chat", "--user", "alice", db=db, fake=fake, stdin="One\nTwo\n")

        assert result.returncode == 1  # scripted: a failed reply fails the run, at the end
        assert "error: llm_upstream_error:" in result.stderr
        assert result.stdout == f"{DEFAULT_REPLY}\n"
        session = session_of(result)
        # The failed turn's user message stays stored, and the next turn sees it.
        assert messages(db, session) == [
            ("user", "One"),
            ("user", "Two"),
            ("assistant", DEFAULT_REPLY),
        ]
        assert [m["content"] for m in fake.requests[-1]["messages"]] == ["One", "Two"]

    def test_the_echo_provider_works_without_a_server(self, db):
        result = manage("chat", "--user", "alice", db=db, stdin="ping\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "Echo: ping\n"

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("--user", "nobody"), "--user: no user 'nobody'"),
            (("--user", "alice", "--session", "not-a-uuid"), "not found for user 'alice'"),
            (("--user", "alice", "--last", "-1"), "--last must be 0 or more"),
            (
                ("--user", "alice", "--model", "someone-elses-model"),
                "--model: This model is not available on this server.",
            ),
            ((), "the following arguments are required: --user"),
            (("--user", "alice", "--bogus"), "unrecognized arguments: --bogus"),
        ],
    )
    def test_bad_arguments_exit_1_with_a_clear_message(self, db, args, message):
        result = manage("chat", *args, db=db, stdin="hello\n")

        assert result.returncode == 1
        assert message in result.stderr
        assert query(db, "SELECT count(*) FROM conversations_message") == [(0,)]

    def test_another_users_session_is_not_found(self, db, fake):
        bobs = session_of(manage("chat", "--user", "bob", db=db, fake=fake, stdin="mine\n"))

        result = manage("chat", "--user", "alice", "--session", bobs, db=db, fake=fake, stdin="x\n")

        assert result.returncode == 1
        assert f"session {bobs} not found for user 'alice'" in result.stderr
        assert len(messages(db, bobs)) == 2
