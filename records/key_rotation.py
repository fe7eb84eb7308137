"""Online key rotation: every sealed value re-encrypted under the new data key.

The portal keeps serving throughout. Rows are read in primary-key batches and
each changed row is written with a compare-and-swap on its sealed values, so a
chart saved meanwhile is never overwritten with older content. A row already
under the new key is left alone, so a run that was killed and started again
seals nothing twice; the keyring remembers the rotation until it is finished.
"""

import logging
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field

from django.apps import apps
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, FieldError
from django.db import connections, models, router, transaction
from django.db.models.sql import UpdateQuery

from audit.models import AuditAction, AuditOutcome
from audit.services import record_event
from records import crypto
from records.fields import (
    EncryptedField,
    SealedBytes,
    holds_group,
    is_in_host,
    loaded_token,
    sealed_as_loaded,
)

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
MAX_PASSES = 5


class RotationStopped(Exception):
    """The run stopped before the end (a batch limit); run it again to resume."""


@dataclass(frozen=True)
class DamagedValue:
    """A sealed value that does not open: it stays as it is, under its old key."""

    model: str
    pk: str
    field: str
    patient_ref: str

    def __str__(self) -> str:
        return f"{self.model} {self.pk} {self.field}"


@dataclass
class RotationProgress:
    batches: int = 0
    rows_checked: int = 0
    rows_resealed: int = 0
    rows_reindexed: int = 0
    rows_raced: int = 0
    index_key_rotated: bool = False
    # Found on each pass; kept once.
    damaged: set[DamagedValue] = dataclass_field(default_factory=set)


BatchHook = Callable[[type[models.Model], RotationProgress], None]


def sealed_models() -> list[tuple[type[models.Model], list[EncryptedField]]]:
    """Every concrete model with encrypted fields, with those fields."""
    found = []
    for model in apps.get_models():
        fields = [
            f for f in model._meta.concrete_fields if isinstance(f, EncryptedField)
        ]
        if fields and not model._meta.proxy and model._meta.managed:
            found.append((model, fields))
    return found


def rotate_keys(
    *,
    index_key: bool = False,
    batch_size: int = BATCH_SIZE,
    on_batch: BatchHook | None = None,
    actor: str = "system:rotate_keys",
) -> RotationProgress:
    """Rotate (or resume rotating) and re-encrypt every row; returns the counts."""
    resuming = bool(crypto.keyring().rotation)
    rotation = crypto.start_rotation(index_key=index_key)
    if not resuming:
        # The new key seals every write from now on, whether or not this run
        # reaches the end: that is the change the trail must show.
        record_event(
            actor=actor,
            action=AuditAction.KEY_ROTATION_STARTED,
            outcome=AuditOutcome.SUCCESS,
            record_type="Keyring",
            reason=f"data key version {rotation['data']} current"
            + (f", index key version {rotation['index']}" if rotation["index"] else ""),
        )
        # Running processes reread the keyring within this time; after it,
        # none writes under the old key any more.
        time.sleep(settings.PORTAL_KEYRING_REFRESH_SECONDS)
    reindex = rotation.get("index") is not None

    progress = RotationProgress(index_key_rotated=reindex)
    for _pass in range(MAX_PASSES):
        attempted = 0
        for model, fields in sealed_models():
            attempted += _rotate_model(
                model, fields, reindex, batch_size, progress, on_batch
            )
        # A pass that finds nothing left to change is the proof of the end.
        # A damaged value is not left to change: no run could open it, and
        # its old key is kept in any case.
        if not attempted:
            _record_damage(progress.damaged, actor)
            crypto.finish_rotation()
            return progress
    _record_damage(progress.damaged, actor)
    raise RotationStopped("rows kept changing during rotation; run rotate_keys again")


def _rotate_model(model, fields, reindex, batch_size, progress, on_batch) -> int:
    last_pk = None
    attempted = 0
    database = router.db_for_write(model)
    whole_rows = reindex and hasattr(model, "refresh_indexes")
    while True:
        rows = model._base_manager.using(database).order_by("pk")
        if last_pk is not None:
            rows = rows.filter(pk__gt=last_pk)
        batch = _read_batch(model, fields, rows[:batch_size], whole_rows)
        if not batch:
            return attempted

        updates = [_row_update(model, fields, row, reindex, progress) for row in batch]
        updates = [update for update in updates if update is not None]
        attempted += len(updates)
        with transaction.atomic(using=database):
            _write_updates(model, fields, updates, progress, database)
        last_pk = batch[-1].pk
        progress.batches += 1
        progress.rows_checked += len(batch)
        if on_batch:
            on_batch(model, progress)


