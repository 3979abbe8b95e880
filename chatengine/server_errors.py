"""The servers' own error responses (requests refused before Django sees them) as the envelope.

gunicorn answers a request line over `limit_request_line` (414), headers over
`limit_request_fields` / `limit_request_field_size` (431) and bad framing (400) itself, with an
HTML page written by `gunicorn.util.write_error`, and offers no setting or hook for that body:
`install_in_gunicorn()` replaces that one function (chatengine/wsgi.py calls it when gunicorn
serves). uvicorn answers any malformed request with a plain-text 400 from its protocol class,
which chatengine/uvicorn_http.py overrides. Standard library only: uvicorn loads its protocol
class before Django is set up.
"""

import json

from chatengine.request_id import new_request_id
from chatengine.text import shorten

# status -> error type; any other 4xx is a validation_error, any 5xx an internal_error.
_TYPES = {403: "permission_error", 414: "uri_too_long", 431: "header_too_large"}


def envelope(status: int, message: str) -> tuple[str, bytes]:
    """(request id, JSON body) of the envelope for a refusal with this status."""
    request_id = new_request_id()
    default = "internal_error" if status >= 500 else "validation_error"
    error = {
        "type": _TYPES.get(status, default),
        "message": shorten(message),  # the server's message may quote the request
        "details": None,
        "request_id": request_id,
    }
    return request_id, json.dumps({"error": error}).encode()


def write_gunicorn_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """`gunicorn.util.write_error`, writing the envelope instead of HTML."""
    import gunicorn.util

    request_id, body = envelope(status_int, f"{reason}: {mesg}" if mesg else f"{reason}.")
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n"
        "\r\n"
    ).encode("latin-1")
    gunicorn.util.write_nonblock(sock, head + body)


def install_in_gunicorn() -> None:
    import gunicorn.util

    gunicorn.util.write_error = write_gunicorn_error
