"""A record's short texts sealed inside its code's value (``sealed_with``).

A chart row opens with one AES-GCM call for its code, description and value
or reason; the group is bound to its table, its columns and its row, and rows
stored before grouping read and rotate as they did.
"""

import copy
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from records import crypto
from records.fields import (
    EncryptedTextField,
    group_prefix,
    joined_group,
    parted_group,
)
from records.key_rotation import key_version_counts
from records.models import Condition, Encounter
from records.sealed_storage import seal_companions_with_hosts

TEXTS = {
    "code": "185349003",
    "description": "Markvisit for chest pain",
    "reason": "Markreason angina",
}


def _encounter(patient, source_key="e1", **texts) -> Encounter:
    return Encounter.objects.create(
        patient=patient, source_key=source_key, **{**TEXTS, **texts}
    )


def _column(record, column: str) -> bytes | None:
    table = type(record)._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {column} FROM {table} WHERE id = %s",  # noqa: S608
            [type(record)._meta.pk.get_db_prep_value(record.pk, connection)],
        )
        stored = cursor.fetchone()[0]
    return None if stored is None else bytes(stored)


def _write_column(record, column: str, value: bytes) -> None:
    table = type(record)._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {column} = %s WHERE id = %s",  # noqa: S608
            [value, type(record)._meta.pk.get_db_prep_value(record.pk, connection)],
        )


def _prefix(record, column: str) -> bytes:
    return f"{type(record)._meta.db_table}.{column}:".encode()


def _store_ungrouped(record, texts: dict[str, str]) -> None:
    """Each text sealed alone in its own column, as before grouping."""
    for column, text in texts.items():
        associated_data = crypto.associated_data_of(_prefix(record, column), record.pk)
        _write_column(record, column, crypto.seal(text, associated_data))


def _loaded(record, how: str) -> Encounter:
    """The record read back: by itself, among its chart's other records (each
    column opened for all at once), or as a copy, which opens on its own."""
    if how == "with others":
        rows = list(Encounter.objects.filter(patient_id=record.patient_id))
        assert len(rows) > 1
        return next(row for row in rows if row.pk == record.pk)
    stored = Encounter.objects.get(pk=record.pk)
    return copy.copy(stored) if how == "copied" else stored


def _opened_alone(record, column: str) -> str:
    return crypto.open_stored(
        _column(record, column), _prefix(record, column), record.pk
    )


def _opened_group(record) -> list[str]:
    """An encounter's code column opened as the group it holds."""
    prefix = group_prefix("records_encounter", "code", ["description", "reason"])
    return parted_group(
        crypto.open_stored(_column(record, "code"), prefix, record.pk), 3
    )


def test_a_records_texts_are_stored_as_one_value_in_its_code_column(
    marker_patient,
):
    record = _encounter(marker_patient)

    assert _column(record, "description") == b""
    assert _column(record, "reason") == b""
    assert _opened_group(record) == list(TEXTS.values())
    assert b"Markvisit" not in _column(record, "code")


@pytest.mark.parametrize("loaded", ["alone", "with others", "copied"])
def test_each_text_reads_back_from_the_group(marker_patient, loaded):
    record = _encounter(marker_patient)
    _encounter(marker_patient, "e2", description="Markvisit second")

    stored = _loaded(record, loaded)

    assert (stored.code, stored.description, stored.reason) == tuple(TEXTS.values())


@pytest.mark.parametrize("loaded", ["alone", "with others", "copied"])
def test_a_record_stored_before_grouping_reads_and_is_grouped_when_saved(
    marker_patient, loaded
):
    record = _encounter(marker_patient)
    _encounter(marker_patient, "e2")
    _store_ungrouped(record, TEXTS)

    stored = _loaded(record, loaded)
    assert (stored.code, stored.description, stored.reason) == tuple(TEXTS.values())

    stored.save()

    assert _column(record, "description") == b""
    assert _opened_group(record) == list(TEXTS.values())


