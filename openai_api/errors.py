"""Errors on /v1/ in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

The status codes are chatengine's own (the SDK maps each to its exception class); `code` is
chatengine's error type (`not_found`, `context_overflow`, `llm_upstream_error`, ...), `type`
OpenAI's coarse category. The /api/ envelope is untouched: only views of this app (through
`OpenAIView.get_exception_handler`) and its catch-all 404 render this shape.
"""

from typing import Any

from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from chatengine.exceptions import (
    NotFound,
    ValidationFailed,
    _printable,
    envelope_exception_handler,
)

# OpenAI's `type` for each status; anything else >= 500 is a server_error.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    406: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class InvalidParameter(ValidationFailed):
    """A 400 naming the parameter, as OpenAI's `param`: also for what chatengine cannot honour."""

    def __init__(self, param: str, message: str):
        super().__init__(message, details={param: [message]})


def openai_error_body(
    *, status: int, code: str, message: str, param: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": _printable(message),
            "type": _TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            ),
            "param": param,
            "code": code,
        }
    }


def _param(details: Any) -> str | None:
    """The first offending field of a validation error, dotted (`input.0.role`)."""
    path: list[str] = []
    while isinstance(details, dict) and details:
        key, details = next(iter(details.items()))
        if key == "non_field_errors":
            break
        path.append(str(key))
        if isinstance(details, list) and details and isinstance(details[0], dict):
            details = details[0]
    return ".".join(path) or None


def openai_exception_handler(exc: Exception, context: dict) -> Response:
    """The envelope handler's decisions (status, headers, logging, rollback), OpenAI's shape."""
    response = envelope_exception_handler(exc, context)
    error = response.data["error"]
    # A 404 names a parameter when the missing thing was named in the body (a compaction).
    param = _param(error["details"]) if response.status_code in (400, 404, 409) else None
    response.data = openai_error_body(
        status=response.status_code, code=error["type"], message=error["message"], param=param
    )
    if response.status_code == 409 and "Retry-After" not in response:
        # The SDK retries every 409 (as a lock timeout); these ones would fail the same way.
        response["x-should-retry"] = "false"
    return response


class OpenAIView(APIView):
    """Base of every /v1/ view: errors in OpenAI's shape."""

    def get_exception_handler(self):
        return openai_exception_handler


class NotFoundView(OpenAIView):
    """Any /v1/ path nobody serves: a 404 in OpenAI's shape, whatever the method or auth."""

    authentication_classes: list = []
    permission_classes = [AllowAny]  # no object to protect: the same 404 for anyone
    throttle_classes: list = []
    schema = None  # not an operation

    def initial(self, request, *args, **kwargs):
        raise NotFound(f"Unknown path: {request.path}.")
