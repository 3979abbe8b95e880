"""Full-text search over a user's own messages and session titles (a selector: reads only).

PostgreSQL: `to_tsvector(<CHATENGINE_SEARCH_CONFIG>, content)` (and `title`), served by the GIN
expression indexes of migration 0010, ranked by `ts_rank`, snippets by `ts_headline`. The index
lives in the same database as the rows, so it can never drift out of step with them.
Any other database (SQLite for `make run`): a plain case-insensitive substring match with the
same API; every hit ranks 0, newest first.

The query language is small and never reaches SQL as text: words (all must match), `"exact
phrase"`, `prefix*` and `-excluded`. Each term becomes its own `plainto_tsquery` /
`phraseto_tsquery` / `to_tsquery` call on a bound parameter; a prefix is quoted as a tsquery
lexeme first, so no operator in the user's text is ever parsed as one.
"""

import base64
import binascii
import html
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Q

from chatengine.exceptions import ValidationFailed
from conversations.models import ChatSession, Message
from conversations.selectors import Page

HitKind = Literal["message", "session"]

# One term: an optional "-", then a "quoted phrase" (closing quote optional) or a bare word.
_TERM = re.compile(r'(-?)"([^"]*)"?|(-?)([^\s"]+)')
SNIPPET_WORDS = 30
_START, _STOP = "\x02", "\x03"  # ts_headline's markers; removed from the text beforehand


@dataclass(frozen=True)
class Term:
    text: str
    phrase: bool = False
    prefix: bool = False
    negated: bool = False


@dataclass(frozen=True)
class SearchHit:
    kind: HitKind
    session_id: uuid.UUID
    session_title: str
    message_id: int | None
    seq: int | None
    role: str | None
    snippet: str  # HTML: the text escaped, each match in <mark>…</mark>
    rank: float
    created_at: datetime


def parse_query(q: str) -> list[Term]:
    """The terms of `q`; a 400 when nothing searchable is left (no positive word)."""
    terms = []
    for match in _TERM.finditer(q):
        if match.group(2) is not None:
            text = match.group(2).strip()
            if text:
                terms.append(Term(text=text, phrase=True, negated=bool(match.group(1))))
            continue
        word, negated = match.group(4), bool(match.group(3))
        prefix = word.endswith("*")
        word = word.rstrip("*")
        if word:
            terms.append(Term(text=word, prefix=prefix, negated=negated))
    if not any(not t.negated for t in terms):
        raise _nothing_to_search()
    return terms


def _nothing_to_search() -> ValidationFailed:
    return ValidationFailed(
        "q: nothing to search for; give at least one word that is not excluded.",
        details={"q": ["The query has no searchable word."]},
    )


def search(
    *,
    user: AbstractBaseUser,
    q: str,
    limit: int,
    cursor: str | None = None,
    session: ChatSession | None = None,
    role: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[SearchHit]:
    """One keyset page of the user's hits for `q`, best first (`session`: one of the user's,
    already resolved by the caller; `since` inclusive, `until` exclusive, on created_at)."""
    terms = parse_query(q)
    after = _decode_cursor(cursor) if cursor else None
    search_page = _search_postgresql if connection.vendor == "postgresql" else _search_substring
    hits = search_page(
        user=user,
        terms=terms,
        limit=limit,
        after=after,
        session=session,
        role=role,
        since=since,
        until=until,
    )
    has_more = len(hits) > limit
    hits = hits[:limit]
    next_params = {"cursor": _encode_cursor(hits[-1])} if has_more else None
    return Page(items=hits, has_more=has_more, next_params=next_params)


# --- Cursor: (rank, key) of the last hit --------------------------------------------------------
def _key(kind: HitKind, ident: int | uuid.UUID) -> str:
    """The tie-breaker, ordered as text: `m` + zero-padded message id, `s` + session id hex."""
    return f"m{ident:019d}" if kind == "message" else f"s{ident.hex}"


def _encode_cursor(hit: SearchHit) -> str:
    key = _key(hit.kind, hit.message_id if hit.kind == "message" else hit.session_id)
    raw = f"{hit.rank!r}|{key}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


_CURSOR_KEY = re.compile(r"^(m\d{19}|s[0-9a-f]{32})$")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        rank, key = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
        value = float(rank)
        if not _CURSOR_KEY.match(key) or value != value or abs(value) > 1e30:
            raise ValueError(cursor)
        return value, key
    except (ValueError, binascii.Error, UnicodeError):
        raise ValidationFailed(
            "cursor: not a cursor this API returned.", details={"cursor": ["Invalid cursor."]}
        ) from None


# --- PostgreSQL: full-text search ------------------------------------------------------------
def search_config() -> str:
    """The text search configuration, checked to be a plain name: it is written into the SQL
    (not bound) so that the query's expression is exactly the indexed one."""
    name = settings.CHATENGINE_SEARCH_CONFIG
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"CHATENGINE_SEARCH_CONFIG is not a configuration name: {name!r}")
    return name


