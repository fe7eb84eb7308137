"""Settings for the EHR Portal, read from the environment.

PORTAL_MODE is ``production`` unless set: a forgotten variable must never turn
on debugging, demo commands or generated keys on a real deployment.
"""

import logging
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from ehr_portal import environment as env

BASE_DIR = Path(__file__).resolve().parent.parent

PORTAL_MODE = env.read_mode()
DEVELOPMENT = PORTAL_MODE == "development"

PORTAL_DATA_DIR = Path(env.read("PORTAL_DATA_DIR") or BASE_DIR / "var").resolve()
# SQLite files, keys and demo credentials: readable by the portal's user only.
PORTAL_DATA_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
if PORTAL_DATA_DIR.stat().st_uid == os.getuid():
    PORTAL_DATA_DIR.chmod(0o700)

# DEBUG pages show local variables, which on a chart view are PHI: only an
# explicit opt-in, and only in development mode.
DEBUG = DEVELOPMENT and env.read_bool("PORTAL_DEBUG", False)

SECRET_KEY = env.read_secret("DJANGO_SECRET_KEY", private=not DEVELOPMENT)
if not SECRET_KEY:
    if not DEVELOPMENT:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is required in production"
        )
    SECRET_KEY = env.development_secret(PORTAL_DATA_DIR / "secret_key")
elif not DEVELOPMENT:
    # Django's own deploy check (W009) only warns; this key signs sessions,
    # password-reset links and the CSRF tokens.
    if len(SECRET_KEY) < 50:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be at least 50 characters (python -c 'import "
            "secrets; print(secrets.token_urlsafe(50))' makes one)"
        )
    if len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must hold at least 5 different characters"
        )

# Field encryption (envelope): the keyring file holds versioned data keys
# and blind-index keys, each wrapped by a master key that lives apart, in a
# file or a PKCS#11 token. Development creates the keyring and a master key
# file in the data folder; production refuses to start without them
# (records.apps checks at start-up). The PKCS#11 PIN is read from the
# environment by the provider only, so it never sits in settings.
_keyring_file = env.read("PORTAL_KEYRING_FILE")
# As for the master key below: development makes a missing keyring only at the
# path it chose itself. A keyring the operator named and that is not there is
# a mistake to report; a new one there could never open the data already
# sealed. create_master_key makes one where it is told to.
PORTAL_DEVELOPMENT_KEYRING = DEVELOPMENT and not _keyring_file
PORTAL_KEYRING_FILE = Path(_keyring_file or PORTAL_DATA_DIR / "keys" / "keyring.json")
PORTAL_MASTER_KEY_PROVIDER = env.read("PORTAL_MASTER_KEY_PROVIDER", "file")
_master_key_file = env.read("PORTAL_MASTER_KEY_FILE")
# Development makes a missing master key file only where it chose the path
# itself: a file the operator named and that is not there is a mistake to
# report (a key made in its place could not open the keyring), and only
# create_master_key makes one there.
PORTAL_DEVELOPMENT_MASTER_KEY = DEVELOPMENT and not _master_key_file
if PORTAL_DEVELOPMENT_MASTER_KEY:
    _master_key_file = PORTAL_DATA_DIR / "keys" / "master.key"
PORTAL_MASTER_KEY_FILE = Path(_master_key_file) if _master_key_file else None
PORTAL_PKCS11_LIBRARY = env.read("PORTAL_PKCS11_LIBRARY", "")
PORTAL_PKCS11_TOKEN = env.read("PORTAL_PKCS11_TOKEN", "")
PORTAL_PKCS11_KEY_LABEL = env.read("PORTAL_PKCS11_KEY_LABEL", "ehr-portal-master")
PORTAL_KEY_MAX_AGE_DAYS = env.read_int("PORTAL_KEY_MAX_AGE_DAYS", 30)
PORTAL_KEYRING_REFRESH_SECONDS = env.read_int("PORTAL_KEYRING_REFRESH_SECONDS", 2)
# The largest FHIR bundle import_fhir reads; Synthea's run to a few tens of MB.
PORTAL_IMPORT_MAX_MB = env.read_int("PORTAL_IMPORT_MAX_MB", 100)
if PORTAL_IMPORT_MAX_MB < 1:
    raise ImproperlyConfigured("PORTAL_IMPORT_MAX_MB must be at least 1")

