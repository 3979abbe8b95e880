"""Hostile input, property-based: whatever arrives, the answer is a 2xx or a 4xx envelope,
never a 5xx; what is accepted is stored and returned exactly; what is refused leaves nothing.

Runs on PostgreSQL when DATABASE_URL is set (where a NUL byte in text would be a database
error, so this is where "400, not 500" matters). Bounded: max_examples per property, no
deadline (the database's speed is not the property).
"""

import base64
import json
import urllib.parse
import uuid

import pytest
from django.conf import settings as django_settings
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from conversations.models import ChatSession, Message
from conversations.tests.factories import ChatSessionFactory, MessageFactory
from tests.reliability.conftest import client_for, envelope

pytestmark = pytest.mark.django_db

BOUNDED = hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_CHARS = django_settings.CHATENGINE_MAX_MESSAGE_CHARS
ROLES = ["system", "user", "assistant", "tool"]

NASTY = [
    "'; DROP TABLE conversations_message; --",
    '" OR 1=1 --',
    "Robert'); DELETE FROM auth_user WHERE ('1'='1",
    "<script>alert(document.cookie)</script>",
    "<img src=x onerror=alert(1)>",
    "{{ settings.SECRET_KEY }} {% debug %}",
    "${jndi:ldap://x}",
    "%s%s%s%n",
    "\\u0000 \\x00 %00",
    "  leading and trailing  \n\r\n\t",
    "\u202eRTL override\u202c",
    "\u2028\u2029 line separators",
    "\ufeffBOM",
    "e\u0301 combining, 😀 astral, \U0001d54f",
    "\x1b[31mANSI\x1b[0m \x07\x08\x7f",
]

# --- value strategies: each yields (value, is_valid) ---------------------------------------
clean_text = st.text(  # no NUL, no surrogate (Cs must be named once a filter is given)
    st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
)


def good_text(max_size: int, *, min_size: int = 0):
    return st.one_of(
        clean_text.filter(lambda s: min_size <= len(s) <= max_size),
        st.sampled_from([s for s in NASTY if min_size <= len(s) <= max_size]),
        st.sampled_from(["a", "€", "😀"]).map(lambda c: c * max_size),  # exactly at the limit
    )


def bad_text(max_size: int, *, allow_blank: bool = True):
    with_nul = st.tuples(clean_text, clean_text).map(lambda p: p[0] + "\x00" + p[1])
    with_surrogate = st.tuples(clean_text, st.integers(0xD800, 0xDFFF), clean_text).map(
        lambda p: p[0] + chr(p[1]) + p[2]
    )
    too_long = st.sampled_from(["a", "€", "😀"]).map(lambda c: c * (max_size + 1))
    options = [with_nul, with_surrogate, too_long, wrong_type]
    if not allow_blank:
        options.append(st.just(""))
    return st.one_of(*options)


wrong_type = st.one_of(
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def good_metadata():
    return st.dictionaries(good_text(64), good_text(512), max_size=16)


def bad_metadata():
    return st.one_of(
        st.dictionaries(
            clean_text.filter(lambda s: len(s) <= 64), st.just("v"), min_size=17, max_size=20
        ),
        st.builds(lambda k: {k: "v"}, bad_text(64).filter(lambda v: isinstance(v, str) and v)),
        st.builds(lambda v: {"k": v}, bad_text(512)),
        st.builds(
            lambda v: {"k": v},
            st.recursive(st.integers(), lambda c: st.lists(c, max_size=3), max_leaves=20),
        ),
        wrong_type.filter(lambda v: not isinstance(v, dict)),
    )


@st.composite
def field(draw, good, bad, *, required: bool = False):
    """("absent" | a value, valid?) for one field."""
    choices = ["good", "bad"] if required else ["absent", "good", "bad"]
    kind = draw(st.sampled_from(choices))
    if kind == "absent":
        return None, True
    if kind == "good":
        return draw(good), True
    return draw(bad), False


@st.composite
def payload(draw, fields: dict, *, allow_extra: bool = True):
    body, valid = {}, True
    for name, (good, bad, required) in fields.items():
        value, ok = draw(field(good, bad, required=required))
        if value is None and ok:
            continue
        body[name] = value
        valid = valid and ok
    if allow_extra and draw(st.booleans()):
        extra = draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in fields))
        body[extra] = draw(st.one_of(st.text(max_size=10), st.integers()))
        valid = False
    return body, valid


