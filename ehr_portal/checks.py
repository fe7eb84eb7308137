"""The `hipaa` system checks: settings that `check --deploy` does not look at.

Run with `manage.py check --tag hipaa` (or plain `check`). In production mode
each broken safeguard is an error with its own id, so a deploy script stops.
"""

from urllib.parse import parse_qs, urlparse

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

HIPAA = "hipaa"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", ""}
IDLE_LIMIT_SECONDS = 15 * 60
SESSION_LIMIT_SECONDS = 12 * 3600


def _is_loopback(host: str | None) -> bool:
    return (host or "") in LOOPBACK_HOSTS or (host or "").startswith("/")


def database_errors(databases: dict) -> list[Error]:
    errors = []
    for alias, database in databases.items():
        if not database["ENGINE"].endswith("postgresql"):
            continue
        if _is_loopback(database.get("HOST")):
            continue
        if database.get("OPTIONS", {}).get("sslmode") != "verify-full":
            errors.append(
                Error(
                    f"The {alias} database is reached over the network without "
                    "sslmode=verify-full.",
                    hint="Add ?sslmode=verify-full&sslrootcert=... to the URL.",
                    id="hipaa.E003",
                )
            )
    return errors


def _broker_errors() -> list[Error]:
    broker = urlparse(settings.CELERY_BROKER_URL or "")
    # "memory" is the in-process stand-in used when no broker is set.
    if broker.scheme in ("", "memory") or _is_loopback(broker.hostname):
        return []
    if broker.scheme != "rediss":
        return [
            Error(
                "The Celery broker is reached over the network without TLS.",
                hint="Use a rediss:// URL with ssl_cert_reqs=required.",
                id="hipaa.E004",
            )
        ]
    cert_reqs = parse_qs(broker.query).get("ssl_cert_reqs", [""])[0].lower()
    if cert_reqs not in ("required", "cert_required"):
        return [
            Error(
                "The Celery broker's certificate is not verified.",
                hint="Add ssl_cert_reqs=required to CELERY_BROKER_URL.",
                id="hipaa.E005",
            )
        ]
    return []


def _email_errors() -> list[Error]:
    if not settings.EMAIL_BACKEND.endswith("smtp.EmailBackend"):
        return []
    if _is_loopback(settings.EMAIL_HOST):
        return []
    if settings.EMAIL_USE_TLS or settings.EMAIL_USE_SSL:
        return []
    return [
        Error(
            "E-mail (compliance alerts) leaves without TLS.",
            hint="Set EMAIL_USE_TLS or EMAIL_USE_SSL.",
            id="hipaa.E006",
        )
    ]


def _session_errors() -> list[Error]:
    errors = []
    if settings.SESSION_SECURITY_EXPIRE_AFTER > IDLE_LIMIT_SECONDS:
        errors.append(
            Error(
                "Idle sign-out is later than 15 minutes.",
                hint="PORTAL_IDLE_LOGOFF_SECONDS must be 900 or less.",
                id="hipaa.E007",
            )
        )
    if settings.SESSION_COOKIE_AGE > SESSION_LIMIT_SECONDS:
        errors.append(
            Error(
                "Sessions may last longer than 12 hours.",
                hint="PORTAL_SESSION_MAX_AGE must be 43200 or less.",
                id="hipaa.E008",
            )
        )
    if settings.SESSION_SECURITY_WARN_AFTER >= settings.SESSION_SECURITY_EXPIRE_AFTER:
        # The warning would come after the sign-out it warns of: work typed
        # into a page is lost with no chance to stay signed in.
        errors.append(
            Error(
                "The idle warning comes no earlier than the idle sign-out.",
                hint="PORTAL_IDLE_WARNING_SECONDS must be less than "
                "PORTAL_IDLE_LOGOFF_SECONDS.",
                id="hipaa.E009",
            )
        )
    return errors


@register(HIPAA, Tags.security, deploy=False)
def check_safeguards(app_configs, **kwargs):
    issues: list = []
    if settings.DEBUG and not settings.DEVELOPMENT:
        issues.append(Error("DEBUG is on in production mode.", id="hipaa.E001"))
    issues += _session_errors()
    if settings.DEVELOPMENT:
        return issues

    if settings.SECURE_HSTS_SECONDS < 31_536_000:
        issues.append(Warning("HSTS is shorter than one year.", id="hipaa.W001"))
    issues += database_errors(settings.DATABASES)
    issues += _broker_errors() + _email_errors() + _cache_warnings()
    return issues


def _cache_warnings() -> list[Warning]:
    # The search and API rate limits count in the cache: in each process's
    # own memory, N workers allow N times the limit.
    if not settings.CACHES["default"]["BACKEND"].endswith("LocMemCache"):
        return []
    return [
        Warning(
            "The rate limits are counted in each process's own memory.",
            hint="Set PORTAL_CACHE_URL (Redis) when the portal runs in more than "
            "one process (gunicorn --workers), or each allows the full limit.",
            id="hipaa.W002",
        )
    ]
