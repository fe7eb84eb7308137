"""PHI fields are sealed per row: round trips, tampering, moved ciphertext, lookups."""

import base64
import datetime
import decimal
import json
import os

import pytest
from django.core.exceptions import FieldError
from django.db import connection, transaction
from django.db.models import F

from records import crypto
from records.fields import (
    EncryptedDateField,
    EncryptedDecimalField,
    EncryptedIntegerField,
    EncryptedTextField,
)
from records.models import Encounter, Patient, PatientSource
from records.services import register_patient

pytestmark = pytest.mark.django_db(databases="__all__")


def _raw_column(patient, column: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {column} FROM records_patient WHERE id = %s",  # noqa: S608
            [Patient._meta.pk.get_db_prep_value(patient.pk, connection)],
        )
        return cursor.fetchone()[0]


def _write_raw(patient, column: str, value: bytes | str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE records_patient SET {column} = %s WHERE id = %s",  # noqa: S608
            [value, Patient._meta.pk.get_db_prep_value(patient.pk, connection)],
        )


def _header(version: int) -> bytes:
    return bytes((2, version >> 8, version & 0xFF))


def _text_format_token(
    plaintext: str, column: str, pk, version: str = "1", table="records_patient"
) -> str:
    """A value sealed as the portal did before the binary format: text, bound
    to the row id as text."""
    nonce = os.urandom(12)
    associated_data = f"{table}.{column}:{pk}".encode()
    sealed = (
        crypto.keyring().cipher(1).encrypt(nonce, plaintext.encode(), associated_data)
    )
    return f"a1.{version}.{base64.b64encode(nonce + sealed).decode()}"


def _write_text_format(patient, column: str, token: str) -> None:
    # As the migration to binary columns left such values: SQLite kept them
    # as text, PostgreSQL kept their bytes.
    _write_raw(
        patient, column, token if connection.vendor == "sqlite" else token.encode()
    )


def test_values_round_trip_with_their_types(marker_patient):
    marker_patient.deceased_on = datetime.date(2020, 5, 1)
    marker_patient.address = ""
    marker_patient.save()

    stored = Patient.objects.get(pk=marker_patient.pk)

    assert stored.given_name == "Quillonemarker"
    assert stored.birth_date == datetime.date(1961, 2, 28)
    assert stored.deceased_on == datetime.date(2020, 5, 1)
    assert stored.address == ""
    assert isinstance(stored.birth_date, datetime.date)


def test_none_stays_none(marker_patient):
    assert Patient.objects.get(pk=marker_patient.pk).deceased_on is None
    assert _raw_column(marker_patient, "deceased_on") is None


def test_stored_value_is_versioned_ciphertext(marker_patient):
    raw = bytes(_raw_column(marker_patient, "family_name"))

    # Format, key version, nonce, then the ciphertext and its 16-byte tag.
    assert raw[:3] == _header(1)
    assert len(raw) == 3 + 12 + len("Zyxwvutmarker") + 16
    assert b"Zyxwvutmarker" not in raw


def test_each_seal_uses_a_fresh_nonce():
    tokens = {crypto.seal("same value", b"t.c:1") for _ in range(1000)}

    assert len(tokens) == 1000


def test_ciphertext_moved_to_another_row_fails_to_open(marker_patient):
    other = register_patient(
        given_name="Second", family_name="Person", birth_date=datetime.date(1970, 1, 1),
        source=PatientSource.DEMO,
    )  # fmt: skip
    _write_raw(other, "family_name", _raw_column(marker_patient, "family_name"))

    moved = Patient.objects.get(pk=other.pk)

    with pytest.raises(crypto.IntegrityError, match="integrity check"):
        _ = moved.family_name


def test_ciphertext_moved_to_another_column_fails_to_open(marker_patient):
    _write_raw(marker_patient, "given_name", _raw_column(marker_patient, "family_name"))

    with pytest.raises(crypto.IntegrityError):
        _ = Patient.objects.get(pk=marker_patient.pk).given_name


@pytest.mark.parametrize(
    "position", [3, 14, 15, -1], ids=["nonce", "nonce-end", "ciphertext", "tag"]
)
def test_one_flipped_bit_is_detected(marker_patient, position):
    raw = bytearray(_raw_column(marker_patient, "family_name"))
    raw[position] ^= 1
    _write_raw(marker_patient, "family_name", bytes(raw))

    with pytest.raises(crypto.IntegrityError, match="integrity check"):
        _ = Patient.objects.get(pk=marker_patient.pk).family_name


