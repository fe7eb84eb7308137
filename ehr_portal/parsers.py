"""The API's JSON parser: DRF's, refusing nesting too deep for Python as bad input."""

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            # Python's decoder gives up on deep nesting with RecursionError,
            # which DRF does not catch: it would be a 500 for a client's body.
            raise ParseError("JSON parse error - nested too deeply") from None
