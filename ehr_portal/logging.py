"""Log formatting: ISO 8601 times in UTC and the request id on every line."""

import logging
import time
import traceback

from ehr_portal import request_context


def error_kind(error: BaseException) -> str:
    """What went wrong, for a log line or a refusal: the exception's class only.

    Its message may quote the value that failed (a name that did not parse,
    a row in a database error), which can be PHI.
    """
    return type(error).__name__


class UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's API)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def formatException(self, ei):  # noqa: N802 (logging's API)
        # An exception's message can quote PHI (a value that failed to parse,
        # a name in an assertion): logs keep the stack and the type only.
        error_type, _error, tb = ei
        stack = "".join(traceback.format_tb(tb))
        return f"Traceback (most recent call last):\n{stack}{error_type.__name__}: ..."


class RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.request_id = (
            request_context.current_request_id() or _request_id_of(record) or "-"
        )
        return True


def _request_id_of(record) -> str | None:
    # Django logs an error response once every middleware has returned, the
    # request's context with them, but hands the request to the log record.
    context = getattr(getattr(record, "request", None), "audit_context", None)
    return getattr(context, "request_id", None)
