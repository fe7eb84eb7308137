"""Who is asking, from where: the context every audit event and log line carries.

Kept in a context variable so that code far from the view (the audit writer,
the log filter) can read it without the request being passed everywhere.
"""

import contextlib
import contextvars
import hashlib
import ipaddress
import secrets
from dataclasses import dataclass

from django.conf import settings


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


def client_address(request) -> str | None:
    """The address the request came from, for the audit trail and the lockout.

    The socket's, unless PORTAL_TRUSTED_PROXY_COUNT reverse proxies stand in
    front: each of them appends to X-Forwarded-For the address it was reached
    from, so the client is the entry that many places from the right. What a
    client wrote to the left of it is its own claim and is never read, so a
    forged header cannot move the trail to another address. A header too
    short or not an address (a proxy set up otherwise) leaves the socket's.
    """
    meta = request.META
    socket_address = meta.get("REMOTE_ADDR") or None
    proxies = settings.PORTAL_TRUSTED_PROXY_COUNT
    if proxies < 1:
        return socket_address

    hops = [hop.strip() for hop in meta.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    if len(hops) < proxies:
        return socket_address
    try:
        return str(ipaddress.ip_address(hops[-proxies]))
    except ValueError:
        return socket_address


def from_request(request) -> RequestContext:
    meta = request.META
    return RequestContext(
        request_id=new_request_id(),
        ip_address=client_address(request),
        device_fingerprint=device_fingerprint(
            meta.get("HTTP_USER_AGENT", ""), meta.get("HTTP_ACCEPT_LANGUAGE", "")
        ),
    )


def activate(context: RequestContext | None) -> contextvars.Token:
    return _current.set(context)


def deactivate(token: contextvars.Token) -> None:
    _current.reset(token)


@contextlib.contextmanager
def own_request_id():
    """Run work outside a web request (a command, a task) under an id of its own.

    Its audit events can then be told apart from other runs'. Inside a
    request, the request's own context stays.
    """
    if _current.get() is not None:
        yield
        return
    token = activate(
        RequestContext(
            request_id=new_request_id(), ip_address=None, device_fingerprint=""
        )
    )
    try:
        yield
    finally:
        deactivate(token)


def current() -> RequestContext | None:
    return _current.get()


def current_request_id() -> str | None:
    context = _current.get()
    return context.request_id if context else None
