"""Contract test: schemathesis fuzzes every operation of the API schema against the live app.

The schema is the one the app generates and serves (built here by drf-spectacular's generator
at collection, so there is one test per operation), so an endpoint that lands later is fuzzed
with no change here. Every generated request is sent over HTTP with a real token to
pytest-django's live server on the test database, and each response must:
- not be a 5xx (`not_a_server_error`),
- have a documented status code (`status_code_conformance`),
- match the documented schema and content type (`response_schema_conformance`,
  `content_type_conformance`, `response_headers_conformance`),
- be a 4xx for data the schema calls invalid (`negative_data_rejection`), and not a 400 for
  data it calls valid (`positive_data_acceptance`: the schema is exact, e.g. unknown fields,
  blank strings and each role's message rules are documented as refused; a 422
  `context_overflow` is allowed, see POSITIVE_DATA_STATUSES),
- for a streamed reply, have every server-sent event match its documented event schema,
- be a 401 when the token is left out (`ignored_auth`), and a 405 for an undocumented method
  (`unsupported_method`).

Path parameters named `session_id` (and the /v1/ facade's `conversation_id`, `item_id` and
`response_id`, derived from it) point, most of the time, at a real session of the user
(with history), else at an archived one, another user's, or what schemathesis generated. A
destructive or changing operation (DELETE, PATCH, POST) gets a fresh session made for that
one request, so deletes never starve the read operations of data. A `token_id` likewise points
at a token made for that one request (the user's, or another user's), never at the token the
run authenticates with. Aimed at another user's session or token, no operation may answer 2xx
(object-level authorization, checked for every operation with a `session_id` or `token_id`,
present and future).

Replies use the echo provider (the test default), so they succeed without a network.

Bounds: CONTRACT_MAX_EXAMPLES (default 30) examples per operation in the fuzzing phase, plus
schemathesis' explicit-example and coverage phases (boundary values, each documented method
and a few undocumented ones): under a minute on 2 busy cores for today's 12 operations. Each
operation must see at least one 2xx, so a run that only ever hit 404/400 fails.
Failures are found bugs: fix the code or the schema, then add the input class to
test_contract_regressions.py.
"""

import json
import os
import zlib
from dataclasses import dataclass, field

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi import checks as openapi_checks

from accounts import services as account_services
from accounts.tests.factories import api_key_for
from conversations import search, selectors, services
from conversations.models import ChatSession, Message
from conversations.tests.factories import UserFactory
from llm import services as replies
from openai_api import ids as openai_ids

MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "30"))
CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.negative_data_rejection,
    openapi_checks.positive_data_acceptance,
    openapi_checks.ignored_auth,
    openapi_checks.unsupported_method,
]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
ALLOWED_MODEL = "gpt-4o-mini"  # in the default LLM_ALLOWED_MODELS
# What a generated `session_id` is replaced with; "own" is weighted up for coverage.
TARGETS = ["own", "own", "own", "own", "archived", "foreign", "generated"]


@dataclass
class FuzzWorld:
    """The data a fuzz run works on: a user with a token, and sessions to aim at."""

    base_url: str
    token: str
    user: object
    stranger: object
    own: str
    archived: str
    foreign: str
    cursor: str
    search_cursor: str
    statuses: list[int] = field(default_factory=list)

    def session_for(self, target: str, *, method: str) -> str | None:
        if target == "generated":
            return None
        if target == "foreign":
            return self.foreign
        if method in SAFE_METHODS:
            return self.own if target == "own" else self.archived
        # A session of its own for each changing request, so the shared ones stay intact.
        return str(
            _seed_session(self.user, archived=target == "archived", messages=3, reply=True).id
        )

    def token_for(self, target: str) -> str | None:
        if target == "generated":
            return None
        # A token of its own for each request: the one the run authenticates with stays.
        owner = self.stranger if target == "foreign" else self.user
        token, _ = account_services.create_token(user=owner, name="fuzz target")
        return str(token.pk)