def test_unknown_format_is_a_clear_error(marker_patient):
    raw = bytes(_raw_column(marker_patient, "family_name"))
    _write_raw(marker_patient, "family_name", b"\x07" + raw[1:])

    with pytest.raises(crypto.UnknownAlgorithm, match="unknown sealed-value format 7"):
        _ = Patient.objects.get(pk=marker_patient.pk).family_name


@pytest.mark.parametrize("lookup", ["family_name", "family_name__icontains"])
def test_lookups_on_ciphertext_raise_instead_of_matching_nothing(
    marker_patient, lookup
):
    with pytest.raises(FieldError, match="blind index"):
        list(Patient.objects.filter(**{lookup: "Zyxwvutmarker"}))


def test_queryset_update_cannot_write_plaintext(marker_patient):
    with pytest.raises(FieldError, match="encrypted"), transaction.atomic():
        Patient.objects.filter(pk=marker_patient.pk).update(family_name="Plain")

    assert b"Plain" not in bytes(_raw_column(marker_patient, "family_name"))


def test_bulk_update_cannot_write_plaintext(marker_patient):
    marker_patient.family_name = "Plain"

    with pytest.raises(FieldError):
        Patient.objects.bulk_update([marker_patient], ["family_name"])


def test_blind_index_folds_case_accents_and_spaces():
    assert crypto.blind_index("family", "  Zoë   O'Neil ") == crypto.blind_index(
        "family", "zoe o'neil"
    )
    assert crypto.blind_index("family", "Smith") != crypto.blind_index("given", "Smith")


def test_missing_keyring_refuses_to_start_in_production(settings, tmp_path):
    settings.PORTAL_KEYRING_FILE = tmp_path / "absent.json"

    with pytest.raises(crypto.KeyringUnavailable, match="PORTAL_KEYRING_FILE"):
        crypto.load_keyring(create_if_missing=False)


def test_malformed_keyring_is_a_clear_error(settings, tmp_path):
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps({"format": 1, "current": 2, "data_keys": {}}))
    settings.PORTAL_KEYRING_FILE = path

    with pytest.raises(crypto.KeyringUnavailable):
        crypto.load_keyring(create_if_missing=False)


def test_development_keyring_is_private_to_its_owner(settings, tmp_path):
    settings.PORTAL_KEYRING_FILE = tmp_path / "keys" / "keyring.json"
    settings.PORTAL_MASTER_KEY_FILE = tmp_path / "keys" / "master.key"
    settings.PORTAL_DEVELOPMENT_MASTER_KEY = True

    crypto.load_keyring(create_if_missing=True)

    assert (tmp_path / "keys" / "keyring.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys" / "master.key").stat().st_mode & 0o777 == 0o600


def _detached_field(field_class, name="amount"):
    field = field_class(null=True)
    field.set_attributes_from_name(name)
    field.model = Patient
    return field


@pytest.mark.parametrize(
    ("field_class", "value"),
    [
        (EncryptedTextField, ""),
        (EncryptedTextField, "Zoë O'Neil — ünïcode"),
        (EncryptedDateField, datetime.date(1901, 12, 31)),
        (EncryptedIntegerField, 0),
        (EncryptedIntegerField, -42),
        (EncryptedDecimalField, decimal.Decimal("120.50")),
        (EncryptedDecimalField, decimal.Decimal("-0.001")),
    ],
)
def test_every_field_type_round_trips_with_its_type(field_class, value):
    field = _detached_field(field_class)

    opened = field.open_token("row-1", field.seal_for("row-1", value))

    assert opened == value
    assert type(opened) is type(value)
    assert str(opened) == str(value)


