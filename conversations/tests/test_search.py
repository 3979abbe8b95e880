"""GET /api/v1/search/: full-text search on PostgreSQL, substring fallback elsewhere."""

import io
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection
from django.utils import timezone

from conversations import search
from conversations.models import Message
from conversations.tests.factories import ChatSessionFactory, MessageFactory

URL = "/api/v1/search/"
postgres = pytest.mark.postgres


def hits(response):
    assert response.status_code == 200, response.content
    return response.json()["results"]


def contents(results):
    return [(r["kind"], r["seq"]) for r in results]


@pytest.fixture
def session(user):
    return ChatSessionFactory(user=user, title="Trip to Lisbon")


# --- On every database ------------------------------------------------------------------------
@pytest.mark.django_db
def test_search_finds_own_messages_with_session_seq_role_and_title(auth_client, session):
    MessageFactory(session=session, content="Where is the tower?")
    MessageFactory(session=session, role="assistant", content="The tower is in Belem.")
    results = hits(auth_client.get(URL, {"q": "belem"}))
    assert len(results) == 1
    (hit,) = results
    assert hit["kind"] == "message"
    assert hit["session"] == str(session.pk)
    assert hit["session_title"] == "Trip to Lisbon"
    assert hit["seq"] == 2
    assert hit["role"] == "assistant"
    assert "<mark>" in hit["snippet"].lower()
    assert "belem" in hit["snippet"].lower()


@pytest.mark.django_db
def test_search_never_finds_another_users_words(auth_client, session, other_user):
    theirs = ChatSessionFactory(user=other_user, title="secret zebra plans")
    MessageFactory(session=theirs, content="the zebra password is hunter2")
    MessageFactory(session=session, content="nothing about stripes")
    assert hits(auth_client.get(URL, {"q": "zebra"})) == []
    assert hits(auth_client.get(URL, {"q": "hunter2"})) == []


@pytest.mark.django_db
def test_search_session_filter_with_another_users_session_is_404(auth_client, other_user):
    theirs = ChatSessionFactory(user=other_user)
    MessageFactory(session=theirs, content="zebra")
    response = auth_client.get(URL, {"q": "zebra", "session": str(theirs.pk)})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


@pytest.mark.django_db
def test_search_matches_session_titles_as_session_hits(auth_client, user):
    titled = ChatSessionFactory(user=user, title="Quarterly budget review")
    results = hits(auth_client.get(URL, {"q": "budget"}))
    assert [(r["kind"], r["session"], r["seq"], r["role"]) for r in results] == [
        ("session", str(titled.pk), None, None)
    ]
    assert "<mark>" in results[0]["snippet"]


@pytest.mark.django_db
def test_search_filters_by_session_role_and_time(auth_client, user, session):
    other = ChatSessionFactory(user=user, title="Other")
    MessageFactory(session=session, content="apple one")
    MessageFactory(session=session, role="assistant", content="apple two")
    MessageFactory(session=other, content="apple three")
    old = MessageFactory(session=other, content="apple four")
    Message.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))

    by_session = hits(auth_client.get(URL, {"q": "apple", "session": str(session.pk)}))
    assert sorted(r["seq"] for r in by_session) == [1, 2]
    assert {r["session"] for r in by_session} == {str(session.pk)}

    by_role = hits(auth_client.get(URL, {"q": "apple", "role": "assistant"}))
    assert [(r["session"], r["seq"]) for r in by_role] == [(str(session.pk), 2)]

    since = (timezone.now() - timedelta(days=1)).isoformat()
    recent = hits(auth_client.get(URL, {"q": "apple", "since": since}))
    assert len(recent) == 3
    assert all(r["seq"] != 2 or r["session"] == str(session.pk) for r in recent)
    older = hits(auth_client.get(URL, {"q": "apple", "until": since}))
    assert [(r["session"], r["seq"]) for r in older] == [(str(other.pk), 2)]


