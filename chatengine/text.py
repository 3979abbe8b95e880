"""Shortening what a client sent before it is quoted back or logged."""

# Longest string an error body or a log line carries. A client's value is quoted in an error
# ('"<role>" is not a valid choice.') and so in its log line; unbounded, a 2 MB role comes
# back as a 2 MB body and one 2 MB line. Every message of our own is far shorter.
MAX_QUOTED_CHARS = 200
_TAIL_CHARS = 50  # kept from the end: the part of a message after the value says what is wrong
ELLIPSIS = "…"


def shorten(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """`text` if it has at most `limit` characters, else its start and end around an ellipsis,
    `limit` characters in all."""
    if len(text) <= limit:
        return text
    head = limit - _TAIL_CHARS - len(ELLIPSIS)
    return f"{text[:head]}{ELLIPSIS}{text[-_TAIL_CHARS:]}"