def test_a_text_read_after_the_code_changed_is_the_stored_one(marker_patient):
    record = _encounter(marker_patient)
    stored = Encounter.objects.get(pk=record.pk)

    stored.code = "390906007"

    assert stored.description == TEXTS["description"]
    stored.save()
    again = Encounter.objects.get(pk=record.pk)
    assert (again.code, again.description) == ("390906007", TEXTS["description"])


def test_saving_one_text_by_name_keeps_the_others(marker_patient):
    record = _encounter(marker_patient)
    stored = Encounter.objects.get(pk=record.pk)

    stored.description = "Markvisit corrected"
    stored.save(update_fields=["description"])

    again = Encounter.objects.get(pk=record.pk)
    assert (again.code, again.description, again.reason) == (
        TEXTS["code"],
        "Markvisit corrected",
        TEXTS["reason"],
    )


def test_deferred_texts_still_open(marker_patient):
    record = _encounter(marker_patient)

    assert (
        Encounter.objects.only("description").get(pk=record.pk).description
        == (TEXTS["description"])
    )
    assert (
        Encounter.objects.defer("reason").get(pk=record.pk).reason == (TEXTS["reason"])
    )
    assert (
        Encounter.objects.defer("code").get(pk=record.pk).description
        == (TEXTS["description"])
    )


def test_a_group_copied_from_another_row_opens_nothing(marker_patient):
    record = _encounter(marker_patient)
    other = _encounter(marker_patient, "e2", description="Markvisit other")
    _write_column(record, "code", _column(other, "code"))

    stored = Encounter.objects.get(pk=record.pk)
    for name in ("description", "code", "reason"):
        with pytest.raises(crypto.IntegrityError, match="integrity check"):
            getattr(stored, name)


@pytest.mark.parametrize("loaded", ["alone", "with others", "copied"])
def test_an_emptied_column_does_not_make_a_code_alone_a_group(marker_patient, loaded):
    record = _encounter(marker_patient)
    _encounter(marker_patient, "e2")
    _store_ungrouped(record, TEXTS)
    # Emptied by someone with the database: the row now claims a group, and
    # its code, sealed alone, does not open as one.
    _write_column(record, "reason", b"")

    stored = _loaded(record, loaded)
    for name in ("code", "reason"):
        with pytest.raises(crypto.IntegrityError, match="integrity check"):
            getattr(stored, name)
    with pytest.raises(crypto.IntegrityError, match="holds a value of its own"):
        _ = stored.description


@pytest.mark.parametrize("loaded", ["alone", "with others", "copied"])
def test_texts_put_back_in_their_columns_do_not_make_a_group_a_code(
    marker_patient, loaded
):
    record = _encounter(marker_patient)
    _encounter(marker_patient, "e2")
    # Each text's column given a value sealed alone for it (a backup's), so
    # that the row claims its code is alone: the group does not open as one.
    _store_ungrouped(record, {"description": "Markold", "reason": "Markold"})

    stored = _loaded(record, loaded)
    for name in ("code", "description", "reason"):
        with pytest.raises(crypto.IntegrityError, match="integrity check"):
            getattr(stored, name)


@pytest.mark.parametrize("loaded", ["alone", "with others", "copied"])
def test_a_lone_text_put_back_beside_its_group_is_refused(marker_patient, loaded):
    # A condition's description is its code's only companion: put back from a
    # backup, it leaves no empty column to show the row's texts are grouped.
    condition = Condition.objects.create(
        patient=marker_patient, source_key="c1", code="44054006",
        description="Markdiabetes",
    )  # fmt: skip
    Condition.objects.create(patient=marker_patient, source_key="c2", code="1")
    _store_ungrouped(condition, {"description": "Markold diagnosis"})

    if loaded == "with others":
        rows = list(Condition.objects.filter(patient=marker_patient))
        stored = next(row for row in rows if row.pk == condition.pk)
    else:
        stored = Condition.objects.get(pk=condition.pk)
        stored = copy.copy(stored) if loaded == "copied" else stored

    with pytest.raises(crypto.IntegrityError, match="integrity check"):
        _ = stored.description


