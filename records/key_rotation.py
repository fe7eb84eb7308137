"""Online key rotation: every sealed value re-encrypted under the new data key.

The portal keeps serving throughout. Rows are read in primary-key batches and
each changed row is written with a compare-and-swap on its sealed values, so a
chart saved meanwhile is never overwritten with older content. A row already
under the new key is left alone, so a run that was killed and started again
seals nothing twice; the keyring remembers the rotation until it is finished.
"""

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.db import connections, models, router, transaction

from records import crypto
from records.fields import EncryptedField, loaded_token

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
MAX_PASSES = 5


class RotationStopped(Exception):
    """The run stopped before the end (a batch limit); run it again to resume."""


@dataclass
class RotationProgress:
    batches: int = 0
    rows_checked: int = 0
    rows_resealed: int = 0
    rows_reindexed: int = 0
    rows_raced: int = 0


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
) -> RotationProgress:
    """Rotate (or resume rotating) and re-encrypt every row; returns the counts."""
    resuming = bool(crypto.keyring().rotation)
    rotation = crypto.start_rotation(index_key=index_key)
    if not resuming:
        # Running processes reread the keyring within this time; after it,
        # none writes under the old key any more.
        time.sleep(settings.PORTAL_KEYRING_REFRESH_SECONDS)
    reindex = rotation.get("index") is not None

    progress = RotationProgress()
    for _pass in range(MAX_PASSES):
        attempted = 0
        for model, fields in sealed_models():
            attempted += _rotate_model(
                model, fields, reindex, batch_size, progress, on_batch
            )
        # A pass that finds nothing left to change is the proof of the end.
        if not attempted:
            crypto.finish_rotation()
            return progress
    raise RotationStopped("rows kept changing during rotation; run rotate_keys again")


def _rotate_model(model, fields, reindex, batch_size, progress, on_batch) -> int:
    last_pk = None
    attempted = 0
    database = router.db_for_write(model)
    while True:
        rows = model._base_manager.using(database).order_by("pk")
        if last_pk is not None:
            rows = rows.filter(pk__gt=last_pk)
        batch = list(rows[:batch_size])
        if not batch:
            return attempted

        updates = [_row_update(model, fields, row, reindex) for row in batch]
        updates = [update for update in updates if update is not None]
        attempted += len(updates)
        with transaction.atomic(using=database):
            _write_updates(model, fields, updates, progress, database)
        last_pk = batch[-1].pk
        progress.batches += 1
        progress.rows_checked += len(batch)
        if on_batch:
            on_batch(model, progress)


def _row_update(model, fields, instance, reindex) -> tuple | None:
    """(pk, new column values, sealed values as read) for a row that needs work."""
    tokens = {field: loaded_token(instance, field) for field in fields}
    changes = {}
    for field, token in tokens.items():
        if token is not None:
            resealed = crypto.reseal(token, field.associated_data_for(instance.pk))
            if resealed is not None:
                changes[field.column] = resealed

    if reindex and hasattr(instance, "refresh_indexes"):
        before = {name: getattr(instance, name) for name in model.index_fields}
        instance.refresh_indexes()
        for name in model.index_fields:
            if getattr(instance, name) != before[name]:
                changes[model._meta.get_field(name).column] = getattr(instance, name)
    if not changes:
        return None
    expected = {field.column: token for field, token in tokens.items()}
    return instance.pk, changes, expected


def _write_updates(model, fields, updates, progress, database) -> None:
    """Write each row only if its sealed values are still those that were read.

    A compare-and-swap per row: a chart saved since the read keeps its new
    values, and the next pass looks at it again. One statement per shape of
    row, run with executemany: the ORM would compile a query per row, which
    alone would hold rotation under 2,000 rows/s.
    """
    connection = connections[database]
    quote = connection.ops.quote_name
    sealed_columns = {field.column for field in fields}
    groups: dict[tuple, list] = defaultdict(list)
    for pk, changes, expected in updates:
        shape = (
            tuple(sorted(changes)),
            tuple((column, expected[column] is None) for column in sorted(expected)),
        )
        groups[shape].append((pk, changes, expected))

    with connection.cursor() as cursor:
        for (columns, conditions), rows in groups.items():
            # Identifiers come from the model's metadata, quoted by the
            # backend; every value is a bound parameter.
            assignments = ", ".join(f"{quote(column)} = %s" for column in columns)
            checks = " AND ".join(
                f"{quote(column)} IS NULL" if is_null else f"{quote(column)} = %s"
                for column, is_null in conditions
            )
            statement = (
                f"UPDATE {quote(model._meta.db_table)} SET {assignments} "  # noqa: S608
                f"WHERE {quote(model._meta.pk.column)} = %s AND {checks}"
            )
            parameters = [
                [
                    *(changes[column] for column in columns),
                    model._meta.pk.get_db_prep_value(pk, connection),
                    *(expected[c] for c, is_null in conditions if not is_null),
                ]
                for pk, changes, expected in rows
            ]
            cursor.executemany(statement, parameters)
            written = max(cursor.rowcount, 0)
            progress.rows_raced += len(rows) - min(written, len(rows))
            if sealed_columns.intersection(columns):
                progress.rows_resealed += written
            if not sealed_columns.issuperset(columns):
                progress.rows_reindexed += written


def key_version_counts() -> dict[str, dict[int, int]]:
    """Sealed values per key version for each model, for ``rotate_keys --status``."""
    counts: dict[str, dict[int, int]] = {}
    for model, fields in sealed_models():
        per_version: dict[int, int] = {}
        names = [field.attname for field in fields]
        # values_list gives each sealed value as stored: ciphertext.
        for row in model._base_manager.values_list(*names).iterator(chunk_size=2000):
            for token in row:
                if token is not None:
                    version = crypto.sealed_version(token)
                    per_version[version] = per_version.get(version, 0) + 1
        counts[model._meta.label] = per_version
    return counts
