"""The hipaa system checks stop a deployment that weakens a safeguard."""

import pytest

from ehr_portal.checks import check_safeguards, database_errors

pytestmark = pytest.mark.django_db(databases="__all__")


def _ids(settings) -> set[str]:
    return {issue.id for issue in check_safeguards(None)}


@pytest.fixture
def production(settings):
    settings.DEVELOPMENT = False
    settings.DEBUG = False
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "localhost"
    settings.CELERY_BROKER_URL = ""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/1",
        }
    }
    return settings


def test_a_sound_production_configuration_passes(production):
    assert _ids(production) == set()


def test_rate_limits_kept_in_process_memory_are_warned_of(production):
    production.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    }

    assert _ids(production) == {"hipaa.W002"}


def test_network_database_without_verified_tls_is_an_error():
    remote = {"ENGINE": "django.db.backends.postgresql", "HOST": "db.internal"}
    local = {"ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1"}

    assert [e.id for e in database_errors({"default": remote})] == ["hipaa.E003"]
    assert database_errors({"default": local}) == []

    remote["OPTIONS"] = {"sslmode": "verify-full"}
    assert database_errors({"default": remote}) == []


@pytest.mark.parametrize(
    "broker, error",
    [
        ("redis://queue.internal:6379/0", "hipaa.E004"),
        ("rediss://queue.internal:6379/0", "hipaa.E005"),
        ("rediss://queue.internal:6379/0?ssl_cert_reqs=required", None),
        ("redis://127.0.0.1:6379/0", None),
    ],
)
def test_broker_must_use_verified_tls_off_the_machine(production, broker, error):
    production.CELERY_BROKER_URL = broker

    found = _ids(production) & {"hipaa.E004", "hipaa.E005"}

    assert found == ({error} if error else set())


def test_mail_to_another_host_needs_tls(production):
    production.EMAIL_HOST = "smtp.hospital.example"

    assert "hipaa.E006" in _ids(production)

    production.EMAIL_USE_TLS = True
    assert "hipaa.E006" not in _ids(production)


def test_idle_sign_out_later_than_15_minutes_is_an_error(settings):
    settings.SESSION_SECURITY_EXPIRE_AFTER = 16 * 60

    assert "hipaa.E007" in _ids(settings)


def test_an_idle_warning_after_the_sign_out_is_an_error(settings):
    settings.SESSION_SECURITY_EXPIRE_AFTER = 60
    settings.SESSION_SECURITY_WARN_AFTER = 780

    assert "hipaa.E009" in _ids(settings)
    settings.SESSION_SECURITY_WARN_AFTER = 45
    assert "hipaa.E009" not in _ids(settings)


def test_debug_in_production_is_an_error(production):
    production.DEBUG = True

    assert "hipaa.E001" in _ids(production)


@pytest.mark.postgresql
def test_autovacuum_off_on_the_audit_server_is_a_warning_at_migrate():
    from django.db import connections

    from audit.checks import check_audit_database_maintenance

    with connections["audit"].cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        (autovacuum,) = cursor.fetchone()

    found = {
        issue.id for issue in check_audit_database_maintenance(databases=["audit"])
    }

    assert ("hipaa.W301" in found) == (autovacuum == "off")
    # Without the audit database in hand (a plain `check`) nothing is asked.
    assert not check_audit_database_maintenance(databases=None)