MESSAGE_FIELDS = {
    "role": (
        st.sampled_from(ROLES),
        st.one_of(st.text(max_size=12).filter(lambda r: r not in ROLES), wrong_type),
        True,
    ),
    "content": (good_text(MAX_CHARS, min_size=1), bad_text(MAX_CHARS, allow_blank=False), True),
    "name": (good_text(64), bad_text(64), False),
    "metadata": (good_metadata(), bad_metadata(), False),
}
SESSION_FIELDS = {
    "title": (good_text(255), bad_text(255), False),
    "system_prompt": (good_text(MAX_CHARS), bad_text(MAX_CHARS), False),
    "model": (good_text(128), bad_text(128), False),
    "metadata": (good_metadata(), bad_metadata(), False),
}
SESSION_PATCH_FIELDS = {
    **SESSION_FIELDS,
    "archived": (
        st.booleans(),
        st.one_of(st.sampled_from(["true", "false", 1, 0]), st.none()),
        False,
    ),
}


def post_json(client, url, body, method="post"):
    # ensure_ascii: lone surrogates travel as \udXXX escapes, exactly what a hostile client sends.
    raw = json.dumps(body, ensure_ascii=True)
    return getattr(client, method)(url, raw, content_type="application/json")


def assert_not_5xx(response):
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400:
        envelope(response, response.status_code, response.json()["error"]["type"])


@pytest.fixture
def owner(user):
    return user


@pytest.fixture(autouse=True)
def _any_model_name(settings):
    """Any model name is allowed here, so a hostile one is text to store exactly (the
    LLM_ALLOWED_MODELS rule has its own tests: llm/tests/test_allowed_models.py)."""
    settings.LLM_ALLOWED_MODELS = ["*"]


# --- Messages ---------------------------------------------------------------------------
@BOUNDED
@given(case=payload(MESSAGE_FIELDS))
@example(case=({"role": "user", "content": "a\x00b"}, False))
@example(case=({"role": "user", "content": "ok", "metadata": {"k\x00": "v"}}, False))
@example(case=({"role": "user", "content": "ok", "metadata": {"k": "v\x00"}}, False))
@example(case=({"role": "user", "content": "\ud800"}, False))
@example(case=({"role": "user", "content": "x", "\ud800": 1}, False))
@example(case=({"role": "user", "content": "x", "k\x00": 1}, False))
@example(case=({"role": "user", "content": NASTY[0]}, True))
def test_a_message_is_stored_exactly_or_refused_with_nothing_stored(owner, case):
    body, valid = case
    if body.get("role") == "tool":
        body = {**body, "tool_call_id": "call_1"}  # a tool message must name the call it answers
    session = ChatSessionFactory(user=owner)
    response = post_json(client_for(owner), f"/api/v1/sessions/{session.pk}/messages/", body)
    assert_not_5xx(response)
    session.refresh_from_db()
    if not valid:
        envelope(response, 400, "validation_error")
        assert session.message_count == 0
        assert not Message.objects.filter(session=session).exists()
        return
    assert response.status_code == 201, response.content[:500]
    returned = response.json()
    stored = Message.objects.get(pk=returned["id"])
    assert returned["content"] == stored.content == body["content"]
    assert returned["role"] == stored.role == body["role"]
    assert returned["name"] == stored.name == body.get("name", "")
    assert returned["metadata"] == stored.metadata == body.get("metadata", {})
    history = client_for(owner).get(f"/api/v1/sessions/{session.pk}/messages/").json()
    assert history["results"][0]["content"] == body["content"]
    assert session.message_count == 1


@BOUNDED
@given(
    depth=st.integers(min_value=1, max_value=200_000),
    shape=st.sampled_from(["list", "object"]),
    where=st.sampled_from(["body", "content", "metadata"]),
)
@example(depth=100_000, shape="list", where="body")
@example(depth=50_000, shape="object", where="metadata")
def test_deeply_nested_json_is_refused_not_a_crash(owner, depth, shape, where):
    session = ChatSessionFactory(user=owner)
    opener, closer = ("[", "]") if shape == "list" else ('{"a":', "}")
    nested = opener * depth + "1" + closer * depth
    if where == "body":
        raw = nested
    elif where == "content":
        raw = '{"role": "user", "content": ' + nested + "}"
    else:
        raw = '{"role": "user", "content": "x", "metadata": {"k": ' + nested + "}}"
    response = client_for(owner).post(
        f"/api/v1/sessions/{session.pk}/messages/", raw, content_type="application/json"
    )
    envelope(response, 400, "validation_error")
    assert not Message.objects.filter(session=session).exists()


