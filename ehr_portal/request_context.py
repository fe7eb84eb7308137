"""Who is asking, from where: the context every audit event and log line carries.

Kept in a context variable so that code far from the view (the audit writer,
the log filter) can read it without the request being passed everywhere.
"""

import contextvars
import hashlib
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    ip_address: str | None
    device_fingerprint: str


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "ehr_request_context", default=None
)


def new_request_id() -> str:
    return secrets.token_hex(16)


def device_fingerprint(user_agent: str, accept_language: str) -> str:
    """A stable, non-reversible tag for the browser; never the raw header."""
    digest = hashlib.sha256(f"{user_agent}\n{accept_language}".encode())
    return digest.hexdigest()[:32]


def from_request(request) -> RequestContext:
    # The socket address only: X-Forwarded-For is client-supplied unless a
    # trusted proxy overwrites it, and a forged header must not move the
    # audit trail or a lockout counter to another address.
    meta = request.META
    return RequestContext(
        request_id=new_request_id(),
        ip_address=meta.get("REMOTE_ADDR") or None,
        device_fingerprint=device_fingerprint(
            meta.get("HTTP_USER_AGENT", ""), meta.get("HTTP_ACCEPT_LANGUAGE", "")
        ),
    )


def activate(context: RequestContext | None) -> contextvars.Token:
    return _current.set(context)


def deactivate(token: contextvars.Token) -> None:
    _current.reset(token)


def current() -> RequestContext | None:
    return _current.get()


def current_request_id() -> str | None:
    context = _current.get()
    return context.request_id if context else None
