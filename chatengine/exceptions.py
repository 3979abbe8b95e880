"""The domain error family and the one place that renders every error as the envelope.

Every error response is `{"error": {"type", "message", "details", "request_id"}}`. Domain code
raises an `ApplicationError` subclass; DRF and Django exceptions are translated here too, so
clients can branch on `type` whatever raised the error.
"""

import logging
import sys
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from chatengine.request_id import get_request_id
from chatengine.text import shorten

logger = logging.getLogger("chatengine.errors")


class ApplicationError(Exception):
    """Base of every error chatengine raises on purpose; subclasses are data."""

    status_code: int = 500
    error_type: str = "internal_error"
    default_message: str = "An internal error occurred."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        self.message = message or self.default_message
        self.details = details
        self.headers = headers or {}
        super().__init__(self.message)


class ValidationFailed(ApplicationError):
    status_code = 400
    error_type = "validation_error"
    default_message = "The request is invalid."


class NotFound(ApplicationError):
    status_code = 404
    error_type = "not_found"
    default_message = "Not found."


class Conflict(ApplicationError):
    status_code = 409
    error_type = "conflict"
    default_message = "The request conflicts with the current state of the resource."


class RateLimited(ApplicationError):
    status_code = 429
    error_type = "rate_limited"
    default_message = "Too many requests; retry later."


class QuotaExceeded(ApplicationError):
    """The user's monthly token quota is spent: replies wait for `details.resets_at`."""

    status_code = 429
    error_type = "quota_exceeded"
    default_message = "The monthly token quota is used up."


class ContextOverflow(ApplicationError):
    status_code = 422
    error_type = "context_overflow"
    default_message = "The message does not fit in the model's context window."


class LLMUpstreamError(ApplicationError):
    status_code = 502
    error_type = "llm_upstream_error"
    default_message = "The LLM provider returned an error."


class LLMTimeout(ApplicationError):
    status_code = 504
    error_type = "llm_timeout"
    default_message = "The LLM provider did not answer in time."


class ServiceUnavailable(ApplicationError):
    status_code = 503
    error_type = "service_unavailable"
    default_message = "A service chatengine depends on is unavailable."


def error_body(
    *, error_type: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "type": error_type,
            "message": _printable(message),
            "details": _printable(details),
            "request_id": get_request_id(),
        }
    }


def _printable(value: Any) -> Any:
    """`value` with every string shortened (`chatengine.text.shorten`) and lone surrogates
    backslash-escaped. An error may echo what the client sent (an unknown key, an invalid
    choice), of any length; and JSON allows a lone surrogate escape, which UTF-8 cannot
    encode, so rendering it as is would turn the 400 into a 500."""
    if isinstance(value, str):
        value = shorten(value)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


# DRF's own exceptions, by class, to (status, type). Checked in order: subclasses first.
_DRF_TYPES: list[tuple[type[Exception], int, str]] = [
    (drf_exceptions.Throttled, 429, "rate_limited"),
    (drf_exceptions.NotAuthenticated, 401, "authentication_error"),
    (drf_exceptions.AuthenticationFailed, 401, "authentication_error"),
    (drf_exceptions.PermissionDenied, 403, "permission_error"),
    (drf_exceptions.NotFound, 404, "not_found"),
    (drf_exceptions.MethodNotAllowed, 405, "method_not_allowed"),
    (drf_exceptions.NotAcceptable, 406, "not_acceptable"),
    # The API speaks JSON only; a body in another format is a bad request like malformed JSON.
    (drf_exceptions.UnsupportedMediaType, 400, "validation_error"),
    (drf_exceptions.ParseError, 400, "validation_error"),
    (drf_exceptions.ValidationError, 400, "validation_error"),
]


def _validation_details(detail: Any) -> dict[str, Any]:
    if isinstance(detail, dict):
        return detail
    if isinstance(detail, list):
        return {"non_field_errors": detail}
    return {"non_field_errors": [detail]}


def _validation_message(details: dict[str, Any]) -> str:
    """A one-line summary naming the first offending field, for humans reading logs."""
    field, problems = next(iter(details.items()))
    first = problems[0] if isinstance(problems, list) and problems else problems
    if isinstance(first, dict):
        return f"Invalid input in '{field}'."
    if field == "non_field_errors":
        return str(first)
    return f"{field}: {first}"


