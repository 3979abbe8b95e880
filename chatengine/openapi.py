"""OpenAPI building blocks every endpoint shares, so documenting a new one is a few lines.

- `ChatengineAutoSchema` (DEFAULT_SCHEMA_CLASS) adds the error responses that follow from a
  view's own configuration to every operation: 401 when it needs authentication, 403 for
  unsafe methods under session auth (CSRF), 400 and 413 when it takes a body, 404 when its
  path names a resource, 429 when it is throttled, 406 when its content negotiation can refuse
  an `Accept`, and 500. An operation declares only the errors of its own logic, with
  `error_responses(409, 422, ...)`. It also merges a serializer's `schema_extra` (rules across
  fields, e.g. `not`) into its component.
- `ErrorEnvelopeSerializer` is the one error schema (`ErrorEnvelope`), `paginated()` the list
  envelope, `session_id_parameter` the session path parameter, `Tags` the operation tags.
- `BearerSchemeExtension` documents `Authorization: Bearer <token>` as the security scheme.
- `document_tags_and_check_operations` (the postprocessing hook) lists the tags used and
  warns, so that `spectacular --fail-on-warn` fails, when an operation lacks a summary, a
  description, a known tag, or an example of its request body or success response.
"""

from typing import Any

from drf_spectacular.drainage import warn
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import force_instance
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema_field,
)
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotAcceptable
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from chatengine import headers as http_headers


# --- Tags ---------------------------------------------------------------------------------
class Tags:
    SESSIONS = "sessions"
    MESSAGES = "messages"
    REPLIES = "replies"
    TOKENS = "tokens"
    SEARCH = "search"
    USAGE = "usage"
    HEALTH = "health"
    OPENAI = "openai"


# In this order in the documentation; only the tags some operation uses are listed.
TAG_DESCRIPTIONS: dict[str, str] = {
    Tags.SESSIONS: "Chat sessions: create, list, read, change, archive and delete them.",
    Tags.MESSAGES: "A session's history: append messages and read them back by `seq`.",
    Tags.REPLIES: "LLM replies to a session's history, as JSON or as a server-sent event stream.",
    Tags.SEARCH: "Full-text search over your messages and session titles.",
    Tags.USAGE: "Your LLM token usage and its cost, by day, model or session; your quota.",
    Tags.TOKENS: "Your API keys: create one (its key is shown once), list them, revoke one.",
    Tags.HEALTH: "Liveness, readiness and metrics for operators (no authentication).",
    Tags.OPENAI: "OpenAI-compatible Conversations and Responses under `/v1/`, for the stock "
    "`openai` SDK: the same sessions and messages, errors in OpenAI's shape.",
}


# --- The error envelope -------------------------------------------------------------------
# status -> (type, when, example message). docs/errors.md says the same in its table.
ERRORS: dict[int, tuple[str, str, str]] = {
    400: (
        "validation_error",
        "The request is invalid: a bad or unknown field, a value of the wrong JSON type, "
        "malformed JSON, a body that is not JSON, or a bad query parameter. `details` maps "
        "each offending field to its problems.",
        "content: This field may not be blank.",
    ),
    401: (
        "authentication_error",
        "No credentials, or a token that is unknown, expired or revoked, or belongs to a "
        "deactivated user (all answer alike). Send `Authorization: Bearer <token>`.",
        "Authentication credentials were not provided.",
    ),
    403: (
        "permission_error",
        "Authenticated but not allowed, e.g. a CSRF failure when using the browser session.",
        "CSRF verification failed: CSRF token missing.",
    ),
    404: (
        "not_found",
        "No such resource for this user: a missing id, another user's session, or an id "
        "that is not a UUID all answer the same.",
        "Session not found.",
    ),
    405: ("method_not_allowed", "The method is not allowed here.", 'Method "PUT" not allowed.'),
    406: (
        "not_acceptable",
        "The `Accept` header asks for a format this endpoint cannot produce.",
        "Could not satisfy the request Accept header.",
    ),
    409: (
        "conflict",
        "The request conflicts with the resource's state.",
        "The session is archived; unarchive it to add messages.",
    ),
    411: (
        "length_required",
        "The body came with `Transfer-Encoding: chunked`; send it with `Content-Length`.",
        "A request body must be sent with Content-Length; chunked transfer encoding is not "
        "accepted.",
    ),
    413: (
        "request_too_large",
        "The body is larger than the server accepts (`DATA_UPLOAD_MAX_MEMORY_SIZE`).",
        "The request body is larger than the server accepts.",
    ),
    414: (
        "uri_too_long",
        "The request line is longer than the server accepts (gunicorn: 4094 bytes).",
        "URI Too Long: Request Line is too large (5021 > 4094)",
    ),
    422: (
        "context_overflow",
        "The newest message alone does not fit the model's context window.",
        "The message does not fit in the model's context window.",
    ),
    429: (
        "rate_limited",
        "Throttled; the `Retry-After` header says how many seconds to wait.",
        "Request was throttled. Expected available in 7 seconds.",
    ),
    431: (
        "header_too_large",
        "A header, or the number of headers, is over the server's limit (gunicorn: 8190 "
        "bytes, 100 fields).",
        "Request Header Fields Too Large: Error parsing headers: 'limit request headers "
        "fields size'",
    ),
    500: (
        "internal_error",
        "A bug on our side. The body never carries a traceback; quote `request_id`.",
        "An internal error occurred.",
    ),
    502: (
        "llm_upstream_error",
        "The LLM provider returned an error.",
        "The LLM provider returned an error.",
    ),
    503: (
        "service_unavailable",
        "A service chatengine depends on is unavailable.",
        "A service chatengine depends on is unavailable.",
    ),
    504: (
        "llm_timeout",
        "The LLM provider did not answer in time.",
        "The LLM provider did not answer in time.",
    ),
}

