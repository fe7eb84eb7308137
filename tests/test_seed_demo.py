"""seed_demo builds a usable demo world, and only in development mode."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_otp.oath import TOTP

from accounts.roles import Role
from records.models import CareTeamMembership, Patient, PatientSource

pytestmark = pytest.mark.django_db(databases="__all__")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def credentials(synthea_bundles, capsys):
    call_command("import_fhir", str(synthea_bundles[0].parent))
    capsys.readouterr()
    call_command("seed_demo")
    printed = capsys.readouterr().out
    path = Path(printed.strip().splitlines()[-1].split(": ", 1)[1])
    return path, json.loads(path.read_text())


def test_credentials_file_lists_every_role_with_a_working_secret(credentials):
    path, entries = credentials

    assert path.stat().st_mode & 0o777 == 0o600
    assert {entry["role"] for entry in entries} == {role.value for role in Role}
    assert [e["role"] for e in entries].count("nurse") == 2
    assert [e["role"] for e in entries].count("physician") == 2
    for entry in entries:
        assert set(entry) == {"username", "password", "role", "totp_secret"}
        user = get_user_model().objects.get(username=entry["username"])
        assert user.check_password(entry["password"])
        assert user.has_role(Role(entry["role"]))
        device = user.totpauthenticator_set.get(confirmed=True)
        code_from_secret = TOTP(base64.b32decode(entry["totp_secret"])).token()
        assert device.verify_token(f"{code_from_secret:06d}"), entry["username"]


def test_at_least_25_patients_with_the_imported_ones(credentials):
    assert Patient.objects.count() >= 25
    assert Patient.objects.filter(source=PatientSource.FHIR_IMPORT).count() == 10


def test_no_synthetic_record_is_dated_before_its_patients_birth(credentials):
    from records.models import AllergyIntolerance, Condition, Encounter, Observation

    born = {
        patient.pk: patient.birth_date
        for patient in Patient.objects.filter(source=PatientSource.DEMO)
    }
    for model in (Encounter, Observation, Condition, AllergyIntolerance):
        for record in model.objects.filter(patient__in=born):
            local_day = timezone.localtime(record.occurred_at).date()
            assert local_day >= born[record.patient_id], model.__name__


def test_care_teams_follow_the_demo_story(credentials):
    today = timezone.localdate()
    active = CareTeamMembership.objects.active_on(today)
    patel = active.filter(member__username="dr.patel")
    assert patel.count() >= 12
    assert patel.filter(patient__source=PatientSource.FHIR_IMPORT).exists()
    for nurse in ("nurse.jones", "nurse.garcia"):
        count = active.filter(member__username=nurse).count()
        assert 0 < count < Patient.objects.count(), nurse
    cared_for = set(active.values_list("patient_id", flat=True))
    assert cared_for == set(Patient.objects.values_list("pk", flat=True))


def test_running_twice_keeps_one_account_per_user(credentials):
    call_command("seed_demo")

    assert get_user_model().objects.filter(username="dr.patel").count() == 1
    assert Patient.objects.count() >= 25


def test_refuses_outside_development(settings):
    settings.DEVELOPMENT = False

    with pytest.raises(CommandError, match="PORTAL_MODE=development"):
        call_command("seed_demo")


def _manage(*args, **environment):
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(environment)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_production_is_the_default_and_refuses_without_a_secret_key(tmp_path):
    result = _manage("check", PORTAL_DATA_DIR=str(tmp_path))

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


# As a generator gives one: long, and not one character repeated.
SECRET_KEY = "Hx7-q2Lz_8vNw3Rk5Tb9Yc4Md6Fg1Jp0Qs" * 2
AUDIT_KEYS = {
    "PORTAL_AUDIT_CHAIN_KEY": "c" * 60,
    "PORTAL_AUDIT_CHECKPOINT_KEY": "k" * 60,
}


def _production_check(tmp_path, **environment):
    """manage.py check in production with a secret key and allowed hosts."""
    production = {
        "PORTAL_DATA_DIR": str(tmp_path),
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "PORTAL_ALLOWED_HOSTS": "portal.example",
    }
    return _manage("check", **{**production, **environment})


def test_production_refuses_without_the_audit_keys(tmp_path):
    result = _production_check(tmp_path)

    assert result.returncode != 0
    assert "PORTAL_AUDIT_CHAIN_KEY" in result.stderr
    assert not (tmp_path / "keys").exists(), "production must never create keys"


@pytest.mark.parametrize("name", list(AUDIT_KEYS))
def test_production_refuses_a_short_audit_key(tmp_path, name):
    # A short key can be guessed offline from one event and its hash, and
    # whoever guesses it can rewrite the trail without a trace.
    result = _production_check(tmp_path, **{**AUDIT_KEYS, name: "short"})

    assert result.returncode != 0
    assert f"{name} must be at least 40 characters" in result.stderr


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ("", "PORTAL_ALLOWED_HOSTS is required in production"),
        ("portal.example,*", "PORTAL_ALLOWED_HOSTS may not contain '*'"),
    ],
)
def test_production_refuses_missing_or_wildcard_hosts_and_says_so(
    tmp_path, hosts, message
):
    result = _production_check(tmp_path, PORTAL_ALLOWED_HOSTS=hosts, **AUDIT_KEYS)

    assert result.returncode != 0
    assert message in result.stderr


def test_production_does_not_count_spaces_in_an_audit_key(tmp_path):
    padded = "c" * 30 + " " * 10
    result = _production_check(
        tmp_path, **{**AUDIT_KEYS, "PORTAL_AUDIT_CHAIN_KEY": padded}
    )

    assert result.returncode != 0
    assert "PORTAL_AUDIT_CHAIN_KEY must be at least 40 characters" in result.stderr


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_an_import_limit_below_one_megabyte_is_refused(tmp_path, limit):
    result = _manage(
        "check", PORTAL_MODE="development", PORTAL_DATA_DIR=str(tmp_path),
        PORTAL_IMPORT_MAX_MB=limit,
    )  # fmt: skip

    assert result.returncode != 0
    assert "PORTAL_IMPORT_MAX_MB must be at least 1" in result.stderr


def test_production_refuses_without_its_keyring(tmp_path):
    result = _production_check(tmp_path, **AUDIT_KEYS)

    assert result.returncode != 0
    assert "keyring" in result.stderr
    assert not (tmp_path / "keys").exists(), "production must never create keys"


def test_seed_demo_exits_non_zero_in_production(tmp_path):
    production = {
        "PORTAL_DATA_DIR": str(tmp_path),
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "PORTAL_ALLOWED_HOSTS": "portal.example",
        "PORTAL_KEYRING_FILE": str(tmp_path / "keyring.json"),
        "PORTAL_MASTER_KEY_FILE": str(tmp_path / "master.key"),
        # The embedded databases in tmp_path, whatever the suite runs on.
        "DATABASE_URL": "",
        "AUDIT_DATABASE_URL": "",
        **AUDIT_KEYS,
    }
    created = _manage("create_master_key", **production)
    assert created.returncode == 0, created.stderr

    result = _manage("seed_demo", **production)

    assert result.returncode != 0
    assert "PORTAL_MODE=development" in result.stderr
    assert not (tmp_path / "demo-credentials.json").exists()


def test_demo_administrator_can_manage_users_and_care_teams(credentials):
    from tests.conftest import verified_client

    admin = get_user_model().objects.get(username="admin.ross")
    client = verified_client(admin)

    for url in [
        "/admin/",
        "/admin/accounts/user/",
        "/admin/records/careteammembership/",
        # Roles and sensitive grants are given to groups.
        "/admin/auth/group/",
    ]:
        assert client.get(url).status_code == 200, url
    assert client.get(f"/patients/{Patient.objects.first().pk}/").status_code == 403


def test_the_embedded_databases_are_private_to_the_portal_user(tmp_path):
    embedded = {"DATABASE_URL": "", "AUDIT_DATABASE_URL": ""}
    result = _manage(
        "check", "--database", "default", "--database", "audit",
        PORTAL_MODE="development", PORTAL_DATA_DIR=str(tmp_path), **embedded,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    files = sorted(tmp_path.glob("*.sqlite3"))
    assert [path.name for path in files] == ["audit.sqlite3", "portal.sqlite3"]
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path.name


def test_demo_code_in_a_folder_without_the_demo_says_so(tmp_path):
    embedded = {"DATABASE_URL": "", "AUDIT_DATABASE_URL": ""}
    result = _manage(
        "demo_code", "dr.patel",
        PORTAL_MODE="development", PORTAL_DATA_DIR=str(tmp_path), **embedded,
    )  # fmt: skip

    assert result.returncode != 0
    assert f"No demo in {tmp_path}: run scripts/demo.sh first" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.sqlite3")), "no empty database left behind"


def test_create_master_key_refuses_when_the_database_cannot_be_asked(tmp_path):
    keys = {
        "PORTAL_MODE": "development",
        "PORTAL_DATA_DIR": str(tmp_path),
        "PORTAL_KEYRING_FILE": str(tmp_path / "site" / "keyring.json"),
        "PORTAL_MASTER_KEY_FILE": str(tmp_path / "site" / "master.key"),
        # Nothing listens on port 1 of this machine.
        "DATABASE_URL": "postgres://postgres@127.0.0.1:1/nothing",
        "AUDIT_DATABASE_URL": "",
    }

    refused = _manage("create_master_key", **keys)
    assert refused.returncode != 0
    assert "cannot be asked whether it already holds patients" in refused.stderr
    assert not (tmp_path / "site").exists()

    created = _manage("create_master_key", "--new-installation", **keys)
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "site" / "keyring.json").exists()


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("abc", "DJANGO_SECRET_KEY must be at least 50 characters"),
        ("x" * 60, "DJANGO_SECRET_KEY must hold at least 5 different characters"),
    ],
)
def test_production_refuses_a_guessable_secret_key(tmp_path, secret, message):
    result = _production_check(tmp_path, DJANGO_SECRET_KEY=secret, **AUDIT_KEYS)

    assert result.returncode != 0
    assert message in result.stderr


def test_production_refuses_one_key_for_both_audit_purposes(tmp_path):
    same = AUDIT_KEYS["PORTAL_AUDIT_CHAIN_KEY"]
    result = _production_check(
        tmp_path, PORTAL_AUDIT_CHAIN_KEY=same, PORTAL_AUDIT_CHECKPOINT_KEY=same
    )

    assert result.returncode != 0
    assert (
        "PORTAL_AUDIT_CHAIN_KEY and PORTAL_AUDIT_CHECKPOINT_KEY must differ"
        in result.stderr
    )


def test_production_refuses_a_secret_file_others_can_read(tmp_path):
    secret_file = tmp_path / "chain.key"
    secret_file.write_text(AUDIT_KEYS["PORTAL_AUDIT_CHAIN_KEY"])
    secret_file.chmod(0o644)

    result = _production_check(
        tmp_path,
        PORTAL_AUDIT_CHAIN_KEY_FILE=str(secret_file),
        PORTAL_AUDIT_CHECKPOINT_KEY=AUDIT_KEYS["PORTAL_AUDIT_CHECKPOINT_KEY"],
    )

    assert result.returncode != 0
    assert (
        f"PORTAL_AUDIT_CHAIN_KEY_FILE {secret_file} can be read by others: "
        "chmod 600 it" in result.stderr
    )
