"""The OpenAPI schema: valid with no warning, committed and current, complete for every
operation, and served (with Swagger UI and Redoc) publicly from local assets."""

import re
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import CommandError, call_command
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

from chatengine.openapi import ERRORS, TAG_DESCRIPTIONS
from chatengine.tests import openapi_probe_urls

COMMITTED_SCHEMA = Path(settings.BASE_DIR) / "docs" / "openapi.yaml"
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(autouse=True)
def _fresh_generator_warnings():
    # drf-spectacular counts warnings in a process-wide object that its command never resets.
    GENERATOR_STATS.reset()
    yield
    GENERATOR_STATS.reset()


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def _operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if method in HTTP_METHODS:
                yield f"{method.upper()} {path}", path, method, operation


def test_schema_validates_with_no_warning(tmp_path):
    out = tmp_path / "openapi.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert yaml.safe_load(out.read_text())["openapi"].startswith("3.")


def test_committed_schema_is_current(tmp_path):
    out = tmp_path / "openapi.yaml"
    call_command("spectacular", "--file", str(out))
    assert COMMITTED_SCHEMA.read_text() == out.read_text(), (
        "docs/openapi.yaml is stale: run `make schema` and commit the result"
    )


def test_every_operation_has_summary_description_one_known_tag_and_examples(schema):
    operations = list(_operations(schema))
    assert len(operations) >= 12
    for label, _, _, operation in operations:
        assert operation.get("summary"), label
        assert operation.get("description"), label
        assert len(operation["tags"]) == 1, label
        assert operation["tags"][0] in TAG_DESCRIPTIONS, label
        bodies = [operation.get("requestBody", {})] + [
            response for status, response in operation["responses"].items() if status[0] == "2"
        ]
        for body in bodies:
            for media_type, media in body.get("content", {}).items():
                assert media.get("examples"), f"{label} {media_type} has no example"