# Types that share a status with the one ERRORS names for it: status -> (type, when).
MORE_ERRORS: dict[int, list[tuple[str, str]]] = {
    429: [
        (
            "quota_exceeded",
            "A reply past the user's monthly token quota (CHATENGINE_MONTHLY_TOKEN_QUOTA); "
            "`details.resets_at` says when it restarts, `Retry-After` in seconds. Appends "
            "still work.",
        )
    ],
}
ERROR_TYPES = sorted(
    {error_type for error_type, _, _ in ERRORS.values()}
    | {error_type for more in MORE_ERRORS.values() for error_type, _ in more}
)
EXAMPLE_REQUEST_ID = "4f0c2a9e8b7d4c61a3e5f9b2d1c0e7a4"


class ErrorBodySerializer(serializers.Serializer):
    type = serializers.ChoiceField(
        choices=ERROR_TYPES,
        help_text="Machine-readable error type; branch on this, not on `message`.",
    )
    message = serializers.CharField(help_text="One line for humans; may change.")
    details = serializers.DictField(
        allow_null=True,
        child=serializers.JSONField(),
        help_text="For `validation_error`: each offending field mapped to its problems "
        "(a list of messages, or an object for nested fields). Some other types carry "
        "structured context: `context_overflow` the token counts (`tokens`, `budget`, "
        "`over_by`), `service_unavailable` from `/readyz` each `checks` result. Otherwise null.",
    )
    request_id = serializers.CharField(
        help_text="The request's id, also in the `X-Request-ID` response header and the logs."
    )


class ErrorEnvelopeSerializer(serializers.Serializer):
    """Every error response: one object under `error`."""

    error = ErrorBodySerializer()


def _error_example(status: int) -> OpenApiExample:
    error_type, _, message = ERRORS[status]
    details = {"content": ["This field may not be blank."]} if status == 400 else None
    return OpenApiExample(
        error_type,
        value={
            "error": {
                "type": error_type,
                "message": message,
                "details": details,
                "request_id": EXAMPLE_REQUEST_ID,
            }
        },
        response_only=True,
        status_codes=[str(status)],
    )


def error_response(status: int, description: str | None = None) -> OpenApiResponse:
    """The envelope response for one status, with its standard description and an example."""
    error_type, when, _ = ERRORS[status]
    return OpenApiResponse(
        response=ErrorEnvelopeSerializer,
        description=f"`{error_type}`: {description or when}",
        examples=[_error_example(status)],
    )


def error_responses(
    *statuses: int, descriptions: dict[int, str] | None = None
) -> dict[int, OpenApiResponse]:
    """Error responses for `extend_schema(responses={200: X, **error_responses(409)})`.

    Only the errors of the operation's own logic need naming: the ones that follow from the
    view's configuration are added by `ChatengineAutoSchema`. A more specific description:
    `error_responses(409, descriptions={409: "The session is archived."})`.
    """
    descriptions = descriptions or {}
    return {status: error_response(status, descriptions.get(status)) for status in statuses}


# --- Pagination ---------------------------------------------------------------------------
_paginated_serializers: dict[str, type[serializers.Serializer]] = {}