@dataclass(frozen=True)
class _StoredRow:
    """What rotation reads of a row: its key, its sealed values as stored, and
    whose chart it is; the whole row only when its blind indexes are rebuilt
    from the opened values."""

    pk: object
    tokens: dict
    patient_ref: str
    instance: models.Model | None = None

    @classmethod
    def of(cls, model, fields, instance) -> "_StoredRow":
        patient = _patient_attname(model)
        patient_ref = getattr(instance, patient) if patient else None
        return cls(
            pk=instance.pk,
            tokens={field: loaded_token(instance, field) for field in fields},
            patient_ref="" if patient_ref is None else str(patient_ref),
            instance=instance,
        )


def _patient_attname(model) -> str | None:
    if model._meta.model_name == "patient":
        return "pk"
    try:
        return model._meta.get_field("patient").attname
    except FieldDoesNotExist:
        return None


def _read_batch(model, fields, rows, whole_rows: bool) -> list[_StoredRow]:
    """The next rows, with as little of each as the rotation needs.

    Building model rows (Django's converters on every column, then the
    instance) cost more than re-sealing their values, so only a row whose
    blind indexes are rebuilt is loaded whole; otherwise its sealed values
    are read as stored, beside its key.
    """
    if whole_rows:
        return [_StoredRow.of(model, fields, instance) for instance in rows]
    patient = _patient_attname(model)
    own_column = patient not in (None, "pk")
    leading = ["pk", patient] if own_column else ["pk"]
    batch = []
    for pk, *values in rows.values_list(*leading, *(f.attname for f in fields)):
        whose = values.pop(0) if own_column else pk
        batch.append(
            _StoredRow(
                pk=pk,
                tokens=dict(zip(fields, values, strict=True)),
                patient_ref="" if patient is None or whose is None else str(whose),
            )
        )
    return batch


def _row_update(model, fields, row: _StoredRow, reindex, progress) -> tuple | None:
    """(pk, new column values, sealed values as read) for a row that needs work.

    A value that does not open is noted in ``progress.damaged`` and left as
    it is; the row's other values are sealed again all the same.
    """
    tokens = row.tokens
    changes = {}
    damaged = []
    # Hosts first: whether a companion's own value counts depends on its host.
    for field, token in sorted(
        tokens.items(), key=lambda item: bool(item[0].sealed_with)
    ):
        if token is None:
            continue
        host, companions = field.group()
        grouped = bool(companions) and holds_group(tokens.get(c) for c in companions)
        try:
            if (
                field is not host
                and not is_in_host(token)
                and (grouped or host in damaged)
            ):
                # Read as the portal reads it: a text of its own counts only
                # in a row stored whole before grouping (fields.py).
                raise crypto.IntegrityError("a text beside a group, or its code")
            resealed = field.reseal(row.pk, token, group=field is host and grouped)
        except crypto.IntegrityError:
            progress.damaged.add(_damaged_value(model, row, field))
            damaged.append(field)
            continue
        if resealed is not None:
            changes[field.column] = resealed

    # The blind indexes are made from the values; a damaged one has none.
    instance = row.instance
    if reindex and not damaged and hasattr(instance, "refresh_indexes"):
        before = {name: getattr(instance, name) for name in model.index_fields}
        instance.refresh_indexes()
        for name in model.index_fields:
            if getattr(instance, name) != before[name]:
                changes[model._meta.get_field(name).column] = getattr(instance, name)
    if not changes:
        return None
    # A damaged value is not compared: it is not written, and it may not even
    # be a value the database can compare as stored (SQLite keeps a number
    # written into the column as a number).
    expected = {
        field.column: token for field, token in tokens.items() if field not in damaged
    }
    return row.pk, changes, expected


def _damaged_value(model, row: _StoredRow, field) -> DamagedValue:
    return DamagedValue(
        model=model._meta.label,
        pk=str(row.pk),
        field=field.name,
        patient_ref=row.patient_ref,
    )


def _record_damage(damaged: set[DamagedValue], actor: str) -> None:
    # Evidence of tampering or corruption found by the rotation, as when a
    # chart meets it (INTEGRITY_FAILURE); no value is in the event.
    for value in sorted(damaged, key=str):
        logger.error(
            "Key rotation: a sealed value of %s does not open and stays under "
            "its old key",
            value.model,
        )
        record_event(
            actor=actor,
            action=AuditAction.INTEGRITY_FAILURE,
            outcome=AuditOutcome.FAILURE,
            patient_ref=value.patient_ref,
            record_type=value.model.rsplit(".", 1)[-1],
            fields=[value.field],
            reason=f"row {value.pk}: sealed value does not open during key "
            "rotation; left under its old key",
        )