@BOUNDED
@given(prefix=st.binary(max_size=50), junk=st.binary(min_size=1, max_size=50))
@example(prefix=b"", junk=b"\xff\xfe")
@example(prefix=b"", junk=b"\xed\xa0\x80")  # a surrogate encoded as UTF-8: invalid
@example(prefix=b"", junk=b"\xc0\x80")  # overlong NUL
def test_bytes_that_are_not_utf8_json_are_refused(owner, prefix, junk):
    session = ChatSessionFactory(user=owner)
    raw = b'{"role": "user", "content": "' + prefix + junk + b'"}'
    try:
        json.loads(raw.decode("utf-8"))
        valid_utf8_json = True
    except (UnicodeDecodeError, ValueError):
        valid_utf8_json = False
    response = client_for(owner).post(
        f"/api/v1/sessions/{session.pk}/messages/", raw, content_type="application/json"
    )
    assert_not_5xx(response)
    if not valid_utf8_json:
        envelope(response, 400, "validation_error")
        assert not Message.objects.filter(session=session).exists()


@BOUNDED
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_are_a_validation_error(owner, raw):
    session = ChatSessionFactory(user=owner)
    response = client_for(owner).post(
        f"/api/v1/sessions/{session.pk}/messages/", raw, content_type="application/json"
    )
    envelope(response, 400, "validation_error")


@pytest.mark.parametrize("content", NASTY)
def test_sql_and_html_looking_content_comes_back_byte_for_byte(owner, content):
    session = ChatSessionFactory(user=owner, title=content)
    client = client_for(owner)
    created = post_json(
        client, f"/api/v1/sessions/{session.pk}/messages/", {"role": "user", "content": content}
    )
    assert created.status_code == 201
    assert created["Content-Type"] == "application/json"
    read = client.get(f"/api/v1/sessions/{session.pk}/messages/").json()["results"][0]
    assert read["content"] == content
    assert Message.objects.get(session=session).content.encode() == content.encode()
    assert client.get(f"/api/v1/sessions/{session.pk}/").json()["title"] == content


# --- Sessions ---------------------------------------------------------------------------
@BOUNDED
@given(case=payload(SESSION_FIELDS))
@example(case=({"title": "a\x00"}, False))
@example(case=({"metadata": {"\x00": "v"}}, False))
@example(case=({"system_prompt": "\udfff"}, False))
def test_a_session_is_created_exactly_or_refused(owner, case):
    body, valid = case
    before = ChatSession.objects.filter(user=owner).count()
    response = post_json(client_for(owner), "/api/v1/sessions/", body)
    assert_not_5xx(response)
    if not valid:
        envelope(response, 400, "validation_error")
        assert ChatSession.objects.filter(user=owner).count() == before
        return
    assert response.status_code == 201, response.content[:500]
    stored = ChatSession.objects.get(pk=response.json()["id"])
    for name in ("title", "system_prompt", "model"):
        assert getattr(stored, name) == response.json()[name] == body.get(name, "")
    assert stored.metadata == body.get("metadata", {})


@BOUNDED
@given(case=payload(SESSION_PATCH_FIELDS))
def test_a_session_patch_applies_exactly_or_changes_nothing(owner, case):
    body, valid = case
    session = ChatSessionFactory(user=owner, title="before")
    snapshot = ChatSession.objects.filter(pk=session.pk).values().get()
    response = post_json(client_for(owner), f"/api/v1/sessions/{session.pk}/", body, method="patch")
    assert_not_5xx(response)
    after = ChatSession.objects.filter(pk=session.pk).values().get()
    if not valid:
        envelope(response, 400, "validation_error")
        assert after == snapshot
        return
    assert response.status_code == 200, response.content[:500]
    for name, value in body.items():
        assert after[name] == value


# --- Query parameters -------------------------------------------------------------------
param_value = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(max_size=30),
    st.text(st.characters(exclude_categories=[]), max_size=10),  # surrogates too
    st.sampled_from(["", "1e3", "5.0", "0x10", "NaN", "-0", "١٢", "\x00", "9" * 5000, "%FF"]),
)


def query(params: dict) -> str:
    return "&".join(
        f"{k}={urllib.parse.quote(v, safe='', errors='surrogatepass')}" for k, v in params.items()
    )


@BOUNDED
@given(
    params=st.dictionaries(
        st.sampled_from(["limit", "after", "before", "order", "cursor", "x"]),
        param_value,
        max_size=4,
    )
)
@example(params={"limit": "-1"})
@example(params={"limit": "99999999999999999999999"})
@example(params={"after": "-5"})
@example(params={"before": "2147483648"})
def test_history_paging_values_are_a_page_or_a_validation_error(owner, params):
    session = ChatSessionFactory(user=owner)
    for i in range(3):
        MessageFactory(session=session, content=f"m{i}")
    response = client_for(owner).get(f"/api/v1/sessions/{session.pk}/messages/?{query(params)}")
    assert_not_5xx(response)
    if response.status_code == 200:
        page = response.json()
        seqs = [m["seq"] for m in page["results"]]
        assert set(seqs) <= {1, 2, 3}
        assert seqs in (sorted(seqs), sorted(seqs, reverse=True))
    else:
        envelope(response, 400, "validation_error")