def paginated(item_serializer: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The list envelope `{results, next, has_more}` around `item_serializer`, for schemas.

    `paginated(SessionSerializer)` is documented as the component `PaginatedSessionList`.
    """
    item_name = item_serializer.__name__.removesuffix("Serializer")
    name = f"Paginated{item_name}ListSerializer"
    if name not in _paginated_serializers:
        _paginated_serializers[name] = type(
            name,
            (serializers.Serializer,),
            {
                "__doc__": f"One keyset page of {item_name} objects. Follow `next` until null.",
                "results": item_serializer(many=True),
                "next": serializers.URLField(
                    allow_null=True,
                    help_text="Absolute URL of the next page (same filters, moved cursor); "
                    "null on the last page.",
                ),
                "has_more": serializers.BooleanField(help_text="Whether `next` is set."),
            },
        )
    return _paginated_serializers[name]


# --- Parameters ---------------------------------------------------------------------------
session_id_parameter = OpenApiParameter(
    "session_id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="The session's id. An id that is not a UUID, a missing one and another "
    "user's all answer 404 `not_found`.",
)
seq_parameter = OpenApiParameter(
    "seq",
    OpenApiTypes.INT,
    OpenApiParameter.PATH,
    description="The message's `seq` in the session. A seq with no message is a 404 `not_found`.",
)


# --- Fields with a schema of their own ----------------------------------------------------
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": 16,
    "propertyNames": {"maxLength": 64},
    "additionalProperties": {"type": "string", "maxLength": 512},
    "description": "Your own key-value pairs (OpenAI's rule): at most 16 keys of up to 64 "
    "characters, string values of up to 512 characters. The engine never writes into it.",
    "example": {"customer": "c-1042", "channel": "web"},
}


def document_metadata_field(field_class: type) -> type:
    return extend_schema_field(METADATA_SCHEMA)(field_class)


# --- Response headers -----------------------------------------------------------------------
REQUEST_ID_HEADER = {
    "schema": {"type": "string"},
    "required": True,
    "description": "The request's id: the caller's `X-Request-ID` when it was a valid one, "
    "else a new one. Also in every error body (`request_id`) and log line.",
}
RETRY_AFTER_HEADER = {
    "schema": {"type": "integer", "minimum": 0},
    "description": "Seconds to wait before retrying. Sent with every throttling 429 and "
    "every `quota_exceeded` 429; with an "
    "upstream 429 when the LLM provider said; with a 409 of a request whose "
    "`Idempotency-Key` is still in progress.",
}
REPLAYED_HEADER = {
    "schema": {"type": "string", "enum": ["true"]},
    "description": "`true` when this is the stored response of an earlier request with the "
    "same `Idempotency-Key`, replayed; absent when the request ran.",
}


def response_headers(status: int, *, idempotent: bool) -> dict[str, dict[str, Any]]:
    """The headers a response with `status` may carry (the middleware, the throttle, the
    exception handler and conversations.idempotency set them)."""
    headers = {http_headers.REQUEST_ID: REQUEST_ID_HEADER}
    if status == 429 or (idempotent and status == 409):
        headers["Retry-After"] = RETRY_AFTER_HEADER
    if idempotent and 200 <= status < 300:
        headers[http_headers.IDEMPOTENT_REPLAYED] = REPLAYED_HEADER
    return headers


# --- Security -----------------------------------------------------------------------------
class BearerSchemeExtension(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.BearerOrTokenAuthentication"
    name = "bearerAuth"
    priority = 1

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token: `Authorization: Bearer <token>` "
            "(`Token <token>` works too). Create one with `POST /api/v1/tokens/`, or "
            "`python manage.py create_token <username>`. An unknown, expired or revoked key, "
            "and the key of a deactivated user, all answer the same 401.",
        }


# --- The schema class ---------------------------------------------------------------------
_BODY_METHODS = {"POST", "PUT", "PATCH"}
_UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class ChatengineAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the error responses every operation can give."""

    def refuses_unacceptable_accept(self) -> bool:
        """Whether the view answers 406 to an `Accept` it cannot produce. Asked of the view
        itself: views that pick their own format (the reply stream, the health probes)
        never do."""
        request = Request(
            APIRequestFactory().get(self.path, HTTP_ACCEPT="application/x-chatengine-probe")
        )
        try:
            self.view.perform_content_negotiation(request)
        except NotAcceptable:
            return True
        return False

    def implied_error_statuses(self) -> list[int]:
        """Errors that follow from the view's configuration, whatever its own logic does."""
        statuses = [500]
        # 406: content negotiation runs before the view (an `Accept` it cannot satisfy).
        if self.refuses_unacceptable_accept():
            statuses.append(406)
        if self.method in _BODY_METHODS:
            statuses += [400, 413]
        if "{" in self.path:
            statuses.append(404)
        permissions = self.view.get_permissions()
        if not all(isinstance(permission, AllowAny) for permission in permissions):
            statuses.append(401)
            authenticators = self.view.get_authenticators()
            if self.method in _UNSAFE_METHODS and any(
                isinstance(a, SessionAuthentication) for a in authenticators
            ):
                statuses.append(403)
        if self.view.get_throttles():
            statuses.append(429)
        return sorted(statuses)

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        # Input serializers that refuse unknown fields say so, or a client (and the fuzzer)
        # would take any extra property for valid.
        if getattr(serializer, "rejects_unknown_fields", False):
            schema["additionalProperties"] = False
        # Rules across fields that JSON Schema can state (the /v1/ facade's "conversation or
        # previous_response_id, not both"), stated by the serializer that also enforces them.
        schema.update(getattr(serializer, "schema_extra", {}))
        return schema

    def _get_request_for_media_type(self, serializer, direction="request"):
        schema, required = super()._get_request_for_media_type(serializer, direction)
        # A oneOf of variants (PolymorphicProxySerializer) has no `required` list of its own,
        # so drf-spectacular calls its body optional; it is required when every variant
        # requires a field (an empty body is refused).
        proxy = force_instance(serializer)
        if isinstance(proxy, PolymorphicProxySerializer) and self.method != "PATCH":
            variants = proxy.serializers
            variants = variants.values() if isinstance(variants, dict) else variants
            required = all(
                any(field.required for field in force_instance(variant).fields.values())
                for variant in variants
            )
        return schema, required

    def is_idempotent(self) -> bool:
        """Whether the operation honours `Idempotency-Key` (conversations.idempotency)."""
        return any(
            isinstance(p, OpenApiParameter) and p.name == http_headers.IDEMPOTENCY_KEY
            for p in self.get_override_parameters()
        )

    def _get_response_for_code(
        self, serializer, status_code, media_types=None, direction="response"
    ):
        response = super()._get_response_for_code(serializer, status_code, media_types, direction)
        # Only a JSON response is stored for replay (conversations.idempotency): a stream is not.
        replayable = self.is_idempotent() and set(response.get("content", {})) != {
            "text/event-stream"
        }
        headers = response_headers(int(status_code), idempotent=self.is_idempotent())
        if not replayable:
            headers.pop(http_headers.IDEMPOTENT_REPLAYED, None)
        response["headers"] = {**headers, **response.get("headers", {})}
        return response

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status in self.implied_error_statuses():
            if str(status) not in responses:
                responses[str(status)] = self._get_response_for_code(
                    error_response(status), str(status), direction=direction
                )
        return dict(sorted(responses.items()))


# --- Completeness ---------------------------------------------------------------------------
def _missing_examples(operation: dict[str, Any]) -> list[str]:
    """Where an example is due but absent: the request body and every 2xx body."""
    bodies = [("request body", operation.get("requestBody", {}))]
    bodies += [
        (f"{status} response", response)
        for status, response in operation.get("responses", {}).items()
        if status.startswith("2")
    ]
    return [
        f"{where} ({media_type})"
        for where, body in bodies
        for media_type, media in body.get("content", {}).items()
        if "examples" not in media and "example" not in media
    ]


def document_tags_and_check_operations(result: dict[str, Any], generator, **kwargs):
    """POSTPROCESSING_HOOK: list the used tags with descriptions, and warn (so that
    `spectacular --fail-on-warn` and the test suite fail) about an undocumented operation."""
    used: set[str] = set()
    for path, methods in result.get("paths", {}).items():
        for method, operation in methods.items():
            label = f"{method.upper()} {path}"
            tags = operation.get("tags", [])
            used.update(tags)
            if len(tags) != 1 or tags[0] not in TAG_DESCRIPTIONS:
                warn(f"{label}: needs exactly one tag of {sorted(TAG_DESCRIPTIONS)}, has {tags}")
            for key in ("summary", "description"):
                if not operation.get(key):
                    warn(f"{label}: has no {key}; add it with @extend_schema({key}=...)")
            for status, response in operation.get("responses", {}).items():
                if not response.get("description"):
                    warn(f"{label}: response {status} has no description")
            for where in _missing_examples(operation):
                warn(f"{label}: {where} has no example; add an OpenApiExample")
    result["tags"] = [
        {"name": name, "description": description}
        for name, description in TAG_DESCRIPTIONS.items()
        if name in used
    ]
    return result
