"""The API's JSON renderer: DRF's, plus lists of values that are already JSON text.

A history page served from the cache is a list of messages each stored as its API JSON. Parsing
them only to serialize them again was most of that request's time (bench/, "History page");
`JSONFragments` lets them go out as stored. The bytes are the ones DRF's renderer would write
for the same values (conversations/tests/test_serializers.py checks it).
"""

import json

from rest_framework import renderers
from rest_framework.compat import SHORT_SEPARATORS
from rest_framework.settings import api_settings
from rest_framework.utils import encoders


def dumps(value) -> bytes:
    """`value` as DRF's JSONRenderer writes it by default (compact, UTF-8, strict)."""
    text = json.dumps(
        value,
        cls=encoders.JSONEncoder,
        ensure_ascii=not api_settings.UNICODE_JSON,
        allow_nan=not api_settings.STRICT_JSON,
        separators=SHORT_SEPARATORS,
    )
    # As DRF does: U+2028/U+2029 are valid JSON but end lines in JavaScript.
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


class JSONFragments:
    """A JSON array whose items are already JSON text (bytes from `dumps`)."""

    __slots__ = ("items",)

    def __init__(self, items: list[bytes]):
        self.items = items

    def materialize(self) -> list:
        return [json.loads(item) for item in self.items]


class JSONRenderer(renderers.JSONRenderer):
    """DRF's JSONRenderer; a top-level dict may hold `JSONFragments`, written out as they are."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if not isinstance(data, dict) or not any(
            isinstance(v, JSONFragments) for v in data.values()
        ):
            return super().render(data, accepted_media_type, renderer_context)
        indent = self.get_indent(accepted_media_type, renderer_context or {})
        if indent is not None or not self.compact:
            # Pretty-printed (`; indent=` or the browsable API): lay it out the usual way.
            plain = {
                k: v.materialize() if isinstance(v, JSONFragments) else v for k, v in data.items()
            }
            return super().render(plain, accepted_media_type, renderer_context)
        parts = []
        for key, value in data.items():
            if isinstance(value, JSONFragments):
                encoded = b"[" + b",".join(value.items) + b"]"
            else:
                encoded = dumps(value)
            parts.append(dumps(str(key)) + b":" + encoded)
        return b"{" + b",".join(parts) + b"}"