# The OpenAI-compatible facade (/v1/) names a session, one of its messages and one of its
# responses with ids of its own: derived from the targeted session, as `session_id` is.
SESSION_PARAMETERS = {"session_id", "conversation_id", "item_id", "response_id"}


def _path_ids(session_id: str) -> dict[str, str]:
    session = ChatSession.objects.get(pk=session_id)
    found = {"session_id": session_id, "conversation_id": openai_ids.conversation_id(session.pk)}
    first = Message.objects.filter(session=session).order_by("seq").first()
    if first is not None:
        found["item_id"] = openai_ids.message_id(first.pk)
    reply = (
        Message.objects.filter(session=session, role="assistant", context__isnull=False)
        .order_by("-seq")
        .first()
    )
    if reply is not None:
        asked = Message.objects.get(session=session, seq=reply.context["last_seq"])
        found["response_id"] = openai_ids.response_id(asked.pk)
    return found


def _target(case) -> str:
    # Derived from the generated case, not drawn at random, so a failure replays exactly; from
    # the whole case, so the coverage phase's fixed path value still spreads over targets.
    seed = repr((case.path_parameters, case.query, case.body)).encode()
    return TARGETS[zlib.crc32(seed) % len(TARGETS)]


def _seed_session(
    user, *, archived: bool = False, messages: int = 0, title: str = "fuzz", reply: bool = False
):
    session = services.create_session(user=user, title=title, metadata={"k": "v"})
    for n in range(messages):
        role = "user" if n % 2 == 0 else "assistant"
        services.append_message(session=session, role=role, content=f"message {n}")
    if reply:  # an LLM reply (echo), for the /v1/ operations on a response
        replies.reply(session=session, content="question")
    if archived:
        services.update_session(session=session, archived=True)
    return session


@pytest.fixture
def fuzz_world(live_server):
    user, stranger = UserFactory(), UserFactory()
    token = api_key_for(user)
    own = _seed_session(user, messages=60, title="own", reply=True)
    for n in range(25):  # enough sessions for the list to paginate
        _seed_session(user, archived=n % 5 == 0, title=f"listed {n}")
    world = FuzzWorld(
        base_url=live_server.url,
        token=token,
        user=user,
        stranger=stranger,
        own=str(own.id),
        archived=str(
            _seed_session(user, archived=True, messages=2, title="archived", reply=True).id
        ),
        foreign=str(_seed_session(stranger, messages=2, reply=True).id),
        cursor=selectors.list_sessions(user=user, limit=3).next_params["cursor"],
        # Each list has its own cursor (search's is a rank and a hit, not a session).
        search_cursor=search.search(user=user, q="listed", limit=3).next_params["cursor"],
    )
    yield world
    # A run that never got past validation or 404 would pass every check and test nothing.
    assert any(200 <= status < 300 for status in world.statuses), (
        f"no generated request succeeded: statuses {sorted(set(world.statuses))}"
    )


def _make_tool_call_ids_distinct(body: dict) -> None:
    calls = body.get("tool_calls")
    if not isinstance(calls, list):
        return
    seen: set = set()
    for n, call in enumerate(calls):
        if isinstance(call, dict) and isinstance(call.get("id"), str):
            if call["id"] in seen:
                call["id"] = f"{call['id'][:100]}~{n}"
            seen.add(call["id"])


def _app_schema() -> dict:
    # What /api/schema/ serves, as JSON. (schemathesis' fixture-based lazy loading would read it
    # from the live server, but it relies on a pytest internal that pytest 9 removed.)
    generated = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(generated))


