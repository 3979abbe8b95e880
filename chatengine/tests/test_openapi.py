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
CONTEXT = "/api/v1/sessions/{session_id}/context/"
HEALTH = {"/healthz", "/readyz", "/metrics"}
PICK_FORMAT = {REPLY, "/v1/responses"}  # the body's `stream` picks JSON or the event stream


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
        # 406 exactly where content negotiation can refuse an `Accept`: not the replies (the
        # body's `stream` picks the format) nor the health endpoints (they pick their own).
        assert ("406" in statuses) == (path not in HEALTH and path not in PICK_FORMAT), label
        if path in HEALTH:
            assert not statuses & {"401", "403", "406", "429"} - (
                {"403"} if path == "/metrics" else set()
            ), label
    sessions = schema["paths"]["/api/v1/sessions/"]
    assert "400" in sessions["get"]["responses"]  # bad limit / cursor
    messages = schema["paths"]["/api/v1/sessions/{session_id}/messages/"]
    assert "409" in messages["post"]["responses"]  # archived session
    assert "400" in messages["get"]["responses"]  # bad limit / after / before / order
    reply = schema["paths"][REPLY]["post"]["responses"]
    assert {"409", "422", "429", "502", "504"} <= set(reply)
    assert {"400", "422"} <= set(schema["paths"][CONTEXT]["get"]["responses"])
    assert "503" in schema["paths"]["/readyz"]["get"]["responses"]
    assert "403" in schema["paths"]["/metrics"]["get"]["responses"]


def test_reply_documents_json_and_the_event_stream_with_its_event_types(schema):
    created = schema["paths"][REPLY]["post"]["responses"]["201"]
    assert set(created["content"]) == {"application/json", "text/event-stream"}
    assert created["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Reply"
    }
    stream = created["content"]["text/event-stream"]
    events = {
        variant["properties"]["event"]["const"]: variant["properties"]["data"]
        for variant in stream["schema"]["oneOf"]
    }
    assert set(events) == {"message.delta", "message.completed", "error"}
    for data in events.values():
        assert data["contentMediaType"] == "application/json"
    assert events["message.completed"]["contentSchema"] == {"$ref": "#/components/schemas/Message"}
    assert events["error"]["contentSchema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}
    examples = {e["value"]["event"] for e in stream["examples"].values()}
    assert examples == set(events)
    # The description carries a sample stream.
    assert "event: message.delta\ndata: " in created["description"]


def test_message_input_is_one_schema_per_role(schema):
    components = schema["components"]["schemas"]
    body = schema["paths"]["/api/v1/sessions/{session_id}/messages/"]["post"]["requestBody"]
    assert body["required"] is True
    union = components["MessageCreateInput"]
    assert union["discriminator"]["propertyName"] == "role"
    variants = {
        role: components[ref.rsplit("/", 1)[1]]
        for role, ref in union["discriminator"]["mapping"].items()
    }
    assert set(variants) == {"system", "user", "assistant", "tool"}
    assert [v["$ref"] for v in union["oneOf"]] == list(union["discriminator"]["mapping"].values())
    for role, variant in variants.items():
        assert variant["properties"]["role"]["const"] == role
        assert variant["additionalProperties"] is False
        # tool_calls only on assistant, tool_call_id only (and always) on tool.
        assert ("tool_calls" in variant["properties"]) == (role == "assistant"), role
        assert ("tool_call_id" in variant["properties"]) == (role == "tool"), role
        if role != "assistant":
            assert variant["properties"]["content"]["minLength"] == 1, role
    assert "tool_call_id" in variants["tool"]["required"]
    assistant = variants["assistant"]
    assert "minLength" not in assistant["properties"]["content"]
    assert assistant["anyOf"] == [
        {"required": ["tool_calls"]},
        {"properties": {"content": {"minLength": 1}}},
    ]
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
