"""rotate_keys: a new key for writes, every row re-encrypted, resumable, checked."""

import datetime
import json

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from records import crypto
from records.fields import EncryptedField
from records.key_rotation import (
    RotationProgress,
    _row_update,
    _StoredRow,
    _write_updates,
    key_version_counts,
    rotate_keys,
)
from records.models import Condition, Patient, PatientIdentifier, PatientSource
from records.services import (
    PatientQuery,
    find_patient_by_identifier,
    register_patient,
    search_patients,
)
from tests.conftest import add_to_care_team

pytestmark = pytest.mark.django_db(databases="__all__")


class Killed(Exception):
    pass


def _seed(count: int) -> list[Patient]:
    patients = []
    for number in range(count):
        patient = register_patient(
            given_name=f"Rotagiven{number}", family_name=f"Rotafamily{number}",
            birth_date=datetime.date(1950 + number, 1, 2), source=PatientSource.DEMO,
            identifiers=[("urn:test", f"ID-{number}")],
        )  # fmt: skip
        Condition.objects.create(
            patient=patient, source_key=f"c{number}", description=f"Rotacond{number}"
        )
        patients.append(patient)
    return patients


def _raw_tokens() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, family_name, given_name, mrn FROM records_patient")
        return {row[0]: row[1:] for row in cursor.fetchall()}


def _under_version(token, version: int) -> bool:
    # The binary format's header: format 2, then the key version.
    return bytes(token[:3]) == bytes((2, version >> 8, version & 0xFF))


def _versions() -> set[int]:
    return {version for counts in key_version_counts().values() for version in counts}


def test_rotation_makes_a_new_key_current_and_reseals_every_row(isolated_keys):
    patients = _seed(3)

    call_command("rotate_keys", batch_size=2)

    assert crypto.keyring().current_version == 2
    assert _versions() == {2}
    for number, patient in enumerate(patients):
        stored = Patient.objects.get(pk=patient.pk)
        assert stored.family_name == f"Rotafamily{number}"
        assert stored.birth_date == datetime.date(1950 + number, 1, 2)
        condition = Condition.objects.get(patient=patient)
        assert condition.description == f"Rotacond{number}"
    assert crypto.keyring().rotation is None


def test_new_writes_use_the_new_key(isolated_keys):
    call_command("rotate_keys")

    _seed(1)

    assert _versions() == {2}


def test_interrupted_rotation_resumes_with_nothing_lost_or_sealed_twice(
    isolated_keys,
):
    patients = _seed(6)

    def kill_after_two_batches(model, progress):
        if progress.batches == 2:
            raise Killed

    with pytest.raises(Killed):
        rotate_keys(batch_size=2, on_batch=kill_after_two_batches)

    halfway = _raw_tokens()
    done = {pk for pk, tokens in halfway.items() if _under_version(tokens[0], 2)}
    assert 0 < len(done) < len(patients)
    assert crypto.keyring().rotation["data"] == 2

    call_command("rotate_keys", batch_size=2)

    finished = _raw_tokens()
    for pk in done:
        assert finished[pk] == halfway[pk], "a row was sealed twice"
    assert crypto.keyring().current_version == 2, "the rerun started another key"
    assert _versions() == {2}
    for number, patient in enumerate(patients):
        assert Patient.objects.get(pk=patient.pk).given_name == f"Rotagiven{number}"


def test_a_finished_rotation_is_audited_by_a_named_operator(isolated_keys):
    from audit.models import AuditAction, AuditEvent

    _seed(2)

    call_command("rotate_keys")

    event = AuditEvent.objects.get(action=AuditAction.KEYS_ROTATED)
    assert event.actor_username.startswith("system:rotate_keys (")
    assert "data key v2" in event.reason


def test_a_rotation_stopped_early_is_on_the_record_from_its_start(
    isolated_keys, capsys
):
    from audit.models import AuditAction, AuditEvent

    _seed(3)

    call_command("rotate_keys", "--batch-size", "1", "--max-batches", "1")
    call_command("rotate_keys")

    started = AuditEvent.objects.get(action=AuditAction.KEY_ROTATION_STARTED)
    assert started.actor_username.startswith("system:rotate_keys (")
    assert started.reason == "data key version 2 current"
    assert "Stopped at the batch limit" in capsys.readouterr().out
    assert AuditEvent.objects.filter(action=AuditAction.KEYS_ROTATED).count() == 1


