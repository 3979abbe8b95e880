"""Idempotency-Key: a retry returns the original result, never a second message."""

import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from conversations.idempotency import prune_idempotency_keys
from conversations.models import ChatSession, IdempotencyKey, Message
from conversations.tests.factories import ChatSessionFactory
from tests.reliability import urls_slow_operation
from tests.reliability.conftest import (
    client_for,
    envelope,
    raw_pg,
    wait_until,
    waiting_backends,
)


def messages_url(session) -> str:
    return f"/api/v1/sessions/{session.pk}/messages/"


def post(client, session, body, key=None, url=None):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post(url or messages_url(session), body, format="json", **headers)


def assert_counters_match(session) -> None:
    session.refresh_from_db()
    seqs = list(
        Message.objects.filter(session=session).order_by("seq").values_list("seq", flat=True)
    )
    assert seqs == list(range(1, len(seqs) + 1))
    assert session.message_count == len(seqs) == session.last_seq


BODY = {"role": "user", "content": "Book the 9:40 train"}


@pytest.mark.django_db
class TestAppendWithAKey:
    def test_a_retry_with_the_same_key_and_body_replays_the_original(self, user):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        first = post(client, session, BODY, key="k-1")
        again = post(client, session, BODY, key="k-1")

        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()  # same id, seq, created_at
        assert again["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first
        assert Message.objects.filter(session=session).count() == 1
        assert_counters_match(session)

    def test_key_order_and_spacing_in_the_body_do_not_matter(self, user):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        post(client, session, BODY, key="k")
        reordered = client.post(
            messages_url(session),
            '{ "content": "Book the 9:40 train",  "role": "user" }',
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY="k",
        )
        assert reordered.status_code == 201
        assert reordered["Idempotent-Replayed"] == "true"
        assert Message.objects.filter(session=session).count() == 1

    def test_the_same_key_with_another_body_is_a_conflict_and_changes_nothing(self, user):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        post(client, session, BODY, key="k-2")
        response = post(client, session, {**BODY, "content": "Book the 10:40"}, key="k-2")
        error = envelope(response, 409, "conflict")
        assert "different request" in error["message"]
        assert Message.objects.filter(session=session).count() == 1

    def test_the_same_key_on_another_session_is_a_conflict(self, user):
        a, b = ChatSessionFactory(user=user), ChatSessionFactory(user=user)
        client = client_for(user)
        post(client, a, BODY, key="k-3")
        envelope(post(client, b, BODY, key="k-3"), 409, "conflict")
        assert Message.objects.filter(session=b).count() == 0

    def test_keys_are_scoped_per_user(self, user, other_user):
        mine, theirs = ChatSessionFactory(user=user), ChatSessionFactory(user=other_user)
        first = post(client_for(user), mine, BODY, key="shared-key")
        second = post(client_for(other_user), theirs, BODY, key="shared-key")
        assert first.status_code == second.status_code == 201
        assert "Idempotent-Replayed" not in second
        assert second.json()["session"] == str(theirs.pk)
        assert IdempotencyKey.objects.filter(key="shared-key").count() == 2

    def test_requests_without_a_key_are_not_deduplicated(self, user):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        post(client, session, BODY)
        post(client, session, BODY)
        assert Message.objects.filter(session=session).count() == 2
        assert IdempotencyKey.objects.count() == 0

    @pytest.mark.parametrize(
        "key", ["", "x" * 256, "caf\u00e9", "tab\there", "new\nline", "\x7f", "trailing\n"]
    )
    def test_an_invalid_key_is_a_validation_error_and_nothing_is_stored(self, user, key):
        session = ChatSessionFactory(user=user)
        error = envelope(post(client_for(user), session, BODY, key=key), 400, "validation_error")
        assert "Idempotency-Key" in error["details"]
        assert Message.objects.count() == 0
        assert IdempotencyKey.objects.count() == 0

    def test_the_longest_valid_key_works(self, user):
        session = ChatSessionFactory(user=user)
        key = "~" * 255
        assert post(client_for(user), session, BODY, key=key).status_code == 201
        assert post(client_for(user), session, BODY, key=key)["Idempotent-Replayed"] == "true"

    def test_a_failed_request_does_not_use_up_its_key(self, user):
        session = ChatSessionFactory(user=user, archived=True)
        client = client_for(user)
        envelope(post(client, session, BODY, key="k-4"), 409, "conflict")
        envelope(post(client, session, {"role": "user"}, key="k-4"), 400, "validation_error")
        assert IdempotencyKey.objects.count() == 0

        ChatSession.objects.filter(pk=session.pk).update(archived=False)
        retried = post(client, session, BODY, key="k-4")
        assert retried.status_code == 201
        assert "Idempotent-Replayed" not in retried

    def test_another_users_session_stays_404_with_a_key(self, user, other_user):
        theirs = ChatSessionFactory(user=other_user)
        envelope(post(client_for(user), theirs, BODY, key="k-5"), 404, "not_found")
        assert IdempotencyKey.objects.count() == 0


@pytest.mark.django_db
class TestRetention:
    def age(self, user, key, hours):
        IdempotencyKey.objects.filter(user=user, key=key).update(
            created_at=timezone.now() - timedelta(hours=hours)
        )

    def test_a_key_still_replays_after_23_hours_59_minutes(self, user):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        first = post(client, session, BODY, key="old")
        self.age(user, "old", 23 + 59 / 60)
        again = post(client, session, BODY, key="old")
        assert again["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]

    def test_prune_removes_only_keys_past_the_ttl(self, user):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        post(client, session, BODY, key="fresh")
        post(client, session, {**BODY, "content": "2"}, key="stale")
        self.age(user, "fresh", 23)
        self.age(user, "stale", 25)
        assert prune_idempotency_keys() == 1
        assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["fresh"]

    def test_the_prune_command_never_goes_below_a_day(self, user, capsys):
        session = ChatSessionFactory(user=user)
        post(client_for(user), session, BODY, key="k")
        self.age(user, "k", 2)
        call_command("prune_idempotency_keys", "--older-than-hours", "1")
        assert "Deleted 0 " in capsys.readouterr().out
        assert IdempotencyKey.objects.count() == 1

    def test_an_expired_key_that_was_not_pruned_yet_is_free_again(self, user):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        post(client, session, BODY, key="k")
        self.age(user, "k", 25)
        again = post(client, session, {**BODY, "content": "new"}, key="k")
        assert again.status_code == 201
        assert "Idempotent-Replayed" not in again
        assert Message.objects.filter(session=session).count() == 2


def session_url(session) -> str:
    return f"/api/v1/sessions/{session.pk}/"


@pytest.mark.django_db
class TestDeletedSessions:
    """A deleted session's content never comes back through a stored response."""

    def test_a_retry_after_the_session_was_deleted_is_a_404_not_a_replay(self, user):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        assert post(client, session, BODY, key="k").status_code == 201
        assert client.delete(session_url(session)).status_code == 204

        retry = post(client, session, BODY, key="k")

        envelope(retry, 404, "not_found")
        assert "Idempotent-Replayed" not in retry
        assert not IdempotencyKey.objects.exists()

    def test_a_reply_retried_after_the_session_was_deleted_is_a_404(self, user):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        url = f"/api/v1/sessions/{session.pk}/reply/"
        body = {"content": "Summarise my medical history"}
        assert post(client, session, body, key="r", url=url).status_code == 201
        assert client.delete(session_url(session)).status_code == 204

        envelope(post(client, session, body, key="r", url=url), 404, "not_found")
        assert not IdempotencyKey.objects.exists()

    def test_deleting_one_session_keeps_the_keys_of_the_others(self, user):
        gone, kept = ChatSessionFactory(user=user), ChatSessionFactory(user=user)
        client = client_for(user)
        post(client, gone, BODY, key="k-gone")
        first = post(client, kept, BODY, key="k-kept")
        client.delete(session_url(gone))
        again = post(client, kept, BODY, key="k-kept")
        assert again["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["k-kept"]

    def test_prune_sessions_deletes_the_keys_of_the_sessions_it_prunes(self, user):
        old, recent = ChatSessionFactory(user=user), ChatSessionFactory(user=user)
        client = client_for(user)
        post(client, old, BODY, key="k-old")
        post(client, recent, BODY, key="k-recent")
        ChatSession.objects.filter(pk=old.pk).update(
            updated_at=timezone.now() - timedelta(days=100)
        )
        call_command("prune_sessions", "--older-than", "90d", verbosity=0)

        envelope(post(client, old, BODY, key="k-old"), 404, "not_found")
        assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["k-recent"]

    def test_a_key_on_another_users_session_is_tied_to_nothing(self, user, other_user):
        theirs = ChatSessionFactory(user=other_user)
        mine = ChatSessionFactory(user=user)
        client = client_for(user)
        envelope(post(client, theirs, BODY, key="k"), 404, "not_found")
        post(client, mine, BODY, key="k2")
        assert list(IdempotencyKey.objects.values_list("session_id", flat=True)) == [mine.pk]


def _in_threads(count, target):
    errors: list[BaseException] = []

    def run(i):
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    return threads, errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
class TestConcurrentDuplicates:
    def test_a_duplicate_waiting_on_the_key_replays_once_the_first_commits(self, user):
        """Deterministic: the first request is held inside its transaction (after claiming the
        key) by a lock on the session row; the duplicate is seen waiting on the key's unique
        index; then both are let go."""
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        responses = {}

        def request(i):
            responses[i] = post(client, session, BODY, key="race")

        threads, errors = _in_threads(2, request)
        with raw_pg() as pg, raw_pg() as holder:
            with holder.transaction():
                holder.execute(
                    "SELECT 1 FROM conversations_chatsession WHERE id = %s FOR UPDATE",
                    [session.pk],
                )
                threads[0].start()
                wait_until(lambda: waiting_backends(pg) == 1, what="first request on the row lock")
                threads[1].start()
                wait_until(lambda: waiting_backends(pg) == 2, what="duplicate on the key")
            for t in threads:
                t.join(timeout=30)

        assert errors == []
        assert responses[0].status_code == responses[1].status_code == 201
        assert responses[0].json() == responses[1].json()
        assert responses[1]["Idempotent-Replayed"] == "true"
        assert Message.objects.filter(session=session).count() == 1
        assert_counters_match(session)

    def test_eight_simultaneous_requests_with_one_key_make_one_message(self, user):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        barrier = threading.Barrier(8)
        responses = []

        def request(i):
            barrier.wait(timeout=10)
            responses.append(post(client, session, BODY, key="burst"))

        threads, errors = _in_threads(8, request)
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)

        assert errors == []
        assert [r.status_code for r in responses] == [201] * 8
        assert len({r.json()["id"] for r in responses}) == 1
        assert sum(r.get("Idempotent-Replayed") == "true" for r in responses) == 7
        assert Message.objects.filter(session=session).count() == 1
        assert_counters_match(session)


SLOW_URLS = "tests.reliability.urls_slow_operation"


def slow_url(session) -> str:
    return f"/api/v1/sessions/{session.pk}/slow-reply/"


@pytest.mark.urls(SLOW_URLS)
@pytest.mark.django_db
class TestLongOperations:
    """`@idempotent(atomic=False)`, the mode for replies: claimed first, stored at the end."""

    @pytest.fixture(autouse=True)
    def _open_gate(self):
        urls_slow_operation.GATE.set()
        urls_slow_operation.ENTERED.clear()
        yield
        urls_slow_operation.GATE.set()

    def test_a_retry_after_completion_replays(self, user):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        first = post(client, session, {"content": "hi"}, key="r", url=slow_url(session))
        again = post(client, session, {"content": "hi"}, key="r", url=slow_url(session))
        assert first.status_code == 201
        assert again["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        assert Message.objects.filter(session=session).count() == 1

    def test_a_failed_operation_releases_its_key(self, user):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        failed = post(
            client, session, {"content": "hi", "fail": True}, key="r", url=slow_url(session)
        )
        envelope(failed, 502, "llm_upstream_error")
        assert IdempotencyKey.objects.count() == 0
        retried = post(
            client, session, {"content": "hi", "fail": True}, key="r", url=slow_url(session)
        )
        envelope(retried, 502, "llm_upstream_error")  # ran again, not a replay or a 409

    def test_a_claim_left_by_a_dead_worker_is_taken_over_after_the_lease(self, user, settings):
        session = ChatSessionFactory(user=user)
        client = client_for(user)
        body = {"content": "hi"}
        stale = IdempotencyKey.objects.create(
            user=user,
            key="r",
            fingerprint=_fingerprint(slow_url(session), body),
            locked_at=timezone.now()
            - timedelta(seconds=settings.CHATENGINE_IDEMPOTENCY_LEASE_SECONDS + 1),
        )
        response = post(client, session, body, key="r", url=slow_url(session))
        assert response.status_code == 201
        stale.refresh_from_db()
        assert stale.response_status == 201

    def test_a_fresh_claim_is_in_progress(self, user):
        session = ChatSessionFactory(user=user)
        body = {"content": "hi"}
        IdempotencyKey.objects.create(
            user=user,
            key="r",
            fingerprint=_fingerprint(slow_url(session), body),
            locked_at=timezone.now(),
        )
        error = envelope(
            post(client_for(user), session, body, key="r", url=slow_url(session)), 409, "conflict"
        )
        assert "in progress" in error["message"]


def _fingerprint(path, body):
    from conversations.idempotency import request_fingerprint

    return request_fingerprint(method="POST", path=path, body=body)


@contextmanager
def keyed_operation_running(client, session, body):
    """Send a POST with the key "r" that blocks inside the slow view; yield once it is inside
    (a dict that holds its response afterwards); let it finish on leaving."""
    urls_slow_operation.GATE.clear()
    urls_slow_operation.ENTERED.clear()
    responses = {}

    def first(_):
        responses["first"] = post(client, session, body, key="r", url=slow_url(session))

    threads, errors = _in_threads(1, first)
    threads[0].start()
    try:
        assert urls_slow_operation.ENTERED.wait(timeout=30)
        yield responses
    finally:
        urls_slow_operation.GATE.set()
        threads[0].join(timeout=30)
    assert errors == []


@pytest.mark.urls(SLOW_URLS)
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_duplicate_of_a_running_operation_is_told_it_is_in_progress(user):
    session = ChatSessionFactory(user=user)
    client = client_for(user)
    with keyed_operation_running(client, session, {"content": "hi"}) as responses:
        duplicate = post(client, session, {"content": "hi"}, key="r", url=slow_url(session))
        error = envelope(duplicate, 409, "conflict")
        assert "in progress" in error["message"]
        assert duplicate["Retry-After"] == "1"
    assert responses["first"].status_code == 201
    retry = post(client, session, {"content": "hi"}, key="r", url=slow_url(session))
    assert retry["Idempotent-Replayed"] == "true"
    assert Message.objects.filter(session=session).count() == 1


@pytest.mark.urls(SLOW_URLS)
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_session_deleted_while_its_keyed_operation_runs_takes_the_key_with_it(user):
    """The delete does not wait for the operation; its response is never stored for a retry."""
    session = ChatSessionFactory(user=user)
    client = client_for(user)
    with keyed_operation_running(client, session, {"content": "secret"}) as responses:
        assert client.delete(session_url(session)).status_code == 204
    assert responses["first"].status_code == 201  # it had finished its work
    assert not IdempotencyKey.objects.exists()
    retry = post(client, session, {"content": "secret"}, key="r", url=slow_url(session))
    envelope(retry, 404, "not_found")


def test_the_openapi_schema_documents_the_header_with_the_rule_the_server_applies():
    import re

    from drf_spectacular.generators import SchemaGenerator

    from conversations.idempotency import _VALID_KEY

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/sessions/{session_id}/messages/"]["post"]
    (header,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header"
    assert header.get("required", False) is False
    documented = re.compile(header["schema"]["pattern"])
    for key in ["a", "~" * 255, " x ", "", "x" * 256, "caf\u00e9", "a\tb", "\x7f", "k\n"]:
        assert bool(documented.fullmatch(key)) == bool(_VALID_KEY.fullmatch(key)), repr(key)