def _write_updates(model, fields, updates, progress, database) -> None:
    """Write each row only if its sealed values are still those that were read.

    A compare-and-swap per row: the UPDATE names the row together with every
    sealed value read from it, so a chart saved since the read no longer
    matches, keeps its new values, and the next pass looks at it again.

    The rows of a batch change the same columns almost always, so each shape
    of change is compiled by the ORM once (SECURITY V1.2.4: no SQL built from
    strings) and sent for all its rows at once. Building and compiling the
    same UPDATE for every row took two thirds of a rotation's time.
    """
    by_shape: dict[tuple, list] = defaultdict(list)
    for pk, changes, expected in updates:
        shape = (
            tuple(changes),
            tuple((column, token is None) for column, token in expected.items()),
        )
        by_shape[shape].append((pk, changes, expected))

    sealed_columns = {field.column for field in fields}
    connection = connections[database]
    for (changed, compared), rows in by_shape.items():
        statement = _CompareAndSwap(model, changed, compared, connection)
        with connection.cursor() as cursor:
            cursor.executemany(statement.sql, [statement.parameters(*r) for r in rows])
            written = cursor.rowcount

        progress.rows_raced += len(rows) - written
        if sealed_columns.intersection(changed):
            progress.rows_resealed += written
        if not sealed_columns.issuperset(changed):
            progress.rows_reindexed += written


class _CompareAndSwap:
    """The UPDATE of one shape of change: which columns it writes, and which
    sealed values it compares (a NULL is compared with IS NULL).

    The ORM builds it once from stand-in values; where each stand-in lands
    among the compiled parameters is where a row's own value goes.
    """

    def __init__(self, model, changed, compared, connection):
        options = model._meta
        by_column = {field.column: field for field in options.concrete_fields}
        self.connection = connection
        self.pk_field = options.pk

        stand_ins = {}
        still_as_read = {}
        for column, is_null in compared:
            name = by_column[column].attname
            if is_null:
                still_as_read[f"{name}__isnull"] = True
            else:
                stand_in = SealedBytes(secrets.token_bytes(32))
                stand_ins[("expected", column)] = stand_in
                still_as_read[f"{name}__sealed"] = stand_in
        new_values = {}
        for column in changed:
            field = by_column[column]
            if isinstance(field, EncryptedField):
                stand_in = SealedBytes(secrets.token_bytes(32))
            else:
                stand_in = secrets.token_hex(16)
            stand_ins[("new", column)] = stand_in
            new_values[field.attname] = stand_in
        pk_stand_in = (
            uuid.uuid4()
            if isinstance(self.pk_field, models.UUIDField)
            else secrets.randbelow(2**62) + 2**61
        )

        rows = model._base_manager.using(connection.alias)
        query = rows.filter(pk=pk_stand_in, **still_as_read).query.chain(UpdateQuery)
        query.add_update_values(new_values)
        if query.related_updates:
            raise FieldError(f"{model.__name__}: a row's columns are in one table")
        self.sql, parameters = query.get_compiler(connection=connection).as_sql()

        prepared_pk = self.pk_field.get_db_prep_value(pk_stand_in, connection)
        slots = []
        for value in parameters:
            if value == prepared_pk:
                slots.append(("pk", None))
                continue
            slots.extend(
                slot for slot, stand_in in stand_ins.items() if value == stand_in
            )
        if len(slots) != len(parameters) or set(slots) != {("pk", None), *stand_ins}:
            # A value written into the SQL text, or dropped: this statement
            # would write or compare the wrong thing for every other row.
            raise FieldError(f"{model.__name__}: the compare-and-swap lost a value")
        self.slots = tuple(slots)
        self.by_column = by_column

    def parameters(self, pk, changes: dict, expected: dict) -> list:
        connection = self.connection
        values = []
        for kind, column in self.slots:
            if kind == "pk":
                values.append(self.pk_field.get_db_prep_value(pk, connection))
            elif kind == "new":
                field = self.by_column[column]
                stored = _stored(field, changes[column])
                values.append(field.get_db_prep_save(stored, connection))
            else:
                token = sealed_as_loaded(expected[column])
                values.append(
                    self.by_column[column].get_db_prep_value(token, connection)
                )
        return values


def _stored(field, value):
    # A resealed value is ciphertext already: marked so, the field writes it.
    return SealedBytes(value) if isinstance(field, EncryptedField) else value


UNREADABLE = "unreadable"


def _version_or_unreadable(token) -> int | str:
    try:
        return crypto.sealed_version(token)
    except crypto.IntegrityError:
        return UNREADABLE


def key_version_counts() -> dict[str, dict[int | str, int]]:
    """Sealed values per key version for each model, for ``rotate_keys --status``."""
    counts: dict[str, dict[int, int]] = {}
    for model, fields in sealed_models():
        per_version: dict[int, int] = {}
        names = [field.attname for field in fields]
        # values_list gives each sealed value as stored: ciphertext.
        for row in model._base_manager.values_list(*names).iterator(chunk_size=2000):
            for token in row:
                # A companion's empty column holds no value: its host counts it.
                if token is not None and not is_in_host(token):
                    version = _version_or_unreadable(token)
                    per_version[version] = per_version.get(version, 0) + 1
        counts[model._meta.label] = per_version
    return counts