def test_charts_stay_readable_in_the_middle_of_a_rotation(isolated_keys):
    patients = _seed(4)

    def read_every_chart(model, progress):
        for number, patient in enumerate(patients):
            assert Patient.objects.get(pk=patient.pk).mrn == patient.mrn
            condition = Condition.objects.get(patient=patient)
            assert condition.description == f"Rotacond{number}"

    rotate_keys(batch_size=1, on_batch=read_every_chart)


def test_a_row_saved_during_rotation_keeps_its_new_value(isolated_keys):
    (patient,) = _seed(1)

    def clinician_edits(model, progress):
        if model is Patient and progress.batches == 1:
            return
        edited = Patient.objects.get(pk=patient.pk)
        edited.address = "New address after edit"
        edited.save()

    rotate_keys(batch_size=1, on_batch=clinician_edits)

    assert Patient.objects.get(pk=patient.pk).address == "New address after edit"
    assert _versions() == {2}


def test_index_key_rotation_rebuilds_blind_indexes(isolated_keys, physician):
    (patient,) = _seed(1)
    add_to_care_team(physician, patient)
    old_index = Patient.objects.get(pk=patient.pk).family_name_index

    call_command("rotate_keys", index_key=True)

    stored = Patient.objects.get(pk=patient.pk)
    assert stored.family_name_index != old_index
    assert list(crypto.keyring().index_keys) == [2]
    assert stored.family_name_index == crypto.blind_index("family", "Rotafamily0")
    physician.is_verified = lambda: True
    found = search_patients(physician, PatientQuery(family_name="ROTAFAMILY0"))
    assert [p.pk for p in found] == [patient.pk]
    assert find_patient_by_identifier("urn:test", "ID-0").pk == patient.pk
    assert PatientIdentifier.objects.get(patient=patient).value_index == (
        crypto.blind_index("identifier:urn:test", "ID-0")
    )


def test_search_finds_patients_while_indexes_are_rebuilt(isolated_keys, physician):
    patients = _seed(3)
    for patient in patients:
        add_to_care_team(physician, patient)
    physician.is_verified = lambda: True

    def search_each(model, progress):
        for number in range(3):
            query = PatientQuery(family_name=f"Rotafamily{number}")
            assert len(search_patients(physician, query)) == 1

    rotate_keys(index_key=True, batch_size=1, on_batch=search_each)