@pytest.mark.django_db
def test_search_pages_with_keyset_cursor_visit_every_hit_once(auth_client, session):
    for i in range(7):
        MessageFactory(session=session, content=f"kiwi number {i}" + " kiwi" * (i % 3))
    seen, url, pages = [], URL + "?q=kiwi&limit=3", 0
    while url:
        body = auth_client.get(url).json()
        pages += 1
        assert body["has_more"] == (body["next"] is not None)
        seen.extend(r["seq"] for r in body["results"])
        url = body["next"]
    assert pages == 3
    assert sorted(seen) == list(range(1, 8))
    assert len(seen) == len(set(seen))


@pytest.mark.django_db
def test_search_next_url_keeps_the_filters(auth_client, session):
    for _ in range(3):
        MessageFactory(session=session, content="plum")
    body = auth_client.get(URL, {"q": "plum", "limit": 1, "role": "user"}).json()
    query = parse_qs(urlparse(body["next"]).query)
    assert query["q"] == ["plum"]
    assert query["role"] == ["user"]
    assert "cursor" in query


@pytest.mark.django_db
@pytest.mark.parametrize("q", ["", "   ", "***", '""', "-banana", "-banana -cherry"])
def test_search_query_with_nothing_to_search_is_400(auth_client, q):
    response = auth_client.get(URL, {"q": q})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "validation_error"


@pytest.mark.django_db
def test_search_without_q_is_400(auth_client):
    assert auth_client.get(URL).status_code == 400


@pytest.mark.django_db
def test_search_rejects_a_forged_cursor(auth_client, session):
    response = auth_client.get(URL, {"q": "x", "cursor": "bm90LWEtY3Vyc29y"})
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"cursor": ["Invalid cursor."]}


@pytest.mark.django_db
def test_search_snippet_escapes_html_of_the_content(auth_client, session):
    MessageFactory(session=session, content="<script>alert(1)</script> mango for a < b")
    (hit,) = hits(auth_client.get(URL, {"q": "mango"}))
    assert "<script" not in hit["snippet"]
    assert "a &lt; b" in hit["snippet"]
    assert hit["snippet"].replace("<mark>", "").replace("</mark>", "").count("<") == 0
    assert "<mark>mango</mark>" in hit["snippet"]


@pytest.mark.django_db
def test_search_needs_authentication(api_client):
    assert api_client.get(URL, {"q": "x"}).status_code == 401


def test_parse_query_reads_phrases_prefixes_and_exclusions():
    terms = search.parse_query('cats "red fox" jump* -dog')
    assert terms == [
        search.Term("cats"),
        search.Term("red fox", phrase=True),
        search.Term("jump", prefix=True),
        search.Term("dog", negated=True),
    ]


# --- PostgreSQL full-text search -------------------------------------------------------------
@postgres
@pytest.mark.django_db
def test_search_ranks_denser_matches_first(auth_client, session):
    MessageFactory(session=session, content="a single mention of rhubarb among many other words")
    MessageFactory(session=session, content="rhubarb rhubarb rhubarb")
    MessageFactory(session=session, content="rhubarb pie with rhubarb")
    results = hits(auth_client.get(URL, {"q": "rhubarb"}))
    assert [r["seq"] for r in results] == [2, 3, 1]
    ranks = [r["rank"] for r in results]
    assert ranks == sorted(ranks, reverse=True)
    assert ranks[0] > ranks[-1] > 0


@postgres
@pytest.mark.django_db
def test_search_phrase_matches_words_in_order_only(auth_client, session):
    MessageFactory(session=session, content="the red fox runs")
    MessageFactory(session=session, content="the fox is red")
    assert contents(hits(auth_client.get(URL, {"q": '"red fox"'}))) == [("message", 1)]
    assert sorted(r["seq"] for r in hits(auth_client.get(URL, {"q": "red fox"}))) == [1, 2]


