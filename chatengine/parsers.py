"""The API's JSON parser: DRF's, plus a clean answer to documents nested too deeply.

Python's json raises RecursionError past the interpreter's recursion limit (a few thousand
levels, a few kilobytes of `[`): DRF lets it through as a 500. It is a malformed body: 400.
"""

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
