"""Log formatting and the request-id filter that settings.LOGGING wires onto the one handler.

The filter sits on the handler, not on a logger, so it sees every record that reaches stdout,
whichever logger (chatengine, llm, conversations, django, a library) emitted it.
"""

import logging

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from chatengine.request_id import get_request_id
from chatengine.text import shorten

# uvicorn adds an ANSI-coloured copy of some messages; noise outside a terminal.
_DROPPED = ["color_message"]
# Attributes that are not caller-supplied `extra` fields, for the console formatter.
_NOT_EXTRA = {*RESERVED_ATTRS, *_DROPPED, "request_id", "message", "asctime", "event"}
# A set: the filter below tests every attribute of every record against it (a list scan
# was the largest part of an access line's cost).
_RESERVED = frozenset(RESERVED_ATTRS)


class RequestIdFilter(logging.Filter):
    """Stamp the current request's id on every record (None outside a request).

    A record that already carries `request_id` keeps it: code that finishes work after the
    request's context is gone (a streamed response) passes the id explicitly.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = get_request_id()
        return True


class ShortenValuesFilter(logging.Filter):
    """Shorten (`chatengine.text.shorten`) every string a record carries as data: its `%`
    arguments and its `extra` fields. The format string is ours; the data may be what a client
    sent (a path, a value quoted in an error message), of any length."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_shortened(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _shortened(value) for key, value in record.args.items()}
        for key, value in list(record.__dict__.items()):
            if key not in _RESERVED and isinstance(value, str):
                record.__dict__[key] = shorten(value)
        return True


def _shortened(value):
    return shorten(value) if isinstance(value, str) else value


def json_formatter() -> JsonFormatter:
    """One JSON object per line: timestamp, level, logger, message, request_id + `extra` keys."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s %(request_id)s",
        rename_fields={"levelname": "level", "name": "logger"},
        # ISO 8601 UTC with microseconds, from record.created; the placeholder default only
        # puts the key first in the line, where people look for it.
        timestamp=True,
        defaults={"timestamp": None},
        reserved_attrs=[*RESERVED_ATTRS, *_DROPPED],
    )


class ConsoleFormatter(logging.Formatter):
    """Readable development lines: `time LEVEL logger [request id] message key=value ...`."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.request_id = request_id or "-"  # for the format string only; other handlers
        try:  # see the record unchanged
            line = super().format(record)
        finally:
            record.request_id = request_id
        extras = {k: v for k, v in record.__dict__.items() if k not in _NOT_EXTRA}
        if not extras:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the key=value part
        fields = " ".join(f"{key}={value}" for key, value in extras.items())
        return f"{head} {fields}{sep}{tail}"
