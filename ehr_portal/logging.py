"""Log formatting: ISO 8601 times in UTC and the request id on every line."""

import logging
import time

from ehr_portal import request_context


class UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's API)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


class RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.request_id = request_context.current_request_id() or "-"
        return True