# The audit trail's own keys (HMAC): one chains the events, the other signs
# the checkpoints kept outside both databases. Neither is the keyring, so a
# leaked field key does not let anyone rewrite the evidence, nor the reverse.
AUDIT_CHAIN_KEY = env.read_secret("PORTAL_AUDIT_CHAIN_KEY", private=not DEVELOPMENT)
AUDIT_CHECKPOINT_KEY = env.read_secret(
    "PORTAL_AUDIT_CHECKPOINT_KEY", private=not DEVELOPMENT
)
if not (AUDIT_CHAIN_KEY and AUDIT_CHECKPOINT_KEY) and not DEVELOPMENT:
    raise ImproperlyConfigured(
        "PORTAL_AUDIT_CHAIN_KEY and PORTAL_AUDIT_CHECKPOINT_KEY (or their _FILE "
        "variants) are required in production"
    )
for _name, _key in (
    ("PORTAL_AUDIT_CHAIN_KEY", AUDIT_CHAIN_KEY),
    ("PORTAL_AUDIT_CHECKPOINT_KEY", AUDIT_CHECKPOINT_KEY),
):
    # A short HMAC key can be guessed offline from one event and its hash;
    # spaces around it add nothing to guess.
    if _key and len(_key.strip()) < 40:
        raise ImproperlyConfigured(
            f"{_name} must be at least 40 characters (README, Audit keys)"
        )
if AUDIT_CHAIN_KEY and AUDIT_CHAIN_KEY.strip() == (AUDIT_CHECKPOINT_KEY or "").strip():
    # A checkpoint is the proof kept apart from the chain: with one key, whoever
    # can rewrite the chain can re-sign its checkpoints too.
    raise ImproperlyConfigured(
        "PORTAL_AUDIT_CHAIN_KEY and PORTAL_AUDIT_CHECKPOINT_KEY must differ "
        "(README, Audit keys)"
    )
AUDIT_CHAIN_KEY = AUDIT_CHAIN_KEY or env.development_secret(
    PORTAL_DATA_DIR / "keys" / "audit_chain_key"
)
AUDIT_CHECKPOINT_KEY = AUDIT_CHECKPOINT_KEY or env.development_secret(
    PORTAL_DATA_DIR / "keys" / "audit_checkpoint_key"
)
AUDIT_CHECKPOINT_DIR = Path(
    env.read("PORTAL_AUDIT_CHECKPOINT_DIR") or PORTAL_DATA_DIR / "audit-checkpoints"
)
AUDIT_CHECKPOINT_SECONDS = env.read_int("PORTAL_AUDIT_CHECKPOINT_SECONDS", 300)

ALLOWED_HOSTS = env.read_list(
    "PORTAL_ALLOWED_HOSTS",
    ["127.0.0.1", "localhost", "[::1]", "testserver"] if DEVELOPMENT else [],
)
if "*" in ALLOWED_HOSTS and not DEVELOPMENT:
    # Any Host header would do: password-reset links, passkey origins and
    # the CSRF origin check would all trust whatever a request claims.
    raise ImproperlyConfigured(
        "PORTAL_ALLOWED_HOSTS may not contain '*' in production: name the "
        "portal's host names"
    )
if not ALLOWED_HOSTS and not DEVELOPMENT:
    # Said here: the passkey origins come from these hosts, and their own
    # check would otherwise be the first to complain, about something else.
    raise ImproperlyConfigured(
        "PORTAL_ALLOWED_HOSTS is required in production: the host names the "
        "portal answers to, comma-separated (README, Configuration)"
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp_webauthn",
    "axes",
    "session_security",
    "django_filters",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "ehr_portal.apps.PortalConfig",
    "accounts",
    "records",
    "audit",
]

MIDDLEWARE = [
    "ehr_portal.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Outside the sign-in checks, so that the pages they answer with (a note
    # given back after sign-out) are kept by no cache either.
    "ehr_portal.middleware.NoStoreMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before the session timeout, which tells the signed-out user why.
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "accounts.middleware.SessionTimeoutMiddleware",
    "accounts.middleware.VerifiedSessionMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "ehr_portal.middleware.DisplayTimeZoneMiddleware",
    "ehr_portal.middleware.MethodNotAllowedPageMiddleware",
    "audit.middleware.AuditFailClosedMiddleware",
    "records.middleware.SealedDataFailureMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "ehr_portal.urls"
WSGI_APPLICATION = "ehr_portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.roles",
                "ehr_portal.context_processors.display_time_zone",
                "accounts.context_processors.idle_timeout",
            ],
        },
    },
]