# No U+0000 in generated strings: every text field rejects it (PostgreSQL cannot store it), as
# the schema's description says. JSON Schema could say it per field only with a pattern, and
# schemathesis spends seconds matching patterns against 100 000-character boundary strings.
#
# A schema-valid request may still be a 422 `context_overflow`: whether a message fits depends on
# the model's context window (the session's `model`, the server's registry), which no request
# schema can know. The API uses 422 for nothing else (validation is 400), so the check still
# refuses every other status, and status_code_conformance refuses a 422 where undocumented.
POSITIVE_DATA_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
# A schema-violating body may be refused for its size before it is read: 413 is a refusal too
# (documented on every operation that takes a body).
NEGATIVE_DATA_STATUSES = [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"allow-x00": False},
        "checks": {
            "positive_data_acceptance": {"expected-statuses": POSITIVE_DATA_STATUSES},
            "negative_data_rejection": {"expected-statuses": NEGATIVE_DATA_STATUSES},
        },
    }
)
schema = schemathesis.openapi.from_dict(_app_schema(), config=CONFIG)


@pytest.mark.timeout(240)
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_honours_the_schema(case, fuzz_world):
    params = case.path_parameters
    target = "generated"
    if (
        params
        and SESSION_PARAMETERS & set(params)
        and not (case.meta and case.meta.is_negative_at(ParameterLocation.PATH))
    ):
        target = _target(case)
        session_id = fuzz_world.session_for(target, method=case.method)
        if session_id is not None:
            found = _path_ids(session_id)
            for name in SESSION_PARAMETERS & set(params) & set(found):
                params[name] = found[name]
    if (
        params
        and "token_id" in params
        and not (case.meta and case.meta.is_negative_at(ParameterLocation.PATH))
    ):
        target = _target(case)
        token_id = fuzz_world.token_for(target)
        if token_id is not None:
            params["token_id"] = token_id
    # The list cursor is opaque: a valid one can only come from the API. Positive cases get
    # a real one (random strings are rightly a 400); negative ones keep theirs.
    if (
        case.query
        and "cursor" in case.query
        and not (case.meta and case.meta.is_negative_at(ParameterLocation.QUERY))
    ):
        case.query["cursor"] = (
            fuzz_world.search_cursor if case.path == "/api/v1/search/" else fuzz_world.cursor
        )
    # The allowed models are the server's configuration (LLM_ALLOWED_MODELS), not a schema
    # enum: positive cases name one of them; negative ones keep what they generated.
    if (
        case.query
        and case.query.get("model")
        and not (case.meta and case.meta.is_negative_at(ParameterLocation.QUERY))
    ):
        case.query["model"] = ALLOWED_MODEL
    # Tool-call ids must be distinct within a message, which JSON Schema cannot say (the
    # schema's description does). Positive cases get distinct ids; negative ones keep theirs.
    if isinstance(case.body, dict) and not (
        case.meta and case.meta.is_negative_at(ParameterLocation.BODY)
    ):
        _make_tool_call_ids_distinct(case.body)
        if isinstance(case.body.get("model"), str) and case.body["model"]:
            case.body["model"] = ALLOWED_MODEL
        # /v1/responses with `truncation: disabled` is a 400 when the history does not fit (as
        # OpenAI answers), which depends on the model's window, as context_overflow does above;
        # positive cases let chatengine fit it (openai_api/tests test `disabled` itself).
        if case.body.get("truncation") == "disabled":
            case.body["truncation"] = "auto"
    response = case.call_and_validate(
        base_url=fuzz_world.base_url,
        headers={"Authorization": f"Bearer {fuzz_world.token}"},
        checks=CHECKS,
        timeout=30,
    )
    fuzz_world.statuses.append(response.status_code)
    # Beyond the schema: another user's session or token is never read, changed or deleted. (Only for
    # the documented method: the coverage phase also sends OPTIONS, which DRF answers with the
    # view's description, whoever owns the id.)
    if target == "foreign" and case.method.upper() == case.operation.method.upper():
        assert not 200 <= response.status_code < 300, (
            f"{case.method} {case.formatted_path} answered {response.status_code} "
            "on another user's session or token"
        )
