"""Replacing the master key: the keyring re-wrapped, every record still readable."""

import datetime
import json

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditAction, AuditEvent
from records import crypto
from records.models import Patient, PatientSource
from records.services import register_patient

pytestmark = pytest.mark.django_db(databases="__all__")


def _patient():
    return register_patient(
        given_name="Rewrapgiven", family_name="Rewrapfamily",
        birth_date=datetime.date(1975, 6, 7), source=PatientSource.DEMO,
    )  # fmt: skip


def _switch_to(settings, **paths):
    for name, value in paths.items():
        setattr(settings, name, value)
    crypto.reset_keyring_cache()


def test_a_new_master_key_file_opens_the_same_records(isolated_keys, tmp_path):
    patient = _patient()
    old_master_key = isolated_keys.PORTAL_MASTER_KEY_FILE
    new_keyring = tmp_path / "new" / "keyring.json"
    new_master_key = tmp_path / "new" / "master.key"

    call_command(
        "rewrap_keyring", str(new_keyring), "--master-key-file", str(new_master_key)
    )
    _switch_to(
        isolated_keys,
        PORTAL_KEYRING_FILE=new_keyring,
        PORTAL_MASTER_KEY_FILE=new_master_key,
    )

    assert Patient.objects.get(pk=patient.pk).family_name == "Rewrapfamily"
    assert new_master_key.stat().st_mode & 0o777 == 0o600
    assert new_keyring.stat().st_mode & 0o777 == 0o600
    _switch_to(isolated_keys, PORTAL_MASTER_KEY_FILE=old_master_key)
    with pytest.raises(crypto.KeyringUnavailable, match="configured master key"):
        crypto.load_keyring(create_if_missing=False)


def test_the_new_keyring_holds_no_raw_key_and_the_change_is_audited(
    isolated_keys, tmp_path
):
    ring = crypto.keyring()
    new_keyring = tmp_path / "keyring-2.json"

    call_command(
        "rewrap_keyring", str(new_keyring),
        "--master-key-file", str(tmp_path / "master-2.key"),
    )  # fmt: skip

    stored = new_keyring.read_bytes()
    for key in [*ring.data_keys.values(), *ring.index_keys.values(), ring.dedupe_key]:
        assert key not in stored and key.hex().encode() not in stored
    event = AuditEvent.objects.get(action=AuditAction.MASTER_KEY_REPLACED)
    assert event.reason == f"new master key {json.loads(stored)['master_key']}"


def test_refuses_to_overwrite_or_to_rewrap_under_the_key_in_use(
    isolated_keys, tmp_path
):
    existing = tmp_path / "existing.json"
    existing.write_text("{}")
    same_key = str(isolated_keys.PORTAL_MASTER_KEY_FILE)
    another = str(tmp_path / "another.key")

    with pytest.raises(CommandError, match="already exists"):
        call_command("rewrap_keyring", str(existing), "--master-key-file", another)
    with pytest.raises(CommandError, match="already in use"):
        call_command(
            "rewrap_keyring", str(tmp_path / "k.json"), "--master-key-file", same_key
        )
    with pytest.raises(CommandError, match="two files"):
        call_command(
            "rewrap_keyring", str(tmp_path / "k.json"),
            "--master-key-file", str(tmp_path / "k.json"),
        )  # fmt: skip
    with pytest.raises(CommandError, match="two files"):
        call_command(
            "rewrap_keyring", str(tmp_path / "x" / "." / "both.json"),
            "--master-key-file", str(tmp_path / "x" / ".." / "x" / "both.json"),
        )  # fmt: skip
    assert existing.read_text() == "{}"
    assert not (tmp_path / "k.json").exists()
    assert not (tmp_path / "x" / "both.json").exists()
    assert not (tmp_path / "another.key").exists(), "a refusal makes no key"


def test_refuses_while_a_key_rotation_is_unfinished(isolated_keys, tmp_path):
    crypto.start_rotation(index_key=False)

    with pytest.raises(CommandError, match="rotation is unfinished"):
        call_command(
            "rewrap_keyring", str(tmp_path / "k.json"),
            "--master-key-file", str(tmp_path / "m.key"),
        )  # fmt: skip
    assert not (tmp_path / "m.key").exists()


def test_the_old_keyring_takes_no_new_key_until_the_switch(isolated_keys, tmp_path):
    from django.core import checks

    patient = _patient()
    new_keyring = tmp_path / "new" / "keyring.json"
    new_master_key = tmp_path / "new" / "master.key"
    call_command(
        "rewrap_keyring", str(new_keyring), "--master-key-file", str(new_master_key)
    )
    crypto.reset_keyring_cache()

    with pytest.raises(CommandError, match="re-wrapped into"):
        call_command("rotate_keys")
    warned = {message.id for message in checks.run_checks(tags=["hipaa"])}
    _switch_to(
        isolated_keys,
        PORTAL_KEYRING_FILE=new_keyring,
        PORTAL_MASTER_KEY_FILE=new_master_key,
    )
    call_command("rotate_keys")

    assert "hipaa.W205" in warned
    assert crypto.keyring().current_version == 2
    assert Patient.objects.get(pk=patient.pk).family_name == "Rewrapfamily"


def test_a_new_key_in_the_token_opens_the_same_records(hsm_keys, tmp_path):
    patient = _patient()
    new_keyring = tmp_path / "hsm-keyring-2.json"
    new_label = f"master-2-{tmp_path.name}"

    call_command("rewrap_keyring", str(new_keyring), "--pkcs11-key-label", new_label)
    _switch_to(
        hsm_keys, PORTAL_KEYRING_FILE=new_keyring, PORTAL_PKCS11_KEY_LABEL=new_label
    )

    assert Patient.objects.get(pk=patient.pk).family_name == "Rewrapfamily"
    assert json.loads(new_keyring.read_text())["master_key"].endswith(new_label)