# Seconds a database connection is kept for the next request. Not in
# development: runserver starts a thread per request, and connections kept by
# threads that have ended would pile up until PostgreSQL refuses new ones.
CONN_MAX_AGE = env.read_int("PORTAL_DB_CONN_MAX_AGE", 0 if DEVELOPMENT else 60)

# Two databases: clinical data in "default", the audit trail apart in "audit",
# so that neither a clinical migration nor a clinical-database role can touch
# the evidence.
DATABASES = {
    "default": dj_database_url.parse(
        env.read("DATABASE_URL") or f"sqlite:///{PORTAL_DATA_DIR / 'portal.sqlite3'}",
        conn_max_age=CONN_MAX_AGE,
    ),
    "audit": dj_database_url.parse(
        env.read("AUDIT_DATABASE_URL")
        or f"sqlite:///{PORTAL_DATA_DIR / 'audit.sqlite3'}",
        conn_max_age=CONN_MAX_AGE,
    ),
}
# SQLite serialises writers; IMMEDIATE takes the write lock when a
# transaction begins, so two processes wait their turn instead of both
# reading the same state and acting on it: two audit writers would read the
# same chain head, and two administrators saving the same member's care
# relations would each find no overlap (SQLite reads take no row locks, so
# the select_for_update in their check does nothing there).
for _alias, _database in DATABASES.items():
    if _database["ENGINE"].endswith("sqlite3"):
        _database["CONN_MAX_AGE"] = 0
        _options = _database.setdefault("OPTIONS", {})
        # An audit write holds the lock for milliseconds: waiting longer means
        # something else holds it, and every page would hang that long before
        # its "temporarily unavailable" answer.
        _options["timeout"] = 5 if _alias == "audit" else 20
        _options["transaction_mode"] = "IMMEDIATE"
    elif _database["ENGINE"].endswith("postgresql"):
        # Parameters travel apart from the SQL, so psycopg prepares a query it
        # has sent five times and PostgreSQL stops parsing and planning the
        # same dozen statements on every chart open: 40% of the database's CPU
        # per open (bench/audit_bench.py). Django turns preparing off unless
        # asked; a pooler in transaction mode must then keep prepared
        # statements (PgBouncer's max_prepared_statements).
        _options = _database.setdefault("OPTIONS", {})
        _options["server_side_binding"] = True
        _options["prepare_threshold"] = 5
DATABASE_ROUTERS = ["audit.routers.AuditRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation."
        "UserAttributeSimilarityValidator"
    },
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {
        # Django's own list has only 190 entries long enough to matter here;
        # accounts.common_passwords derives 27,000 from it (README).
        "NAME": "django.contrib.auth.password_validation.CommonPasswordValidator",
        "OPTIONS": {
            "password_list_path": BASE_DIR
            / "accounts"
            / "data"
            / "common-passwords-12.txt.gz"
        },
    },
]
PASSWORD_RESET_TIMEOUT = 3600
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"

# Sessions: JSON only, gone when the browser closes, and idle sign-out after
# 15 minutes (45 CFR 164.312(a)(2)(iii), automatic logoff).
SESSION_ENGINE = "accounts.sessions"
SESSION_SERIALIZER = "django.contrib.sessions.serializers.JSONSerializer"
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.read_int("PORTAL_SESSION_MAX_AGE", 12 * 3600)
# Counted from the password step by accounts.middleware, however active the
# session is (NIST SP 800-63B AAL2: 12 hours).
SESSION_ABSOLUTE_LIFETIME_SECONDS = SESSION_COOKIE_AGE
SESSION_SECURITY_EXPIRE_AFTER = env.read_int("PORTAL_IDLE_LOGOFF_SECONDS", 15 * 60)
SESSION_SECURITY_WARN_AFTER = env.read_int("PORTAL_IDLE_WARNING_SECONDS", 13 * 60)
# How long a note kept unsent at an idle warning waits for its author.
PORTAL_NOTE_DRAFT_DAYS = env.read_int("PORTAL_NOTE_DRAFT_DAYS", 7)
# The page keeping an unsent note as the idle warning shows is not activity.
SESSION_SECURITY_PASSIVE_URL_NAMES = ["session_security_ping", "note_draft"]
CSRF_USE_SESSIONS = True
CSRF_FAILURE_VIEW = "ehr_portal.views.csrf_failure"

