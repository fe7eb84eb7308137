import contextlib
import datetime
import importlib
import os
from pathlib import Path
from urllib.parse import quote

import kombu.pools
import pytest
import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.commands import flush
from django.db import connections
from django.test import Client
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY

from accounts.models import TOTPAuthenticator
from accounts.roles import Role
from ehr_portal.celery import app as celery_app
from records.models import CareTeamMembership, CareTeamRole, PatientSource
from records.services import register_patient

SHARED_DATA = Path(
    os.environ.get(
        "EHR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)
SYNTHEA_DIR = SHARED_DATA / "synthea"
CHROMIUM = os.environ.get("EHR_CHROMIUM", "/usr/bin/chromium")

# The live server listens on the loopback address only, never on a name to resolve.
os.environ.setdefault("DJANGO_LIVE_TEST_SERVER_ADDRESS", "127.0.0.1")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium keeps calling hosts this machine cannot reach.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Playwright's sync API runs an event loop in the test thread; Django's
# async-safety guard would otherwise refuse the ORM calls the tests make.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser_type_launch_args(tmp_path_factory) -> dict:
    """Debian's Chromium (Playwright never downloads a browser here), with a
    throwaway profile so nothing is left in the home directory."""
    profile_home = tmp_path_factory.mktemp("chromium-home")
    return {
        "executable_path": CHROMIUM,
        "headless": True,
        "args": CHROMIUM_ARGS,
        "env": {
            "XDG_CONFIG_HOME": str(profile_home / "config"),
            "XDG_CACHE_HOME": str(profile_home / "cache"),
        },
    }


@pytest.fixture(autouse=True)
def _fresh_counters():
    """Rate-limit counters live in the cache; each test starts from zero."""
    from django.core.cache import cache

    cache.clear()
    yield


WRITE_ONCE = importlib.import_module("audit.migrations.0002_write_once_triggers")
CHAIN_KEY_WRITE_ONCE = importlib.import_module(
    "audit.migrations.0007_chain_key_fingerprint"
)
# Installed in this order and removed in the reverse one: on PostgreSQL the
# chain key table's trigger calls the function that 0002 creates.
WRITE_ONCE_TRIGGERS = (WRITE_ONCE, CHAIN_KEY_WRITE_ONCE)


def run_statements(alias: str, statements) -> None:
    with connections[alias].cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _flush_lifting_audit_triggers(handle):
    """Transactional tests end with a flush, which the write-once triggers refuse.

    Only the test harness lifts them, for the flush alone; nothing in the portal
    has a path that empties the audit table.
    """

    def flush_handle(self, **options):
        alias = options.get("database")
        if alias != "audit":
            return handle(self, **options)
        vendor = connections[alias].vendor
        for migration in reversed(WRITE_ONCE_TRIGGERS):
            run_statements(alias, migration.STATEMENTS[vendor][1])
        try:
            return handle(self, **options)
        finally:
            for migration in WRITE_ONCE_TRIGGERS:
                run_statements(alias, migration.STATEMENTS[vendor][0])

    return flush_handle


flush.Command.handle = _flush_lifting_audit_triggers(flush.Command.handle)


NUMBERED_IN_CHAIN = importlib.import_module(
    "audit.migrations.0006_refuse_numbers_outside_the_chain"
)


@contextlib.contextmanager
def audit_triggers_lifted():
    """What a database superuser can do: drop the audit table's triggers for a while."""
    vendor = connections["audit"].vendor
    triggers = [
        migration.STATEMENTS[vendor]
        for migration in (*WRITE_ONCE_TRIGGERS, NUMBERED_IN_CHAIN)
    ]
    for _install, remove in reversed(triggers):
        run_statements("audit", remove)
    try:
        yield connections["audit"]
    finally:
        for install, _remove in triggers:
            run_statements("audit", install)


def database_url(alias: str) -> str:
    """A URL for the test database behind ``alias``, for a process of its own."""
    settings_dict = connections[alias].settings_dict
    if connections[alias].vendor == "sqlite":
        return f"sqlite:///{settings_dict['NAME']}"
    credentials = quote(settings_dict["USER"] or "")
    if settings_dict.get("PASSWORD"):
        credentials += ":" + quote(settings_dict["PASSWORD"])
    host = settings_dict["HOST"] or "127.0.0.1"
    port = settings_dict["PORT"] or 5432
    return f"postgres://{credentials}@{host}:{port}/{settings_dict['NAME']}"


def portal_process_env(**extra) -> dict:
    """The environment for a portal process (worker, writer) on the test databases."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ehr_portal.settings",
        "PORTAL_MODE": "development",
        "DATABASE_URL": database_url("default"),
        "AUDIT_DATABASE_URL": database_url("audit"),
        **extra,
    }


@pytest.fixture(scope="session")
def synthea_bundles() -> list[Path]:
    bundles = sorted(SYNTHEA_DIR.glob("*.json"))
    assert bundles, f"the Synthea bundles are missing from {SYNTHEA_DIR}"
    return bundles


def make_user(username: str, role: Role, password: str = "correct horse battery 9"):
    user = get_user_model().objects.create_user(username=username, password=password)
    user.groups.add(Group.objects.get_or_create(name=role.value)[0])
    TOTPAuthenticator.objects.create(user=user, name="test", confirmed=True)
    return get_user_model().objects.get(pk=user.pk)


def current_code(user) -> str:
    return TOTPAuthenticator.objects.get(user=user).current_code()


def verified_client(user, *, code_entered_at=None, fresh_code=True) -> Client:
    """A client whose session has passed both factors, without the form round trip.

    The code counts as entered now (so step-up pages let it through), or at
    ``code_entered_at``; with ``fresh_code=False`` no time is recorded at all.
    """
    from accounts.services import OTP_AT_SESSION_KEY

    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = TOTPAuthenticator.objects.get(
        user=user
    ).persistent_id
    if fresh_code:
        session[OTP_AT_SESSION_KEY] = (code_entered_at or timezone.now()).timestamp()
    session.save()
    return client


def add_to_care_team(user, patient, *, starts_on=None, ends_on=None):
    return CareTeamMembership.objects.create(
        member=user,
        patient=patient,
        role=CareTeamRole.ATTENDING
        if user.has_role(Role.PHYSICIAN)
        else CareTeamRole.NURSE,
        starts_on=starts_on or timezone.localdate() - datetime.timedelta(days=30),
        ends_on=ends_on,
    )


@pytest.fixture
def physician(db):
    return make_user("dr.house", Role.PHYSICIAN)


@pytest.fixture
def nurse(db):
    return make_user("nurse.jones", Role.NURSE)


@pytest.fixture
def compliance_officer(db):
    return make_user("compliance.lee", Role.COMPLIANCE_OFFICER)


@pytest.fixture
def export_staff(db):
    return make_user("export.kim", Role.EXPORT_STAFF)


@pytest.fixture
def marker_patient(db):
    """A patient whose identity strings are unique enough to count in raw bytes."""
    return register_patient(
        given_name="Quillonemarker",
        family_name="Zyxwvutmarker",
        birth_date=datetime.date(1961, 2, 28),
        sex="female",
        address="17 Markerstreet Way, Springfield MA",
        telecom="phone: 555-010-9999",
        source=PatientSource.DEMO,
    )


@pytest.fixture
def isolated_keys(settings, tmp_path):
    """A keyring and master key of this test's own, in a temporary folder."""
    from records import crypto

    settings.PORTAL_KEYRING_FILE = tmp_path / "keys" / "keyring.json"
    settings.PORTAL_MASTER_KEY_FILE = tmp_path / "keys" / "master.key"
    settings.PORTAL_MASTER_KEY_PROVIDER = "file"
    crypto.reset_keyring_cache()
    crypto.keyring()
    yield settings
    crypto.reset_keyring_cache()


@pytest.fixture
def hsm_keys(isolated_keys, softhsm_token, monkeypatch, tmp_path):
    """isolated_keys, with the master key generated in the SoftHSM2 token."""
    from django.core.management import call_command

    from records import crypto

    library, token, pin = softhsm_token
    isolated_keys.PORTAL_MASTER_KEY_PROVIDER = "pkcs11"
    isolated_keys.PORTAL_PKCS11_LIBRARY = library
    isolated_keys.PORTAL_PKCS11_TOKEN = token
    isolated_keys.PORTAL_PKCS11_KEY_LABEL = f"master-{tmp_path.name}"
    isolated_keys.PORTAL_KEYRING_FILE = tmp_path / "hsm-keyring.json"
    monkeypatch.setenv("PORTAL_PKCS11_PIN", pin)
    crypto.reset_keyring_cache()
    call_command("create_master_key")
    return isolated_keys


SOFTHSM_LIBRARIES = [
    os.environ.get("EHR_SOFTHSM2_LIBRARY", ""),
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
]


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory):
    """A fresh SoftHSM2 token for this test run: (library, label, PIN).

    SoftHSM reads SOFTHSM2_CONF when the library initialises, once per
    process, so one token serves the whole session.
    """
    import subprocess

    library = next((path for path in SOFTHSM_LIBRARIES if Path(path).is_file()), None)
    assert library, "SoftHSM2 is missing: apt-get install -y softhsm2"
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    config = folder / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {folder / 'tokens'}\n"
        "objectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(config)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "ehr-test",
         "--pin", "246810", "--so-pin", "13579111"],
        check=True, capture_output=True,
    )  # fmt: skip
    return library, "ehr-test", "246810"