def tsvector_sql(column: str) -> str:
    """The indexed expression (migration 0010 and the queries use this one function)."""
    return f"to_tsvector('{search_config()}'::regconfig, {column})"


# index name -> (table, column): the GIN indexes on tsvector_sql(column).
SEARCH_INDEXES = {
    "message_content_search_idx": (Message._meta.db_table, "content"),
    "session_title_search_idx": (ChatSession._meta.db_table, "title"),
}


def create_search_indexes(conn) -> None:
    """Build the search indexes on `conn` (PostgreSQL, outside a transaction: CONCURRENTLY)."""
    with conn.cursor() as cursor:
        for name, (table, column) in SEARCH_INDEXES.items():
            cursor.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                f"ON {table} USING gin ({tsvector_sql(column)})"
            )


def drop_search_indexes(conn) -> None:
    with conn.cursor() as cursor:
        for name in SEARCH_INDEXES:
            cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def _tsquery_sql(terms: list[Term]) -> tuple[str, list[str]]:
    """`(t1 && t2 && !!t3)` with one bound parameter per term."""
    config = f"'{search_config()}'::regconfig"
    parts, params = [], []
    for term in terms:
        if term.phrase:
            part = f"phraseto_tsquery({config}, %s)"
            params.append(term.text)
        elif term.prefix:
            # A quoted lexeme with :* — the user's text stays a lexeme, never an operator.
            part = f"to_tsquery({config}, %s)"
            quoted = term.text.replace("\\", "\\\\").replace("'", "''")
            params.append(f"'{quoted}':*")
        else:
            part = f"plainto_tsquery({config}, %s)"
            params.append(term.text)
        parts.append(f"!!{part}" if term.negated else part)
    return "(" + " && ".join(parts) + ")", params