def test_every_error_response_is_the_envelope_with_a_matching_example(schema):
    for label, path, _, operation in _operations(schema):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            media = response["content"]["application/json"]
            if path.startswith("/v1/"):
                # The OpenAI-compatible facade answers errors in OpenAI's shape (issue 16).
                assert media["schema"] == {"$ref": "#/components/schemas/OpenAIError"}, label
                continue
            assert media["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}, label
            (example,) = media["examples"].values()
            assert example["value"]["error"]["type"] == ERRORS[int(status)][0], (label, status)


REPLY = "/api/v1/sessions/{session_id}/reply/"
REPLY_STREAM = "/api/v1/sessions/{session_id}/reply/stream/"
REGENERATE = "/api/v1/sessions/{session_id}/messages/{seq}/regenerate/"
REGENERATE_STREAM = "/api/v1/sessions/{session_id}/messages/{seq}/regenerate/stream/"
CONTEXT = "/api/v1/sessions/{session_id}/context/"
HEALTH = {"/healthz", "/readyz", "/metrics"}
# Each answers its one format (/reply/, /reply/stream/, /regenerate/ and its stream) or the
# body's `stream` picks it (/v1/responses).
ONE_FORMAT = {REPLY, REPLY_STREAM, REGENERATE, REGENERATE_STREAM, "/v1/responses"}


def test_operations_document_the_errors_their_configuration_implies(schema):
    for label, path, method, operation in _operations(schema):
        statuses = set(operation["responses"])
        assert "500" in statuses, label
        if path.startswith(("/api/v1/", "/v1/")):
            assert "401" in statuses, label  # every /api/v1 and /v1 endpoint needs a token
            assert "429" in statuses, label  # and is throttled
        if "{session_id}" in path:
            assert "404" in statuses, label
        if method in {"post", "patch"}:
            assert {"400", "403", "413"} <= statuses, label
        # 406 exactly where content negotiation can refuse an `Accept`: not the replies nor the
        # health endpoints (they pick their own).
        assert ("406" in statuses) == (path not in HEALTH and path not in ONE_FORMAT), label
        if path in HEALTH:
            assert not statuses & {"401", "403", "406", "429"} - (
                {"403"} if path == "/metrics" else set()
            ), label
    sessions = schema["paths"]["/api/v1/sessions/"]
    assert "400" in sessions["get"]["responses"]  # bad limit / cursor
    messages = schema["paths"]["/api/v1/sessions/{session_id}/messages/"]
    assert "409" in messages["post"]["responses"]  # archived session
    assert "400" in messages["get"]["responses"]  # bad limit / after / before / order
    for path in (REPLY, REPLY_STREAM, REGENERATE, REGENERATE_STREAM):
        reply = schema["paths"][path]["post"]["responses"]
        assert {"409", "422", "429", "502", "504"} <= set(reply), path
    assert {"400", "422"} <= set(schema["paths"][CONTEXT]["get"]["responses"])
    assert "503" in schema["paths"]["/readyz"]["get"]["responses"]
    assert "403" in schema["paths"]["/metrics"]["get"]["responses"]


def test_the_reply_answers_json_only(schema):
    operation = schema["paths"][REPLY]["post"]
    successes = {status for status in operation["responses"] if status[0] == "2"}
    assert successes == {"201"}
    created = operation["responses"]["201"]
    assert set(created["content"]) == {"application/json"}
    assert created["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Reply"
    }
    body = schema["components"]["schemas"]["ReplyInput"]
    assert "stream" not in body["properties"]
    assert body["additionalProperties"] is False


def test_the_streamed_reply_is_its_own_operation_answering_only_the_event_stream(schema):
    operation = schema["paths"][REPLY_STREAM]["post"]
    assert operation["operationId"] == "sessions_reply_stream"
    successes = {status for status in operation["responses"] if status[0] == "2"}
    assert successes == {"201"}
    created = operation["responses"]["201"]
    assert set(created["content"]) == {"text/event-stream"}
    stream = created["content"]["text/event-stream"]
    *objects, text = stream["schema"]["oneOf"]
    # Last, what a client generator reads the body as: its text, not a JSON object.
    assert text["type"] == "string"
    events = {
        variant["properties"]["event"]["const"]: variant["properties"]["data"]
        for variant in objects
    }
    assert set(events) == {"message.delta", "message.completed", "error"}
    for data in events.values():
        assert data["contentMediaType"] == "application/json"
    assert events["message.completed"]["contentSchema"] == {"$ref": "#/components/schemas/Message"}
    error_event = events["error"]["contentSchema"]["allOf"]
    assert error_event[0] == {"$ref": "#/components/schemas/ErrorEnvelope"}
    assert error_event[1]["properties"]["retry_after"]["type"] == "integer"
    # The same body as the JSON reply.
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    assert request == {"$ref": "#/components/schemas/ReplyStreamInput"}
    components = schema["components"]["schemas"]
    assert components["ReplyStreamInput"]["properties"] == components["ReplyInput"]["properties"]
    examples = {e["value"]["event"] for e in stream["examples"].values()}
    assert examples == set(events)
    # The description carries a sample stream.
    assert "event: message.delta\ndata: " in created["description"]


def test_message_input_is_one_complete_schema_per_shape(schema):
    components = schema["components"]["schemas"]
    body = schema["paths"]["/api/v1/sessions/{session_id}/messages/"]["post"]["requestBody"]
    assert body["required"] is True
    union = components["MessageCreateInput"]
    variants = {ref["$ref"].rsplit("/", 1)[1]: None for ref in union["oneOf"]}
    variants = {name: components[name] for name in variants}
    assert list(variants) == [
        "SystemMessageInput",
        "UserMessageInput",
        "AssistantTextMessageInput",
        "AssistantToolCallsMessageInput",
        "ToolMessageInput",
    ]
    # No rule is left outside the variants' own properties (an anyOf of partial schemas made
    # openapi-python-client generate a type with nothing but `content: Any`).
    assert "discriminator" not in union
    for name, variant in variants.items():
        assert variant["type"] == "object", name
        assert not {"anyOf", "oneOf", "allOf"} & set(variant), name
        assert variant["additionalProperties"] is False, name
        properties = variant["properties"]
        assert properties["role"]["type"] == "string", name
        assert properties["content"]["type"] == "string", name
        assert properties["name"]["type"] == "string", name
        assert properties["metadata"]["type"] == "object", name
        assert {"role", "content"} <= set(variant["required"]), name
        # tool_calls only on the calling assistant, tool_call_id only (and always) on tool.
        assert ("tool_calls" in properties) == (name == "AssistantToolCallsMessageInput"), name
        assert ("tool_call_id" in properties) == (name == "ToolMessageInput"), name
        if name != "AssistantToolCallsMessageInput":
            assert properties["content"]["minLength"] == 1, name
    roles = {name: v["properties"]["role"]["const"] for name, v in variants.items()}
    assert roles == {
        "SystemMessageInput": "system",
        "UserMessageInput": "user",
        "AssistantTextMessageInput": "assistant",
        "AssistantToolCallsMessageInput": "assistant",
        "ToolMessageInput": "tool",
    }
    assert "tool_call_id" in variants["ToolMessageInput"]["required"]
    assistant = variants["AssistantToolCallsMessageInput"]
    assert "minLength" not in assistant["properties"]["content"]
    assert "tool_calls" in assistant["required"]
    tool_calls = assistant["properties"]["tool_calls"]
    assert (tool_calls["minItems"], tool_calls["maxItems"]) == (1, 128)
    call = components["ToolCall"]
    assert call["required"] == ["function", "id", "type"]
    assert call["properties"]["type"]["const"] == "function"
    assert components["ToolCallFunction"]["required"] == ["arguments", "name"]


def test_reply_fields_of_a_message_are_documented_nullable(schema):
    message = schema["components"]["schemas"]["Message"]["properties"]
    for name in ("model", "finish_reason", "latency_ms", "tool_calls"):
        assert "null" in message[name]["type"], name
    for name, component in (("usage", "Usage"), ("context", "ContextRecord")):
        assert message[name]["oneOf"] == [
            {"$ref": f"#/components/schemas/{component}"},
            {"type": "null"},
        ], name


def test_session_id_is_a_uuid_path_parameter_and_query_bounds_are_documented(schema):
    for label, path, _, operation in _operations(schema):
        if "{session_id}" in path:
            (param,) = [p for p in operation["parameters"] if p["name"] == "session_id"]
            assert param["in"] == "path", label
            assert param["schema"] == {"type": "string", "format": "uuid"}, label
    history = schema["paths"]["/api/v1/sessions/{session_id}/messages/"]["get"]
    params = {p["name"]: p["schema"] for p in history["parameters"] if p["in"] == "query"}
    assert params["limit"] == {"type": "integer", "maximum": 200, "minimum": 1, "default": 50}
    assert params["after"]["minimum"] == 0
    assert params["before"]["minimum"] == 1
    assert params["order"]["enum"] == ["asc", "desc"]
    listing = schema["paths"]["/api/v1/sessions/"]["get"]
    params = {p["name"]: p["schema"] for p in listing["parameters"] if p["in"] == "query"}
    assert params["limit"]["maximum"] == 100
    assert params["cursor"]["maxLength"] == 512


def test_lists_share_the_pagination_envelope(schema):
    components = schema["components"]["schemas"]
    for path, item in [
        ("/api/v1/sessions/", "Session"),
        ("/api/v1/sessions/{session_id}/messages/", "Message"),
    ]:
        ref = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        name = ref["schema"]["$ref"].rsplit("/", 1)[1]
        envelope = components[name]
        assert set(envelope["required"]) == {"results", "next", "has_more"}
        assert envelope["properties"]["results"]["items"] == {
            "$ref": f"#/components/schemas/{item}"
        }


def test_bearer_token_is_the_security_scheme(schema):
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert "security" not in schema  # no global requirement: public operations say nothing
    for label, path, _, operation in _operations(schema):
        if path in HEALTH:
            assert "security" not in operation, label  # public
        else:
            assert {"bearerAuth": []} in operation["security"], label


def test_a_new_endpoint_gets_its_implied_errors_from_its_view_configuration():
    generator = SchemaGenerator(patterns=openapi_probe_urls.documented_urlpatterns)
    probe = generator.get_schema(request=None, public=True)
    operation = probe["paths"]["/api/v1/probe/"]["get"]
    validate_schema(probe)
    # Public: no 401. Throttled: 429. A GET without a path parameter: no 400/404.
    assert sorted(operation["responses"]) == ["200", "406", "429", "500", "503"]
    assert probe["tags"] == [{"name": "health", "description": TAG_DESCRIPTIONS["health"]}]
    assert not GENERATOR_STATS


def test_an_undocumented_endpoint_fails_the_schema_check(capsys):
    with pytest.raises(CommandError):
        call_command(
            "spectacular",
            "--fail-on-warn",
            "--urlconf",
            "chatengine.tests.openapi_probe_urls",
            "--file",
            "/dev/null",
        )
    stderr = capsys.readouterr().err
    assert "GET /api/v1/undocumented/: has no summary" in stderr
    assert "GET /api/v1/undocumented/: has no description" in stderr
    assert "GET /api/v1/undocumented/: 200 response (application/json) has no example" in stderr
    assert "GET /api/v1/undocumented/: needs exactly one tag" in stderr


# --- Served ---------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/schema/", "/api/schema/?format=json"])
def test_schema_is_served_publicly_even_with_a_bad_token(api_client, url):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    response = api_client.get(url)
    assert response.status_code == 200
    served = yaml.safe_load(response.content)  # JSON is YAML too
    assert served["paths"].keys() == yaml.safe_load(COMMITTED_SCHEMA.read_text())["paths"].keys()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "asset"),
    [
        ("/api/docs/", "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"),
        ("/api/redoc/", "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"),
    ],
)
def test_docs_pages_are_public_and_load_only_local_assets(api_client, url, asset):
    response = api_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert asset in html
    # No reference to another host: every src/href is a local path.
    assert re.findall(r"""(?:src|href)=["'](?:https?:)?//""", html) == []
    assert "fonts.googleapis.com" not in html
    assert "cdn.jsdelivr.net" not in html