OTP_TOTP_ISSUER = "EHR Portal"
# Passkeys are a second factor after the password, never a way around it.
OTP_WEBAUTHN_ALLOW_PASSWORDLESS_LOGIN = False
OTP_WEBAUTHN_RP_NAME = "EHR Portal"
OTP_WEBAUTHN_RP_ID_CALLABLE = "accounts.passkeys.relying_party_id"
OTP_WEBAUTHN_HELPER_CLASS = "accounts.passkeys.PortalWebAuthnHelper"
# The origins a passkey may be used from: by default the allowed hosts over
# HTTPS (production) or the demo server at http://localhost:8000 (WebAuthn
# takes no IP address as a relying party).
OTP_WEBAUTHN_ALLOWED_ORIGINS = env.read_list(
    "PORTAL_PASSKEY_ORIGINS",
    ["http://localhost:8000"]
    if DEVELOPMENT
    else [f"https://{host}" for host in ALLOWED_HOSTS],
)
# The address people reach the portal at, for links in e-mail (a path alone
# is no link in a mail client): by default the first passkey origin.
PORTAL_PUBLIC_URL = env.read("PORTAL_PUBLIC_URL", OTP_WEBAUTHN_ALLOWED_ORIGINS[0])
# Wrong codes wait 1, 2, 4, 8... seconds before the next try (django-otp's
# ThrottlingMixin), on top of the account lockout below.
OTP_TOTP_THROTTLE_FACTOR = env.read_int("PORTAL_OTP_THROTTLE_FACTOR", 1)

# Searches beyond this per user and minute get 429: a brake on harvesting.
PATIENT_SEARCHES_PER_MINUTE = env.read_int("PORTAL_SEARCHES_PER_MINUTE", 60)

# Counters (search rate, API throttles) live here; Redis shares them between
# processes, the in-memory default suits the single-process demo.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env.read("PORTAL_CACHE_URL"),
    }
    if env.read("PORTAL_CACHE_URL")
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

# Emergency access lasts this long, then the chart closes again.
BREAK_GLASS_MINUTES = env.read_int("PORTAL_BREAK_GLASS_MINUTES", 60)

EMAIL_BACKEND = (
    "django.core.mail.backends.console.EmailBackend"
    if DEVELOPMENT
    else "django.core.mail.backends.smtp.EmailBackend"
)
DEFAULT_FROM_EMAIL = env.read("PORTAL_FROM_EMAIL", "ehr-portal@localhost")

# Lockout: 5 failures per account (not per address, which an attacker can
# rotate), 30 minutes of cool-off, usernames folded so case and spaces do not
# give an attacker fresh counters.
AXES_FAILURE_LIMIT = env.read_int("PORTAL_LOCKOUT_FAILURES", 5)
PORTAL_LOCKOUT_MINUTES = env.read_int("PORTAL_LOCKOUT_MINUTES", 30)
AXES_COOLOFF_TIME = PORTAL_LOCKOUT_MINUTES / 60
AXES_LOCKOUT_PARAMETERS = ["username"]
AXES_USERNAME_CALLABLE = "accounts.services.fold_username"
# The count is cleared only when both factors succeed (accounts.services):
# clearing it at the password step would let a thief holding the password
# guess codes forever, four at a time.
AXES_RESET_ON_SUCCESS = False
# A refused attempt during the lock does not restart the 30 minutes, so the
# locked page can say when the lock ends and a malicious lock lasts no longer.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "accounts.views.locked_out"
# Reverse proxies in front of the portal: the audit trail and django-axes
# read the client's address the same way (ehr_portal.request_context).
PORTAL_TRUSTED_PROXY_COUNT = env.read_int("PORTAL_TRUSTED_PROXY_COUNT", 0)
AXES_CLIENT_IP_CALLABLE = "ehr_portal.request_context.client_address"
AXES_VERBOSE = False
# axes' own admin would let a staff member delete lock records unaudited;
# unlocking goes through the audited user-admin action instead.
AXES_ENABLE_ADMIN = False
# axes warns when the lock is not per address. Locking per account is the
# decision here: an address is shared by a whole ward, and an attacker can
# rotate addresses but not the account being attacked.
SILENCED_SYSTEM_CHECKS = ["axes.W006"]