def test_first_format_keyring_is_wrapped_by_rotation(isolated_keys):
    path = isolated_keys.PORTAL_KEYRING_FILE
    legacy = {
        "format": 1, "current": 1,
        "data_keys": {"1": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="},
        "index_key": "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
    }  # fmt: skip
    path.write_text(json.dumps(legacy))
    crypto.reset_keyring_cache()
    (patient,) = _seed(1)

    call_command("rotate_keys")

    assert json.loads(path.read_text())["format"] == 2
    assert legacy["data_keys"]["1"] not in path.read_text()
    assert Patient.objects.get(pk=patient.pk).family_name == "Rotafamily0"


def _hipaa_ids() -> set[str]:
    return {message.id for message in checks.run_checks(tags=["hipaa"])}


def test_old_current_key_is_warned_about(isolated_keys):
    assert "hipaa.W202" not in _hipaa_ids()

    isolated_keys.PORTAL_KEY_MAX_AGE_DAYS = 0

    assert "hipaa.W202" in _hipaa_ids()


def test_unfinished_rotation_is_warned_about(isolated_keys):
    crypto.start_rotation(index_key=False)

    assert "hipaa.W204" in _hipaa_ids()


def test_an_edit_between_read_and_write_is_never_overwritten(isolated_keys):
    (patient,) = _seed(1)
    crypto.start_rotation(index_key=True)
    fields = [f for f in Patient._meta.concrete_fields if isinstance(f, EncryptedField)]
    progress = RotationProgress()
    loaded = Patient._base_manager.get(pk=patient.pk)
    read = _row_update(
        Patient, fields, _StoredRow.of(Patient, fields, loaded), True, progress
    )

    edited = Patient.objects.get(pk=patient.pk)
    edited.address = "Edited meanwhile"
    edited.save()
    _write_updates(Patient, fields, [read], progress, "default")

    assert progress.rows_raced == 1
    assert Patient.objects.get(pk=patient.pk).address == "Edited meanwhile"


def test_a_batch_writes_every_row_still_as_read_and_counts_the_one_edited(
    isolated_keys,
):
    patients = _seed(3)
    deceased = Patient.objects.get(pk=patients[2].pk)
    deceased.deceased_on = datetime.date(2020, 5, 6)
    deceased.save()
    crypto.start_rotation(index_key=False)
    fields = [f for f in Patient._meta.concrete_fields if isinstance(f, EncryptedField)]
    progress = RotationProgress()
    read = [
        _row_update(
            Patient, fields, _StoredRow.of(Patient, fields, row), False, progress
        )
        for row in Patient._base_manager.order_by("pk")
    ]

    edited = Patient.objects.get(pk=patients[1].pk)
    edited.address = "Edited meanwhile"
    edited.save()
    _write_updates(Patient, fields, read, progress, "default")

    assert (progress.rows_resealed, progress.rows_raced) == (2, 1)
    assert Patient.objects.get(pk=patients[1].pk).address == "Edited meanwhile"
    current = crypto.keyring().current_version
    for patient in (patients[0], patients[2]):
        stored = Patient._base_manager.values_list(*(f.attname for f in fields)).get(
            pk=patient.pk
        )
        assert all(_under_version(t, current) for t in stored if t is not None)
    reread = Patient.objects.get(pk=patients[2].pk)
    assert reread.deceased_on == datetime.date(2020, 5, 6)
    assert reread.family_name == "Rotafamily2"


def _database_url(alias: str) -> str:
    from django.db import connections

    settings_dict = connections[alias].settings_dict
    if connections[alias].vendor == "sqlite":
        return f"sqlite:///{settings_dict['NAME']}"
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    user = settings_dict.get("USER") or "postgres"
    return f"postgres://{user}@{host}:{port}/{settings_dict['NAME']}"


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_rotation_killed_by_sigkill_finishes_when_run_again(isolated_keys):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    patients = _seed(60)
    environment = {
        **os.environ,
        "PORTAL_MODE": "development",
        "DATABASE_URL": _database_url("default"),
        "AUDIT_DATABASE_URL": _database_url("audit"),
        "PORTAL_KEYRING_FILE": str(isolated_keys.PORTAL_KEYRING_FILE),
        "PORTAL_MASTER_KEY_FILE": str(isolated_keys.PORTAL_MASTER_KEY_FILE),
        "PORTAL_KEYRING_REFRESH_SECONDS": "0",
        "PORTAL_LOG_LEVEL": "WARNING",
    }
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "rotate_keys", "--batch-size", "1"],
        cwd=Path(__file__).resolve().parents[1], env=environment,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    batches = 0
    for line in worker.stdout:
        batches += line.startswith("batch ")
        if batches == 5:
            worker.send_signal(signal.SIGKILL)
            break
    worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL

    halfway = _raw_tokens()
    assert _versions() == {1, 2}, "killed part-way through"

    call_command("rotate_keys")

    finished = _raw_tokens()
    for pk, tokens in halfway.items():
        for before, after in zip(tokens, finished[pk], strict=True):
            if _under_version(before, 2):
                assert after == before, "a value was sealed twice"
    assert _versions() == {2}
    for number, patient in enumerate(patients):
        assert Patient.objects.get(pk=patient.pk).given_name == f"Rotagiven{number}"


def test_rotation_seals_text_format_values_again_in_the_binary_format(isolated_keys):
    from tests.test_encryption import _text_format_token, _write_text_format

    patients = _seed(3)
    # As the migration to binary columns left values sealed before it.
    for number, patient in enumerate(patients):
        token = _text_format_token(f"Rotafamily{number}", "family_name", patient.pk)
        _write_text_format(patient, "family_name", token)
    assert _versions() == {1}

    call_command("rotate_keys", batch_size=2)

    for number, patient in enumerate(patients):
        family_name = _raw_tokens()[
            Patient._meta.pk.get_db_prep_value(patient.pk, connection)
        ][0]
        assert _under_version(family_name, 2)
        assert Patient.objects.get(pk=patient.pk).family_name == f"Rotafamily{number}"
    assert _versions() == {2}


def _damage(model, pk, column: str, damaged: bytes | None = None) -> None:
    """Flip the last bit of a stored sealed value (or store ``damaged``)."""
    table = model._meta.db_table
    row = model._meta.pk.get_db_prep_value(pk, connection)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [row])  # noqa: S608
        stored = bytearray(cursor.fetchone()[0])
        stored[-1] ^= 1
        cursor.execute(
            f"UPDATE {table} SET {column} = %s WHERE id = %s",  # noqa: S608
            [damaged if damaged is not None else bytes(stored), row],
        )