@pytest.mark.parametrize(
    ("field_class", "value"),
    [
        (EncryptedIntegerField, True),
        (EncryptedIntegerField, "7"),
        (EncryptedDecimalField, 1.1),
        (EncryptedDateField, datetime.datetime(2020, 1, 1)),
        (EncryptedTextField, 5),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_before_sealing(field_class, value):
    with pytest.raises(TypeError):
        _detached_field(field_class).seal_for("row-1", value)


def test_a_sealed_value_of_the_wrong_type_errors_without_quoting_it():
    text_field = _detached_field(EncryptedTextField)
    date_field = _detached_field(EncryptedDateField)
    token = text_field.seal_for("row-1", "Zyxwvutmarker")

    with pytest.raises(crypto.IntegrityError) as raised:
        date_field.open_token("row-1", token)

    assert "Zyxwvutmarker" not in str(raised.value)


@pytest.mark.parametrize(
    "ordering", ["family_name", "-birth_date", "care_team__patient__mrn"]
)
def test_ordering_by_an_encrypted_field_is_a_clear_error(marker_patient, ordering):
    with pytest.raises(FieldError, match="cannot order by"):
        Patient.objects.order_by(ordering)


def test_ordering_through_a_relation_or_latest_is_refused_too(marker_patient):
    with pytest.raises(FieldError, match="encrypted"):
        Encounter.objects.order_by("patient__family_name")
    with pytest.raises(FieldError, match="encrypted"):
        Patient.objects.latest("birth_date")
    with pytest.raises(FieldError, match="encrypted"):
        Patient.objects.order_by(F("family_name").desc())


def test_ordering_by_clear_columns_still_works(marker_patient):
    assert list(Patient.objects.order_by("-created_at", "pk")) == [marker_patient]


def test_an_unknown_text_format_algorithm_has_its_own_error_type(marker_patient):
    token = _text_format_token("Zyxwvutmarker", "family_name", marker_patient.pk)
    _write_text_format(marker_patient, "family_name", "b7" + token[2:])

    with pytest.raises(crypto.UnknownAlgorithm, match="'b7'"):
        _ = Patient.objects.get(pk=marker_patient.pk).family_name


@pytest.mark.parametrize(
    "stored",
    [b"", b"\x02\x00\x01", b"\x02\x00\x01" + bytes(12), b"\x02\x00"],
    ids=["empty", "header-only", "no-ciphertext", "short-header"],
)
def test_a_malformed_value_is_an_integrity_error(marker_patient, stored):
    _write_raw(marker_patient, "family_name", stored)

    with pytest.raises(crypto.IntegrityError, match="not a sealed value"):
        _ = Patient.objects.get(pk=marker_patient.pk).family_name


@pytest.mark.parametrize(
    "payload",
    ["", "AAAA", "not base64!", "QUJD\nREVG"],
    ids=["empty", "shorter-than-a-nonce", "not-base64", "line-break"],
)
def test_a_malformed_text_format_payload_is_an_integrity_error(marker_patient, payload):
    _write_text_format(marker_patient, "family_name", f"a1.1.{payload}")

    with pytest.raises(crypto.IntegrityError, match="not a sealed value"):
        _ = Patient.objects.get(pk=marker_patient.pk).family_name


def test_a_version_no_key_has_is_an_integrity_error(marker_patient):
    raw = bytes(_raw_column(marker_patient, "family_name"))
    _write_raw(marker_patient, "family_name", _header(99) + raw[3:])

    with pytest.raises(crypto.IntegrityError, match="no data key with version 99"):
        _ = Patient.objects.get(pk=marker_patient.pk).family_name


def test_values_sealed_in_the_text_format_still_open(marker_patient):
    other = register_patient(
        given_name="Second", family_name="Person", birth_date=datetime.date(1970, 1, 1),
        source=PatientSource.DEMO,
    )  # fmt: skip
    for patient, name in ((marker_patient, "Zyxwvutolder"), (other, "Olderperson")):
        token = _text_format_token(name, "family_name", patient.pk)
        _write_text_format(patient, "family_name", token)
    # A version written another way (0-padded) opens too.
    padded = _text_format_token("Quillonolder", "given_name", other.pk, version="01")
    _write_text_format(other, "given_name", padded)

    loaded = {
        patient.pk: patient
        for patient in Patient.objects.filter(pk__in=[marker_patient.pk, other.pk])
    }

    assert loaded[marker_patient.pk].family_name == "Zyxwvutolder"
    assert loaded[other.pk].family_name == "Olderperson"
    assert loaded[other.pk].given_name == "Quillonolder"
    assert loaded[marker_patient.pk].given_name == "Quillonemarker"


def test_a_text_format_value_moved_to_another_row_fails_to_open(marker_patient):
    other = register_patient(
        given_name="Second", family_name="Person", birth_date=datetime.date(1970, 1, 1),
        source=PatientSource.DEMO,
    )  # fmt: skip
    token = _text_format_token("Zyxwvutolder", "family_name", marker_patient.pk)
    _write_text_format(other, "family_name", token)

    with pytest.raises(crypto.IntegrityError, match="integrity check"):
        _ = Patient.objects.get(pk=other.pk).family_name


def test_a_row_given_another_key_does_not_reuse_the_old_row_id(marker_patient):
    import uuid

    patient = Patient.objects.get(pk=marker_patient.pk)
    assert patient.family_name == "Zyxwvutmarker"

    # The given name is still sealed for the old id: it must not open as if
    # it belonged to the new one, nor with the id cached for the first read.
    patient.pk = uuid.uuid4()
    with pytest.raises(crypto.IntegrityError, match="integrity check"):
        _ = patient.given_name


def test_only_field_types_that_parse_their_text_pay_for_it():
    assert not EncryptedTextField.parses
    assert EncryptedDateField.parses
    assert EncryptedIntegerField.parses
    assert EncryptedDecimalField.parses


def _encounters(patient, count: int) -> dict[str, str]:
    """Encounters with a description of their own; source key -> description."""
    descriptions = {f"e{number}": f"Markvisit{number}" for number in range(count)}
    for source_key, description in descriptions.items():
        Encounter.objects.create(
            patient=patient, source_key=source_key, description=description
        )
    return descriptions


def _move_raw(table: str, column: str, from_pk, to_pk) -> None:
    """Copy a sealed value onto another row, as an attacker with the database."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {column} = "  # noqa: S608
            f"(SELECT {column} FROM {table} WHERE id = %s) WHERE id = %s",
            [
                Encounter._meta.pk.get_db_prep_value(from_pk, connection),
                Encounter._meta.pk.get_db_prep_value(to_pk, connection),
            ],
        )


def test_rows_loaded_together_each_open_their_own_values(marker_patient):
    descriptions = _encounters(marker_patient, 7)

    loaded = list(Encounter.objects.filter(patient=marker_patient))

    assert {row.source_key: row.description for row in loaded} == descriptions
    streamed = Encounter.objects.filter(patient=marker_patient).iterator(chunk_size=2)
    assert {row.source_key: row.description for row in streamed} == descriptions


def test_a_value_assigned_before_its_column_is_read_stays(marker_patient):
    _encounters(marker_patient, 3)
    first, second, third = Encounter.objects.filter(patient=marker_patient).order_by(
        "source_key"
    )

    second.description = "Corrected before reading"

    # The first read opens the column for all three rows loaded together.
    assert first.description == "Markvisit0"
    assert second.description == "Corrected before reading"
    assert third.description == "Markvisit2"


def test_a_pages_rows_and_their_plaintext_are_freed_with_the_page(marker_patient):
    import gc
    import weakref

    _encounters(marker_patient, 3)
    # Without the cycle collector: rows linked to each other strongly would
    # keep every row's plaintext alive until its next pass.
    gc.disable()
    try:
        rows = list(Encounter.objects.filter(patient=marker_patient))
        assert {row.description for row in rows} == {
            "Markvisit0", "Markvisit1", "Markvisit2",
        }  # fmt: skip
        watched = [weakref.ref(row) for row in rows]
        del rows

        assert [reference() for reference in watched] == [None, None, None]
    finally:
        gc.enable()


@pytest.mark.parametrize("damaged_read_first", [True, False])
def test_a_moved_value_fails_on_its_own_row_only(marker_patient, damaged_read_first):
    descriptions = _encounters(marker_patient, 4)
    first, second = Encounter.objects.filter(source_key__in=["e0", "e1"]).order_by(
        "source_key"
    )
    # The description is sealed inside the code's value, with the code.
    _move_raw("records_encounter", "code", first.pk, second.pk)

    loaded = list(Encounter.objects.filter(patient=marker_patient))
    damaged = next(row for row in loaded if row.pk == second.pk)
    if damaged_read_first:
        with pytest.raises(crypto.IntegrityError, match="integrity check"):
            _ = damaged.description

    for row in loaded:
        if row is not damaged:
            assert row.description == descriptions[row.source_key]
    # Read again, it fails again: the failure is not forgotten or skipped.
    for _attempt in range(2):
        with pytest.raises(crypto.IntegrityError, match="integrity check"):
            _ = damaged.description


def test_a_copied_or_pickled_row_opens_alone_and_carries_no_other_row(
    marker_patient,
):
    import copy
    import pickle

    descriptions = _encounters(marker_patient, 3)
    first, *others = Encounter.objects.filter(patient=marker_patient)

    pickled = pickle.dumps(first)
    restored = pickle.loads(pickled)  # noqa: S301
    copied = copy.copy(first)

    for other in others:
        assert bytes(other.__dict__["_sealed_tokens"]["code"]) not in pickled
    assert restored.description == descriptions[first.source_key]
    assert copied.description == descriptions[first.source_key]
    # Opened alone: the rows the original was loaded with are still sealed.
    assert all("description" not in other.__dict__ for other in others)


def test_a_row_saved_without_reading_its_values_keeps_them(marker_patient):
    stored = Patient.objects.get(pk=marker_patient.pk)
    assert stored.get_deferred_fields() == set()

    stored.deceased_on = datetime.date(2021, 3, 4)
    stored.save()

    again = Patient.objects.get(pk=marker_patient.pk)
    assert again.family_name == "Zyxwvutmarker"
    assert again.given_name == "Quillonemarker"
    assert again.address == "17 Markerstreet Way, Springfield MA"
    assert again.deceased_on == datetime.date(2021, 3, 4)


def test_refresh_from_db_reloads_values_not_read_yet(marker_patient):
    stale = Patient.objects.get(pk=marker_patient.pk)
    edited = Patient.objects.get(pk=marker_patient.pk)
    edited.address = "2 Newaddress Road"
    edited.save()

    stale.refresh_from_db()

    assert stale.address == "2 Newaddress Road"
    assert stale.family_name == "Zyxwvutmarker"


def test_deferred_values_are_loaded_and_opened_when_read(marker_patient):
    deferred = Patient.objects.defer("address").get(pk=marker_patient.pk)
    only = Patient.objects.only("given_name").get(pk=marker_patient.pk)

    assert deferred.get_deferred_fields() == {"address"}
    assert deferred.address == "17 Markerstreet Way, Springfield MA"
    assert only.given_name == "Quillonemarker"
    assert only.birth_date == datetime.date(1961, 2, 28)


def test_values_list_gives_ciphertext_never_plaintext(marker_patient):
    (stored,) = Patient.objects.values_list("family_name", flat=True)

    assert bytes(stored).startswith(_header(1))
    assert b"Zyxwvutmarker" not in bytes(stored)


def test_a_model_with_a_sealed_field_must_load_through_sealed_model():
    from django.core.exceptions import ImproperlyConfigured
    from django.db import models

    attributes = {
        "__module__": "records.models",
        "note": EncryptedTextField(),
        "Meta": type("Meta", (), {"app_label": "records"}),
    }
    with pytest.raises(ImproperlyConfigured, match="SealedModel"):
        type("UnsealedNote", (models.Model,), attributes)


def test_a_value_of_the_wrong_type_fails_on_its_own_row_only(marker_patient):
    other = register_patient(
        given_name="Second", family_name="Person", birth_date=datetime.date(1970, 1, 1),
        source=PatientSource.DEMO,
    )  # fmt: skip
    birth_date = Patient._meta.get_field("birth_date")
    # Authentic for its row and column, but not a date.
    sealed = crypto.seal("Zyxwvutmarker", birth_date.associated_data_for(other.pk))
    _write_raw(other, "birth_date", sealed)

    first, second = Patient.objects.filter(pk__in=[marker_patient.pk, other.pk])
    damaged = first if first.pk == other.pk else second
    sound = second if damaged is first else first

    assert sound.birth_date == datetime.date(1961, 2, 28)
    with pytest.raises(crypto.IntegrityError, match="does not hold a date") as raised:
        _ = damaged.birth_date
    assert "Zyxwvutmarker" not in str(raised.value)


def test_saving_a_loaded_row_seals_every_value_again(isolated_keys, marker_patient):
    crypto.start_rotation(index_key=False)
    stored = Patient.objects.get(pk=marker_patient.pk)

    stored.address = "3 Rotated Lane"
    stored.save()

    # Values not read before the save are written under the new key too.
    for column in ("family_name", "given_name", "mrn", "birth_date", "address"):
        assert bytes(_raw_column(marker_patient, column)).startswith(_header(2))
    assert Patient.objects.get(pk=marker_patient.pk).family_name == "Zyxwvutmarker"