def test_the_migration_groups_stored_rows_and_reverses(marker_patient):
    records = [_encounter(marker_patient, f"e{number}") for number in range(3)]
    for record in records:
        _store_ungrouped(record, TEXTS)
    damaged = records[2]
    flipped = bytearray(_column(damaged, "description"))
    flipped[-1] ^= 1
    _write_column(damaged, "description", bytes(flipped))
    migration = seal_companions_with_hosts("records")
    schema_editor = SimpleNamespace(connection=connection)

    migration.code(apps, schema_editor)

    for record in records[:2]:
        assert _column(record, "description") == b""
        assert _opened_group(record) == list(TEXTS.values())
    # The row that does not open is left as it was.
    assert _column(damaged, "description") == bytes(flipped)
    assert _opened_alone(damaged, "code") == TEXTS["code"]
    assert Encounter.objects.get(pk=damaged.pk).code == TEXTS["code"]

    migration.reverse_code(apps, schema_editor)

    for record in records[:2]:
        assert {column: _opened_alone(record, column) for column in TEXTS} == TEXTS
        stored = Encounter.objects.get(pk=record.pk)
        assert (stored.code, stored.description) == (
            TEXTS["code"],
            TEXTS["description"],
        )


@pytest.mark.django_db(databases="__all__")
def test_rotation_seals_each_group_again_once(isolated_keys, marker_patient):
    records = [_encounter(marker_patient, f"e{number}") for number in range(3)]
    _store_ungrouped(records[0], TEXTS)

    call_command("rotate_keys")

    # Three codes, one of them with its texts still in their own columns.
    assert key_version_counts()["records.Encounter"] == {2: 5}
    for record in records:
        stored = Encounter.objects.get(pk=record.pk)
        assert (stored.code, stored.description, stored.reason) == tuple(TEXTS.values())
    assert _column(records[1], "description") == b""


@pytest.mark.parametrize("text", ["\x1e", "\x1ecode", "\x1ea\x1fb\x1fc\x1fd"])
def test_a_group_of_the_wrong_size_is_an_integrity_error(text):
    with pytest.raises(crypto.IntegrityError, match="where 3 belong"):
        parted_group(text, 3)


def test_a_group_holds_any_text_its_members_hold(marker_patient):
    texts = ["\x1e\x1f\x1b", "", "a\x1bs\x1b\x1bes\x1f", "\x1bs"]

    assert parted_group(joined_group(texts), 4) == texts
    with pytest.raises(crypto.IntegrityError, match="malformed"):
        parted_group("8480-6", 4)
    record = _encounter(marker_patient, code=texts[0], description=texts[2])
    stored = Encounter.objects.get(pk=record.pk)
    assert (stored.code, stored.description) == (texts[0], texts[2])


@pytest.mark.parametrize(
    ("sealed_with", "null"),
    [("nonexistent", False), ("encounter_class", False), ("reason", False),
     ("code", True)],
)  # fmt: skip
def test_a_field_that_cannot_carry_its_companion_fails_the_checks(sealed_with, null):
    field = EncryptedTextField(sealed_with=sealed_with, null=null, blank=True)
    field.set_attributes_from_name("summary")
    field.model = Condition if sealed_with != "reason" else Encounter

    # "reason" is sealed with the code itself: groups do not nest.
    errors = [error.id for error in field.check()]

    assert "records.E101" in errors


@pytest.mark.parametrize("loaded", ["alone", "with others", "copied"])
def test_a_text_put_back_in_its_own_column_is_refused(marker_patient, loaded):
    record = _encounter(marker_patient)
    _encounter(marker_patient, "e2")
    # One column given a value sealed alone for it (from a backup taken
    # before grouping, say) while its row's texts are in the code's group.
    _store_ungrouped(record, {"description": "Markvisit old text"})

    stored = _loaded(record, loaded)

    # The code first: opening its group must not place the group's text
    # where the column holds another.
    assert (stored.code, stored.reason) == (TEXTS["code"], TEXTS["reason"])
    with pytest.raises(crypto.IntegrityError, match="holds a value of its own"):
        _ = stored.description