def test_a_damaged_value_is_reported_audited_and_the_rest_rotated(isolated_keys):
    from django.core.management.base import CommandError

    from audit.models import AuditAction, AuditEvent

    patients = _seed(3)
    damaged = Condition.objects.get(patient=patients[1])
    _damage(Condition, damaged.pk, "code")

    with pytest.raises(CommandError, match="1 sealed value does not open") as failed:
        call_command("rotate_keys", batch_size=2)

    assert f"records.Condition {damaged.pk} code" in str(failed.value)
    assert crypto.keyring().rotation is None, "the rotation must not stay open"
    assert crypto.keyring().current_version == 2
    for number, patient in enumerate(patients):
        assert Patient.objects.get(pk=patient.pk).given_name == f"Rotagiven{number}"
    event = AuditEvent.objects.get(action=AuditAction.INTEGRITY_FAILURE)
    assert event.record_type == "Condition"
    assert event.patient_ref == str(patients[1].pk)
    assert event.fields == ["code"]
    finished = AuditEvent.objects.get(action=AuditAction.KEYS_ROTATED)
    assert "1 sealed value left under its old key" in finished.reason


@pytest.mark.parametrize("index_key", [False, True])
def test_a_damaged_patient_value_is_audited_against_that_patient(
    isolated_keys, index_key
):
    from audit.models import AuditAction, AuditEvent

    patients = _seed(2)
    _damage(Patient, patients[0].pk, "address")

    with pytest.raises(CommandError):
        call_command("rotate_keys", index_key=index_key)

    event = AuditEvent.objects.get(action=AuditAction.INTEGRITY_FAILURE)
    assert (event.record_type, event.fields) == ("Patient", ["address"])
    assert event.patient_ref == str(patients[0].pk)


def test_status_counts_values_it_cannot_read_instead_of_failing(isolated_keys, capsys):
    patients = _seed(2)
    _damage(Patient, patients[0].pk, "family_name", damaged=b"\x09not sealed")

    call_command("rotate_keys", "--status")

    output = capsys.readouterr().out
    assert "records.Patient" in output and "unreadable: 1" in output


def test_status_names_a_version_the_keyring_has_no_key_for(isolated_keys, capsys):
    patients = _seed(1)
    stored = Patient._base_manager.values_list("family_name", flat=True).get()
    _damage(
        Patient,
        patients[0].pk,
        "family_name",
        damaged=b"\x02\x00\x63" + bytes(stored)[3:],
    )

    call_command("rotate_keys", "--status")

    assert "v99 (no such key): 1" in capsys.readouterr().out


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_a_batch_limit_below_one_is_refused_before_any_key_is_made(
    isolated_keys, limit
):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--max-batches must be at least 1"):
        call_command("rotate_keys", "--max-batches", limit)

    assert crypto.keyring().current_version == 1


def test_a_number_where_a_sealed_value_belongs_does_not_stall_the_rotation(
    isolated_keys,
):
    from django.core.management.base import CommandError

    from audit.models import AuditAction, AuditEvent

    patients = _seed(2)
    damaged = Condition.objects.get(patient=patients[0])
    # SQLite keeps what it is given: a number stays a number in a BLOB column.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE records_condition SET code = %s WHERE id = %s",
            [
                42 if connection.vendor == "sqlite" else b"42",
                Condition._meta.pk.get_db_prep_value(damaged.pk, connection),
            ],
        )

    with pytest.raises(CommandError, match="1 sealed value does not open"):
        call_command("rotate_keys", batch_size=2)

    assert crypto.keyring().rotation is None
    assert AuditEvent.objects.filter(action=AuditAction.INTEGRITY_FAILURE).count() == 1
    # The other row (its code, carrying its description) was sealed again.
    assert key_version_counts()["records.Condition"] == {2: 1, "unreadable": 1}


def test_an_index_key_asked_for_while_a_data_key_rotation_is_unfinished_is_refused(
    isolated_keys,
):
    from django.core.management import CommandError

    _seed(3)
    call_command("rotate_keys", "--batch-size", "1", "--max-batches", "1")
    index_before = crypto.keyring().current_index_version

    with pytest.raises(CommandError) as refused:
        call_command("rotate_keys", "--index-key")

    assert str(refused.value) == (
        "a rotation of the data key alone (version 2) is unfinished: run "
        "rotate_keys without --index-key to finish it, then rotate_keys --index-key"
    )
    assert crypto.keyring().current_index_version == index_before
    assert crypto.keyring().rotation is not None