def test_the_headers_clients_rely_on_are_declared_on_the_responses_that_carry_them(schema):
    idempotent = set()
    for label, _, _, operation in _operations(schema):
        takes_key = any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))
        if takes_key:
            idempotent.add(label)
        for status, response in operation["responses"].items():
            headers = response.get("headers", {})
            request_id = headers.get("X-Request-ID", {})
            assert request_id.get("required") is True, (label, status)
            assert request_id["schema"] == {"type": "string"}, (label, status)
            if status == "429":
                assert headers["Retry-After"]["schema"]["type"] == "integer", label
            json_success = status[0] == "2" and "application/json" in response.get("content", {})
            assert ("Idempotent-Replayed" in headers) == (takes_key and json_success), (
                label,
                status,
            )
    assert {
        "POST /api/v1/sessions/{session_id}/messages/",
        "POST /api/v1/sessions/{session_id}/reply/",
        "POST /api/v1/sessions/{session_id}/reply/stream/",
    } <= idempotent
    reply = schema["paths"][REPLY]["post"]["responses"]
    assert reply["201"]["headers"]["Idempotent-Replayed"]["schema"]["enum"] == ["true"]
    assert "Retry-After" in reply["409"]["headers"]  # a key still in progress


def test_the_branching_endpoints_and_fields_are_documented(schema):
    sessions = "/api/v1/sessions/{session_id}"
    documented = {
        (f"{sessions}/fork/", "post"): "201",
        (f"{sessions}/forks/", "get"): "200",
        (f"{sessions}/messages/{{seq}}/versions/", "get"): "200",
        (f"{sessions}/messages/{{seq}}/edit/", "post"): "201",
        (REGENERATE, "post"): "201",
        (REGENERATE_STREAM, "post"): "201",
    }
    for (path, method), success in documented.items():
        operation = schema["paths"][path][method]
        assert success in operation["responses"], path
        assert {"404", "409"} <= set(operation["responses"]) or method == "get", path
        assert "seq" in {p["name"] for p in operation.get("parameters", [])} or "seq" not in path
    streamed = schema["paths"][REGENERATE_STREAM]["post"]["responses"]["201"]["content"]
    assert set(streamed) == {"text/event-stream"}
    components = schema["components"]["schemas"]
    assert "versions" in components["Message"]["properties"]
    assert {"forked_from", "forked_at_seq"} <= set(components["Session"]["properties"])
    assert components["ForkInput"]["required"] == ["at_seq"]