@pytest.mark.parametrize("loaded", ["alone", "with others", "copied"])
def test_a_code_stored_before_grouping_reads_whatever_it_holds(marker_patient, loaded):
    # The importer accepted control characters in a code; a code sealed alone
    # is read as itself, whatever it looks like.
    texts = {**TEXTS, "code": "\x1eSPOOF\x1fShown instead\x1f"}
    record = _encounter(marker_patient)
    _encounter(marker_patient, "e2")
    _store_ungrouped(record, texts)

    stored = _loaded(record, loaded)
    assert (stored.code, stored.description, stored.reason) == tuple(texts.values())

    seal_companions_with_hosts("records").code(
        apps, SimpleNamespace(connection=connection)
    )

    assert _opened_group(record) == list(texts.values())
    again = Encounter.objects.get(pk=record.pk)
    assert (again.code, again.description, again.reason) == tuple(texts.values())


def test_a_deferred_code_read_first_still_opens_its_texts(marker_patient):
    record = _encounter(marker_patient)

    stored = Encounter.objects.defer("code").get(pk=record.pk)
    assert stored.code == TEXTS["code"]
    assert stored.description == TEXTS["description"]

    changed = Encounter.objects.defer("code", "reason").get(pk=record.pk)
    changed.code = "390906007"
    changed.save(update_fields=["code"])
    again = Encounter.objects.get(pk=record.pk)
    assert (again.code, again.description, again.reason) == (
        "390906007",
        TEXTS["description"],
        TEXTS["reason"],
    )

    # Saved whole, without reading anything first, it keeps every text.
    Encounter.objects.defer("code").get(pk=record.pk).save()
    resaved = Encounter.objects.defer("code", "description").get(pk=record.pk)
    resaved.reason = "Markreason revised"
    resaved.save()
    final = Encounter.objects.get(pk=record.pk)
    assert (final.code, final.description, final.reason) == (
        "390906007",
        TEXTS["description"],
        "Markreason revised",
    )


def test_the_migration_stops_when_no_row_opens_with_the_keys(marker_patient):
    records = [_encounter(marker_patient, f"e{number}") for number in range(2)]
    # Sealed for other rows: as if under another installation's keys.
    for record, other in zip(records, reversed(records), strict=True):
        for column, text in TEXTS.items():
            associated_data = crypto.associated_data_of(
                _prefix(record, column), other.pk
            )
            _write_column(record, column, crypto.seal(text, associated_data))
    before = [_column(record, "code") for record in records]

    with pytest.raises(CommandError, match="None of the 2 row") as stopped:
        seal_companions_with_hosts("records").code(
            apps, SimpleNamespace(connection=connection)
        )

    assert [_column(record, "code") for record in records] == before
    assert all(str(record.pk) in str(stopped.value) for record in records)


@pytest.mark.django_db(databases="__all__")
def test_rotation_reports_a_text_put_back_beside_its_group(
    isolated_keys, marker_patient
):
    from audit.models import AuditAction, AuditEvent

    condition = Condition.objects.create(
        patient=marker_patient, source_key="c1", code="44054006",
        description="Markdiabetes",
    )  # fmt: skip
    _store_ungrouped(condition, {"description": "Markold diagnosis"})
    stale = _column(condition, "description")

    with pytest.raises(CommandError, match="2 sealed values do not open"):
        call_command("rotate_keys")

    # Neither is carried over to the new key: the stale text dies with the old.
    assert _column(condition, "description") == stale
    assert sorted(
        event.fields[0]
        for event in AuditEvent.objects.filter(action=AuditAction.INTEGRITY_FAILURE)
    ) == ["code", "description"]