@postgres
@pytest.mark.django_db
def test_search_prefix_matches_word_starts_and_operators_stay_text(auth_client, session):
    MessageFactory(session=session, content="jumping jacks")
    MessageFactory(session=session, content="a jumper")
    MessageFactory(session=session, content="unjumpable")
    assert sorted(r["seq"] for r in hits(auth_client.get(URL, {"q": "jump*"}))) == [1, 2]
    # tsquery syntax in the user's text is never parsed as operators.
    for q in ["jump:*|x*", "'jump*", "jump\\*", "(jump*", "a&b*", "!jump*"]:
        assert auth_client.get(URL, {"q": q}).status_code in (200, 400), q


@postgres
@pytest.mark.django_db
def test_search_exclusion_drops_messages_with_the_word(auth_client, session):
    MessageFactory(session=session, content="pear and fig")
    MessageFactory(session=session, content="pear alone")
    assert contents(hits(auth_client.get(URL, {"q": "pear -fig"}))) == [("message", 2)]


@postgres
@pytest.mark.django_db
def test_search_snippet_is_a_ts_headline_excerpt_of_a_long_message(auth_client, session):
    filler = " ".join(f"word{i}" for i in range(200))
    MessageFactory(session=session, content=f"{filler} walnut {filler}")
    (hit,) = hits(auth_client.get(URL, {"q": "walnut"}))
    assert "<mark>walnut</mark>" in hit["snippet"]
    assert len(hit["snippet"].split()) <= 2 * search.SNIPPET_WORDS + 2


@postgres
@pytest.mark.django_db
def test_search_is_any_language_by_default(auth_client, session):
    MessageFactory(session=session, content="Привет, как дела? Ελληνικά κείμενα")
    assert len(hits(auth_client.get(URL, {"q": "привет"}))) == 1
    assert len(hits(auth_client.get(URL, {"q": "ελληνικά"}))) == 1


@postgres
@pytest.mark.django_db
def test_search_query_uses_the_gin_expression_index(session):
    MessageFactory(session=session, content="quince")
    query, params = search._tsquery_sql(search.parse_query("quince"))
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            f"EXPLAIN SELECT id FROM conversations_message "
            f"WHERE {search.tsvector_sql('content')} @@ {query}",
            params,
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "message_content_search_idx" in plan


@postgres
@pytest.mark.django_db
def test_search_stop_words_only_is_400_with_a_language_configuration(auth_client, settings):
    settings.CHATENGINE_SEARCH_CONFIG = "english"
    response = auth_client.get(URL, {"q": "the and of"})
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"q": ["The query has no searchable word."]}


def _index_definitions() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = ANY(%s) ORDER BY indexname",
            [list(search.SEARCH_INDEXES)],
        )
        return [row[0] for row in cursor.fetchall()]


@postgres
@pytest.mark.django_db(transaction=True)
def test_rebuild_search_index_builds_with_the_configured_config(settings):
    from django.core.management import call_command

    assert all("'simple'::regconfig" in d for d in _index_definitions())
    settings.CHATENGINE_SEARCH_CONFIG = "english"
    try:
        call_command("rebuild_search_index", stdout=io.StringIO())
        definitions = _index_definitions()
        assert len(definitions) == 2
        assert all("'english'::regconfig" in d for d in definitions)
    finally:
        settings.CHATENGINE_SEARCH_CONFIG = "simple"
        call_command("rebuild_search_index", stdout=io.StringIO())
    assert all("'simple'::regconfig" in d for d in _index_definitions())


@postgres
@pytest.mark.django_db
def test_search_ranks_only_the_newest_matches_of_a_very_common_word(auth_client, session, settings):
    settings.CHATENGINE_SEARCH_MAX_RANKED = 3
    MessageFactory(session=session, content="fig fig fig fig")  # densest, but the oldest
    for _ in range(4):
        MessageFactory(session=session, content="fig and other words here")
    MessageFactory(session=session, content="fig fig")  # the newest
    results = hits(auth_client.get(URL, {"q": "fig"}))
    assert [r["seq"] for r in results] == [6, 5, 4]  # the 3 newest, best first