def _render_drf(exc: drf_exceptions.APIException) -> Response:
    status_code, error_type = exc.status_code, "internal_error"
    for cls, mapped_status, mapped_type in _DRF_TYPES:
        if isinstance(exc, cls):
            status_code, error_type = mapped_status, mapped_type
            break
    details = None
    if isinstance(exc, drf_exceptions.ValidationError):
        details = _validation_details(exc.detail)
        message = _validation_message(details) if details else "The request is invalid."
    elif isinstance(exc, drf_exceptions.UnsupportedMediaType):
        message = f"{exc.detail} Send JSON with 'Content-Type: application/json'."
    elif isinstance(exc, drf_exceptions.ParseError):
        message = f"Malformed request body: {exc.detail}"
    else:
        message = str(exc.detail)
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(int(exc.wait) + (0 if float(exc.wait).is_integer() else 1))
    body = error_body(error_type=error_type, message=message, details=details)
    return Response(body, status=status_code, headers=headers)


def envelope_exception_handler(exc: Exception, context: dict) -> Response:
    """DRF EXCEPTION_HANDLER: every exception raised in an API view becomes the envelope.

    Each one is also logged once, in `chatengine.errors`, with its `error_type`.
    """
    response = _envelope_response(exc)
    error = response.data["error"]
    log_error(
        error_type=error["type"],
        status=response.status_code,
        message=error["message"],
        exc=exc,
        view=type(context.get("view")).__name__,
    )
    return response


def _envelope_response(exc: Exception) -> Response:
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        set_rollback()
        return Response(
            error_body(
                error_type="request_too_large",
                message="The request body is larger than the server accepts.",
            ),
            status=413,
        )
    elif isinstance(exc, SuspiciousOperation):
        # Raised while reading the request inside the view, e.g. more query parameters than
        # DATA_UPLOAD_MAX_NUMBER_FIELDS: a bad request, not a server error.
        set_rollback()
        limits = (TooManyFieldsSent, TooManyFilesSent)
        message = str(exc) if isinstance(exc, limits) else "Bad request."
        return Response(error_body(error_type="validation_error", message=message), status=400)

    if isinstance(exc, ApplicationError):
        set_rollback()
        body = error_body(error_type=exc.error_type, message=exc.message, details=exc.details)
        return Response(body, status=exc.status_code, headers=exc.headers)

    if isinstance(exc, drf_exceptions.APIException):
        # APIView.handle_exception has already set `auth_header` for 401s.
        set_rollback()
        return _render_drf(exc)

    # Anything else is a bug: answer without leaking it (log_error keeps the traceback).
    set_rollback()
    return Response(
        error_body(error_type="internal_error", message=ApplicationError.default_message),
        status=500,
    )


def log_error(
    *,
    error_type: str,
    status: int,
    message: str,
    exc: BaseException | None = None,
    **fields: Any,
) -> None:
    """Log one error response with its category: WARNING for 4xx, ERROR + traceback for 5xx.

    The message is the one the client got (never request content); a 5xx traceback is the
    only way to find the bug, so it is always attached when there is an exception.
    """
    extra = {"error_type": error_type, "status": status, **fields}
    if status >= 500:
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
        if exc is not None and error_type == "internal_error":
            message = f"Unhandled {type(exc).__name__}"
        logger.error("%s: %s", error_type, message, exc_info=exc_info, extra=extra)
    else:
        logger.warning("%s: %s", error_type, message, extra=extra)


# Django's own handlers (urls.py), for errors raised outside DRF views.
def _json_error(
    status: int, error_type: str, message: str, exc: BaseException | None = None
) -> JsonResponse:
    log_error(error_type=error_type, status=status, message=message, exc=exc)
    return JsonResponse(error_body(error_type=error_type, message=message), status=status)


def bad_request(request, exception=None):
    if isinstance(exception, RequestDataTooBig):
        return _json_error(
            413, "request_too_large", "The request body is larger than the server accepts."
        )
    return _json_error(400, "validation_error", "Bad request.")


def permission_denied(request, exception=None):
    return _json_error(403, "permission_error", "You do not have permission to do this.")


def page_not_found(request, exception=None):
    return _json_error(404, "not_found", "Not found.")


def length_required(request):
    return _json_error(
        411,
        "length_required",
        "A request body must be sent with Content-Length; chunked transfer encoding is not "
        "accepted.",
    )


def envelope_for_status(request, status: int, exc: BaseException | None = None) -> JsonResponse:
    """The envelope in place of an error page Django rendered itself (in DEBUG, its HTML
    debug pages) for a response with this status; `exc`, if known, is logged with a 5xx."""
    handler = {400: bad_request, 403: permission_denied, 404: page_not_found}.get(status)
    if handler is not None:
        return handler(request)
    if status >= 500:
        return _json_error(status, "internal_error", ApplicationError.default_message, exc)
    return _json_error(status, "validation_error", "Bad request.")


def server_error(request):
    # Django calls handler500 from inside its `except` block: the exception is still current.
    return _json_error(500, "internal_error", ApplicationError.default_message, sys.exception())


def csrf_failure(request, reason=""):
    return _json_error(403, "permission_error", f"CSRF verification failed: {reason}")