def _search_postgresql(
    *,
    user: AbstractBaseUser,
    terms: list[Term],
    limit: int,
    after: tuple[float, str] | None,
    session: ChatSession | None,
    role: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[SearchHit]:
    # Ranking reads every candidate row (ts_rank has no index), so a word in a large share of
    # the user's messages is ranked among its newest CHATENGINE_SEARCH_MAX_RANKED matches
    # only: the cost stays bounded however common the word (bench/search_bench.py).
    query, query_params = _tsquery_sql(terms)
    with connection.cursor() as cursor:
        # Words the configuration drops (punctuation only, stop words of a language
        # configuration) leave an empty query, or one of exclusions only: both match nothing
        # useful and cannot use the index.
        cursor.execute(
            f"SELECT numnode(q), querytree(q) FROM (SELECT {query} AS q) AS t", query_params
        )
        nodes, tree = cursor.fetchone()
    if nodes == 0 or tree == "T":
        raise _nothing_to_search()

    message_table = Message._meta.db_table
    session_table = ChatSession._meta.db_table
    # The matches come from one scan of the GIN index, materialized, and only then are kept
    # to the user's sessions (a hash join): left to itself the planner probes the index once
    # per session of the user (bench: 6 s instead of 0.4 s for a common word, 40 ms instead
    # of 0.1 ms for a rare one).
    match_where = [f"{tsvector_sql('m.content')} @@ {query}"]
    match_params: list = [*query_params]
    session_where = ["s.user_id = %s", f"{tsvector_sql('s.title')} @@ {query}"]
    session_params: list = [user.pk, *query_params]
    if session is not None:
        match_where.append("m.session_id = %s")
        match_params.append(session.pk)
        session_where.append("s.id = %s")
        session_params.append(session.pk)
    if role is not None:
        match_where.append("m.role = %s")
        match_params.append(role)
        session_where.append("false")  # a title has no role
    for column, op, value in (("created_at", ">=", since), ("created_at", "<", until)):
        if value is not None:
            match_where.append(f"m.{column} {op} %s")
            match_params.append(value)
            session_where.append(f"s.{column} {op} %s")
            session_params.append(value)
    keyset, keyset_params = "", []
    if after is not None:
        keyset = 'WHERE (hits.rank, hits.key) < (%s::real, %s COLLATE "C")'
        keyset_params = list(after)
    sql = f"""
        WITH matched AS MATERIALIZED (
            SELECT m.id, m.session_id FROM {message_table} m
            WHERE {" AND ".join(match_where)}
        ), candidates AS (
            SELECT matched.id FROM matched JOIN {session_table} s ON s.id = matched.session_id
            WHERE s.user_id = %s
            ORDER BY matched.id DESC
            LIMIT %s
        )
        SELECT hits.kind, hits.message_id, hits.session_id, hits.rank
        FROM (
            SELECT 'message' AS kind, m.id AS message_id, m.session_id,
                   ts_rank({tsvector_sql("m.content")}, {query}) AS rank,
                   ('m' || lpad(m.id::text, 19, '0')) COLLATE "C" AS key
            FROM candidates JOIN {message_table} m ON m.id = candidates.id
            UNION ALL
            SELECT 'session', NULL, s.id,
                   ts_rank({tsvector_sql("s.title")}, {query}),
                   ('s' || replace(s.id::text, '-', '')) COLLATE "C"
            FROM {session_table} s
            WHERE {" AND ".join(session_where)}
        ) AS hits
        {keyset}
        ORDER BY hits.rank DESC, hits.key DESC
        LIMIT %s
    """
    params = [
        *match_params,
        user.pk,
        settings.CHATENGINE_SEARCH_MAX_RANKED,
        *query_params,
        *query_params,
        *session_params,
        *keyset_params,
        limit + 1,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return _with_headlines(rows, query=query, query_params=query_params)


def _with_headlines(rows: list[tuple], *, query: str, query_params: list[str]) -> list[SearchHit]:
    """The page's hits with their snippets: ts_headline runs on these rows only."""
    config = f"'{search_config()}'::regconfig"
    options = (
        f"StartSel={_START}, StopSel={_STOP}, MaxWords={SNIPPET_WORDS}, "
        f"MinWords={SNIPPET_WORDS // 2}"
    )

    def headline(column: str) -> str:
        clean = f"translate({column}, E'\\x02\\x03', '')"
        return f"ts_headline({config}, {clean}, {query}, %s)"

    message_ids = [row[1] for row in rows if row[0] == "message"]
    session_ids = list({row[2] for row in rows})
    messages, sessions = {}, {}
    with connection.cursor() as cursor:
        if message_ids:
            cursor.execute(
                f"SELECT id, seq, role, created_at, {headline('content')} "
                f"FROM {Message._meta.db_table} WHERE id = ANY(%s)",
                [*query_params, options, message_ids],
            )
            messages = {row[0]: row[1:] for row in cursor.fetchall()}
        cursor.execute(
            f"SELECT id, title, created_at, {headline('title')} "
            f"FROM {ChatSession._meta.db_table} WHERE id = ANY(%s)",
            [*query_params, options, session_ids],
        )
        sessions = {row[0]: row[1:] for row in cursor.fetchall()}
    hits = []
    for kind, message_id, session_id, rank in rows:
        title, session_created_at, title_headline = sessions[session_id]
        if kind == "message":
            seq, role, created_at, text = messages[message_id]
        else:
            seq = role = None
            created_at, text = session_created_at, title_headline
        hits.append(
            SearchHit(
                kind=kind,
                session_id=session_id,
                session_title=title,
                message_id=message_id,
                seq=seq,
                role=role,
                snippet=_marked_html(text),
                rank=rank,
                created_at=created_at,
            )
        )
    return hits


def _marked_html(text: str) -> str:
    """ts_headline's output (plain text with our markers) as escaped HTML with <mark>."""
    out = html.escape(text, quote=False)
    return out.replace(_START, "<mark>").replace(_STOP, "</mark>")


# --- Any other database: substring fallback --------------------------------------------------
def _search_substring(
    *,
    user: AbstractBaseUser,
    terms: list[Term],
    limit: int,
    after: tuple[float, str] | None,
    session: ChatSession | None,
    role: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[SearchHit]:
    """Every positive term a case-insensitive substring, no excluded one; newest first.

    Hits rank 0 (the cursor's key alone orders them): session titles (`s…` keys) first, then
    messages by descending id.
    """

    def matching(field: str) -> Q:
        condition = Q()
        for term in terms:
            found = Q(**{f"{field}__icontains": term.text})
            condition &= ~found if term.negated else found
        return condition

    after_key = after[1] if after is not None else None
    hits: list[SearchHit] = []
    if role is None and (after_key is None or after_key.startswith("s")):
        sessions = ChatSession.objects.filter(matching("title"), user=user)
        if session is not None:
            sessions = sessions.filter(pk=session.pk)
        if since is not None:
            sessions = sessions.filter(created_at__gte=since)
        if until is not None:
            sessions = sessions.filter(created_at__lt=until)
        if after_key is not None:
            sessions = sessions.filter(pk__lt=uuid.UUID(after_key[1:]))
        for row in sessions.order_by("-pk")[: limit + 1]:
            hits.append(_substring_hit(terms, row.title, session=row))
    if len(hits) <= limit:
        messages = Message.objects.filter(matching("content"), session__user=user)
        if session is not None:
            messages = messages.filter(session=session)
        if role is not None:
            messages = messages.filter(role=role)
        if since is not None:
            messages = messages.filter(created_at__gte=since)
        if until is not None:
            messages = messages.filter(created_at__lt=until)
        if after_key is not None and after_key.startswith("m"):
            messages = messages.filter(pk__lt=int(after_key[1:]))
        for row in messages.select_related("session").order_by("-pk")[: limit + 1 - len(hits)]:
            hits.append(_substring_hit(terms, row.content, session=row.session, message=row))
    return hits


def _substring_hit(
    terms: list[Term], text: str, *, session: ChatSession, message: Message | None = None
) -> SearchHit:
    return SearchHit(
        kind="message" if message is not None else "session",
        session_id=session.pk,
        session_title=session.title,
        message_id=message.pk if message is not None else None,
        seq=message.seq if message is not None else None,
        role=message.role if message is not None else None,
        snippet=_substring_snippet(text, [t.text for t in terms if not t.negated]),
        rank=0.0,
        created_at=message.created_at if message is not None else session.created_at,
    )


def _substring_snippet(text: str, needles: list[str]) -> str:
    """About SNIPPET_WORDS words around the first match, escaped, matches in <mark>."""
    pattern = re.compile(
        "|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)), re.I
    )
    first = pattern.search(text)
    start = first.start() if first else 0
    words_before = text[:start].split()[-(SNIPPET_WORDS // 3) :]
    head = " ".join(words_before)
    tail_words = text[start:].split()[: SNIPPET_WORDS - len(words_before)]
    window = (head + " " if head else "") + " ".join(tail_words)
    out, last = [], 0
    for found in pattern.finditer(window):
        out.append(html.escape(window[last : found.start()], quote=False))
        out.append(f"<mark>{html.escape(found.group(), quote=False)}</mark>")
        last = found.end()
    out.append(html.escape(window[last:], quote=False))
    return "".join(out)
