"""URL converters for the portal's pages and API, registered on import."""

import uuid

from django.urls import register_converter


class RecordIdConverter:
    """A UUID in a page's address as people paste it: either case, hyphens or not.

    Django's own ``uuid`` converter takes only the lowercase, hyphenated
    spelling, so an id copied from a report in capitals answered 404 as if
    no such patient existed. Links the portal makes use the canonical form.
    """

    regex = (
        "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
        "[0-9a-fA-F]{12}"
    )

    def to_python(self, value: str) -> uuid.UUID:
        return uuid.UUID(value)

    def to_url(self, value) -> str:
        return str(uuid.UUID(str(value)))


register_converter(RecordIdConverter, "record_id")
