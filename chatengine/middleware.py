"""Request id, access log and request metrics: the HTTP layer's observability.

A streamed response's body is produced after the view (and these middlewares) returned, so for
those the request id is re-established around every chunk and the access line is written when
the stream ends, with the full duration.
"""

import functools
import logging
import re
import sys
import time

from django.core.signals import got_request_exception
from django.utils.functional import SimpleLazyObject, empty
from rest_framework.response import Response as DRFResponse

from chatengine import exceptions, headers
from chatengine.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS
from chatengine.request_id import bind_request_id, new_request_id, reset_request_id, set_request_id
from chatengine.routing import is_api_path

REQUEST_ID_HEADER = headers.REQUEST_ID
# Read from META directly: `request.headers` builds a dict of every header on first use.
_REQUEST_ID_META = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")
UNMATCHED_ROUTE = "<unmatched>"
_KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

access_logger = logging.getLogger("chatengine.access")


class RequestIdMiddleware:
    """Give every request an id (the caller's X-Request-ID when valid) and echo it back."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = new_request_id(request.META.get(_REQUEST_ID_META))
        request.request_id = request_id
        token = set_request_id(request_id)
        try:
            response = self.get_response(request)
        finally:
            reset_request_id(token)
        response[REQUEST_ID_HEADER] = request_id
        if response.streaming:
            response.streaming_content = bind_request_id(
                response.streaming_content, request_id=request_id
            )
        return response


def route_template(request) -> str | None:
    """The matched URL pattern as `/api/v1/sessions/{session_id}/`, or None if none matched."""
    match = getattr(request, "resolver_match", None)
    if match is None or match.route is None:
        return None
    return _template_of(match.route)


@functools.lru_cache(maxsize=1024)  # one entry per URL pattern: the set is the URLconf's
def _template_of(pattern: str) -> str:
    route = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", pattern)  # path() converters
    route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route)  # re_path() named groups
    return "/" + route.replace("^", "").replace("$", "")


class AccessLogMiddleware:
    """One `chatengine.access` line and one metrics observation per request.

    Sits right inside RequestIdMiddleware, so the id is set and every response, including the
    envelope Django's handler500 renders for an exception in an inner middleware, passes here.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        if response.streaming:
            response.streaming_content = _then_record(response, request, started)
        else:
            _record(request, response, started)
        return response


def _then_record(response, request, started: float):
    content = response.streaming_content  # the body as it is now, before it is reassigned
    if response.is_async:

        async def agen():
            try:
                async for chunk in content:
                    yield chunk
            finally:
                _record(request, response, started)

        return agen()

    def gen():
        try:
            yield from content
        finally:
            _record(request, response, started)

    return gen()


def _record(request, response, started: float) -> None:
    duration = time.perf_counter() - started
    route = route_template(request)
    method = request.method if request.method in _KNOWN_METHODS else "OTHER"
    status = response.status_code
    requests, durations = _series(method, route or UNMATCHED_ROUTE, status)
    requests.inc()
    durations.observe(duration)

    fields = {
        # Explicit: a streamed response finishes after the request's context is gone.
        "request_id": getattr(request, "request_id", None),
        "method": method,
        # The template keeps ids out of the path; an unmatched URL has none, so log what came.
        "path": route or request.path,
        "status": status,
        "duration_ms": round(duration * 1000, 1),
        "user_id": _user_id(request),
    }
    match = getattr(request, "resolver_match", None)
    if match is not None and "session_id" in match.kwargs:
        fields["session_id"] = match.kwargs["session_id"]
    access_logger.info(
        "%s %s %s %.1fms", method, fields["path"], status, fields["duration_ms"], extra=fields
    )


@functools.lru_cache(maxsize=4096)  # bounded anyway: known methods x routes x statuses
def _series(method: str, route: str, status: int):
    # `labels()` validates and locks on every call; the series it returns never change.
    labels = {"method": method, "route": route, "status": status}
    return HTTP_REQUESTS.labels(**labels), HTTP_REQUEST_DURATION.labels(**labels)


def _user_id(request):
    # DRF's Request writes the user it authenticated back onto the Django request. Read the
    # attribute without triggering a lazy session lookup a view never asked for.
    user = request.__dict__.get("user")
    if user is None or (isinstance(user, SimpleLazyObject) and user._wrapped is empty):
        return None
    return user.pk if getattr(user, "is_authenticated", False) else None


class LengthRequiredMiddleware:
    """411 for a request body sent with `Transfer-Encoding` (chunked) instead of Content-Length.

    Django reads a body by CONTENT_LENGTH, which WSGI leaves unset for a chunked body: under
    gunicorn the body read as empty and a valid message got "role: This field is required.".
    Under uvicorn Django does read it, but DRF again goes by Content-Length. Refusing, before
    anything reads, is the same answer under both servers, and reads nothing unbounded.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "HTTP_TRANSFER_ENCODING" in request.META:
            return exceptions.length_required(request)
        return self.get_response(request)


class ApiErrorEnvelopeMiddleware:
    """On an API path, an error page Django rendered itself becomes the envelope.

    Django's handler400/403/404/500 already answer the envelope, but with DEBUG on (the
    `make run` default) Django renders its HTML debug pages instead: for an unknown URL, and
    for an exception raised outside a view (DisallowedHost in CommonMiddleware). An error
    response on an API path that is neither JSON nor a DRF view's (which may be the browsable
    API's HTML, on purpose) is one of those pages.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and is_api_path(request.path_info)
            and not isinstance(response, DRFResponse)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            return exceptions.envelope_for_status(
                request, response.status_code, exc=request.__dict__.get(_UNCAUGHT)
            )
        return response


_UNCAUGHT = "chatengine_uncaught_exception"


def _remember_uncaught_exception(sender, request=None, **kwargs):
    # Django sends this from its `except` block before it renders the DEBUG 500 page, and the
    # exception is gone once that page comes back: keep it, so the envelope that replaces the
    # page is logged with its traceback.
    if request is not None:
        request.__dict__[_UNCAUGHT] = sys.exception()


got_request_exception.connect(_remember_uncaught_exception, dispatch_uid=_UNCAUGHT)


class SyncStackMiddleware:
    """The innermost middleware, sync only: keeps the whole stack in one thread under ASGI.

    Django runs a middleware in the mode of the handler below it. With an async handler
    (ASGI) at the bottom, every MiddlewareMixin above runs "async", which means each of its
    process_request/process_response is a separate hop from the event loop to the request's
    thread and back, each a thread wake-up (0.1-0.3 ms on a busy 2-core machine): 19 hops
    for a plain request. Sync only here, everything above runs sync in the one thread the
    outer (sync-only) middlewares already use; 7 are left, around the view and Django's own
    signals. Keep it last.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)