@pytest.mark.parametrize(
    "params",
    [
        "limit=-1",
        "limit=0",
        "limit=201",
        "limit=1e3",
        "after=-1",
        "before=0",
        "before=2147483648",
        "after=" + "9" * 40,
        "order=random",
        "limit=" + "9" * 5000,
    ],
)
def test_out_of_range_history_values_are_refused(owner, params):
    session = ChatSessionFactory(user=owner)
    envelope(
        client_for(owner).get(f"/api/v1/sessions/{session.pk}/messages/?{params}"),
        400,
        "validation_error",
    )


def forged_cursor(stamp: str, pk: str) -> str:
    return base64.urlsafe_b64encode(f"{stamp}|{pk}".encode()).decode().rstrip("=")


cursors = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda dt, tz, pk: forged_cursor(dt.isoformat() + tz, str(pk)),
        st.datetimes(),
        st.sampled_from(["", "+00:00", "+14:00", "-12:00", "Z"]),
        st.uuids(),
    ),
    st.builds(lambda s: base64.urlsafe_b64encode(s).decode(), st.binary(max_size=40)),
)


@BOUNDED
@given(
    params=st.fixed_dictionaries(
        {},
        optional={
            "limit": param_value,
            "cursor": cursors,
            "archived": st.one_of(param_value, st.sampled_from(["true", "false", "1", "0"])),
            "search": param_value,
        },
    )
)
@example(params={"cursor": forged_cursor("2020-01-01T00:00:00", str(uuid.uuid4()))})
@example(params={"cursor": forged_cursor("0001-01-01T00:00:00+14:00", str(uuid.uuid4()))})
@example(params={"search": "\x00"})
def test_session_list_values_are_a_page_of_own_sessions_or_a_validation_error(
    owner, other_user, params
):
    ChatSessionFactory(user=owner)
    theirs = ChatSessionFactory(user=other_user)
    response = client_for(owner).get(f"/api/v1/sessions/?{query(params)}")
    assert_not_5xx(response)
    if response.status_code == 200:
        assert str(theirs.pk) not in response.content.decode()
    else:
        envelope(response, 400, "validation_error")


# --- Headers and sizes ------------------------------------------------------------------
@BOUNDED
@given(key=st.text(st.characters(max_codepoint=255), max_size=300))
@example(key="")
@example(key="x" * 255)
@example(key="x" * 256)
def test_an_idempotency_key_is_used_or_refused(owner, key):
    session = ChatSessionFactory(user=owner)
    response = client_for(owner).post(
        f"/api/v1/sessions/{session.pk}/messages/",
        {"role": "user", "content": "hi"},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )
    valid = 1 <= len(key) <= 255 and all(" " <= c <= "~" for c in key)
    if valid:
        assert response.status_code == 201
    else:
        envelope(response, 400, "validation_error")
        assert not Message.objects.filter(session=session).exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/api/v1/sessions/"), ("patch", "{session}"), ("post", "{session}messages/")],
)
def test_a_body_over_the_size_limit_is_413_and_stores_nothing(owner, settings, method, path):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    session = ChatSessionFactory(user=owner, title="before")
    url = path.format(session=f"/api/v1/sessions/{session.pk}/")
    body = json.dumps({"role": "user", "content": "x" * 2000, "title": "y" * 10})
    response = getattr(client_for(owner), method)(url, body, content_type="application/json")
    envelope(response, 413, "request_too_large")
    session.refresh_from_db()
    assert session.title == "before"
    assert not Message.objects.filter(session=session).exists()
    assert ChatSession.objects.filter(user=owner).count() == 1


@pytest.mark.parametrize("path", ["/api/v1/sessions/", "{session}messages/", "{session}"])
def test_too_many_query_parameters_is_a_validation_error(owner, path):
    session = ChatSessionFactory(user=owner)
    url = path.format(session=f"/api/v1/sessions/{session.pk}/")
    many = "&".join(f"p{i}=1" for i in range(django_settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    error = envelope(client_for(owner).get(f"{url}?{many}"), 400, "validation_error")
    assert "DATA_UPLOAD_MAX_NUMBER_FIELDS" in error["message"]


def test_duplicate_json_keys_take_the_last_value_like_any_json_parser(owner):
    session = ChatSessionFactory(user=owner)
    raw = '{"role": "user", "content": "first", "content": "last"}'
    response = client_for(owner).post(
        f"/api/v1/sessions/{session.pk}/messages/", raw, content_type="application/json"
    )
    assert response.status_code == 201
    assert Message.objects.get(session=session).content == "last"