LANGUAGE_CODE = "en-us"
# Stored and logged in UTC (a daylight-saving change must not stretch an idle
# timeout); shown to clinicians in the hospital's zone.
TIME_ZONE = "UTC"
PORTAL_TIME_ZONE = env.read("PORTAL_TIME_ZONE", "UTC")
# The portal is written in English only. Without translation machinery each
# date, label and message on a chart page skips a catalogue lookup.
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Development serves static files from the app folders (WhiteNoise's finders);
# production serves the collected, hashed copies from STATIC_ROOT.
STATIC_ROOT = (
    None
    if DEVELOPMENT
    else Path(env.read("PORTAL_STATIC_ROOT") or BASE_DIR / "staticfiles")
)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEVELOPMENT
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEVELOPMENT

# Content-Security-Policy: only the portal's own files run, nothing inline,
# and no other site may frame a page (X-Frame-Options alone is not enough).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        # The enrolment QR code is an inline SVG image (data: URI).
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if not DEVELOPMENT:
    SECURE_SSL_REDIRECT = env.read_bool("PORTAL_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^api/"]
    SECURE_HSTS_SECONDS = 31_536_000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    SESSION_COOKIE_NAME = "__Host-sessionid"
    CSRF_COOKIE_SECURE = True
    CSRF_COOKIE_NAME = "__Host-csrftoken"

# Celery: JSON only (a pickled message could run code in the worker). Without
# a broker the tasks run in-process, and the audit app says so once at start.
# Celery still takes a connection from its pool for an in-process task: with
# no address kombu warned on each one that it fell back to localhost, so the
# in-memory transport is named (nothing leaves the process).
CELERY_TASK_ALWAYS_EAGER = not env.read("CELERY_BROKER_URL")
CELERY_BROKER_URL = env.read("CELERY_BROKER_URL") or "memory://localhost/"
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "audit-checkpoint": {
        "task": "audit.tasks.write_audit_checkpoint",
        "schedule": AUDIT_CHECKPOINT_SECONDS,
    },
    "purge-lapsed-note-drafts": {
        "task": "records.purge_lapsed_note_drafts",
        "schedule": 24 * 3600,
    },
    # Records the end of sessions whose browser never came back, within a
    # minute of their idle limit.
    "end-abandoned-sessions": {
        "task": "accounts.end_abandoned_sessions",
        "schedule": 60,
    },
}

# The API: session sign-in with both factors, deny by default, JSON only (no
# browsable API), throttled; HTTP Basic is left out because it would be a
# password-only door around the second factor.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.api.IsVerified"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["ehr_portal.parsers.BoundedJSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["ehr_portal.throttling.PortalUserRateThrottle"],
    "EXCEPTION_HANDLER": "ehr_portal.failure_pages.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "user": env.read("PORTAL_API_RATE", "600/minute"),
    },
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "EHR Portal API",
    "VERSION": "1",
    "SERVE_PERMISSIONS": ["accounts.api.IsVerified"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Record ids in paths take any case, hyphens or none (records.converters),
    # and are UUIDs all the same.
    "PATH_CONVERTER_OVERRIDES": {"record_id": {"type": "string", "format": "uuid"}},
}

# The compliance screens name patients by MRN; the audit app asks records for
# it through these public functions and never imports records' models.
AUDIT_PATIENT_LOOKUP = "records.services.patient_ref_for_mrn"
AUDIT_PATIENT_LABELS = "records.services.mrn_labels_for_refs"

# Error reports (the admin e-mail of a 500) quote no POST field, local
# variable or exception message: any of them can be PHI.
DEFAULT_EXCEPTION_REPORTER = "ehr_portal.error_reports.PHISafeExceptionReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "ehr_portal.error_reports.PHISafeReporterFilter"
ADMINS = [(address, address) for address in env.read_list("PORTAL_ADMIN_EMAILS", [])]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "utc": {
            "()": "ehr_portal.logging.UTCFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
    },
    "filters": {"request_id": {"()": "ehr_portal.logging.RequestIdFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "utc",
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": env.read("PORTAL_LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's request logger repeats the URL and the exception text of
        # every error; our own error handlers log a request id instead.
        "django.request": {"level": "ERROR", "propagate": True},
        "django.db.backends": {"level": "INFO", "propagate": True},
    },
}

logging.captureWarnings(True)