def pytest_collection_modifyitems(config, items):
    """Leave PostgreSQL-only tests out of the SQLite pass; the PostgreSQL pass of
    the same test command runs them (scripts/test.sh runs both)."""
    from django.conf import settings

    if settings.DATABASES["audit"]["ENGINE"].endswith("postgresql"):
        return
    postgresql_only = [item for item in items if item.get_closest_marker("postgresql")]
    if postgresql_only:
        config.hook.pytest_deselected(items=postgresql_only)
        items[:] = [item for item in items if item not in postgresql_only]


# A Redis database of the test's own, emptied before and after: two checkouts
# running the suite at once each name their own.
QUEUE_URL = os.environ.get("EHR_TEST_QUEUE_REDIS_URL", "redis://127.0.0.1:6379/4")


@pytest.fixture
def redis_queue():
    """Celery over its own Redis database (QUEUE_URL), emptied before and after."""
    store = redis.Redis.from_url(QUEUE_URL)
    store.flushdb()
    saved = {
        key: celery_app.conf[key]
        for key in ("broker_url", "result_backend", "task_always_eager")
    }
    _forget_connections()
    celery_app.conf.update(
        broker_url=QUEUE_URL, result_backend=QUEUE_URL, task_always_eager=False
    )
    yield store
    _forget_connections()
    celery_app.conf.update(saved)
    store.flushdb()


def _forget_connections() -> None:
    # The app caches its broker pool, producers and result backend from the
    # first use (another test may have tried the default broker), and kombu
    # keeps producer pools per broker address for the whole process: a second
    # test on the same address would get the pool the first one closed.
    if celery_app._pool is not None:
        celery_app._pool.force_close_all()
        celery_app._pool = None
    celery_app.amqp._producer_pool = None
    kombu.pools.reset()
    vars(celery_app._local).pop("backend", None)


@pytest.fixture
def audit_outage(monkeypatch):
    """The trail cannot be written: every audit write raises AuditUnavailable."""
    from audit import services as audit_services

    def unreachable(*args, **kwargs):
        raise audit_services.AuditUnavailable("audit database unreachable")

    monkeypatch.setattr(audit_services, "_append", unreachable)
