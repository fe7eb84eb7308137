"""Online key rotation: every sealed value re-encrypted under the new data key.

The portal keeps serving throughout. Rows are read in primary-key batches and
each changed row is written with a compare-and-swap on its sealed values, so a
chart saved meanwhile is never overwritten with older content. A row already
under the new key is left alone, so a run that was killed and started again
seals nothing twice; the keyring remembers the rotation until it is finished.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.db import models, router, transaction

from records import crypto
from records.fields import EncryptedField, SealedText, StoredCiphertext

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
        before = (progress.rows_resealed, progress.rows_reindexed, progress.rows_raced)
        raced_before = progress.rows_raced
        for model, fields in sealed_models():
            _rotate_model(model, fields, reindex, batch_size, progress, on_batch)
        changed = (progress.rows_resealed, progress.rows_reindexed) != before[:2]
        if not changed and progress.rows_raced == raced_before:
            crypto.finish_rotation()
            return progress
    raise RotationStopped("rows kept changing during rotation; run rotate_keys again")


def _rotate_model(model, fields, reindex, batch_size, progress, on_batch) -> None:
    last_pk = None
    database = router.db_for_write(model)
    while True:
        rows = model._base_manager.using(database).order_by("pk")
        if last_pk is not None:
            rows = rows.filter(pk__gt=last_pk)
        batch = list(rows[:batch_size])
        if not batch:
            return

        with transaction.atomic(using=database):
            for instance in batch:
                _rotate_row(model, fields, instance, reindex, progress, database)
        last_pk = batch[-1].pk
        progress.batches += 1
        progress.rows_checked += len(batch)
        if on_batch:
            on_batch(model, progress)


def _rotate_row(model, fields, instance, reindex, progress, database) -> None:
    tokens = {field: _token(instance.__dict__.get(field.attname)) for field in fields}
    changes = {}
    for field, token in tokens.items():
        if token is not None:
            resealed = crypto.reseal(token, field.associated_data_for(instance.pk))
            if resealed is not None:
                changes[field.attname] = SealedText(resealed)

    indexes_changed = False
    if reindex and hasattr(instance, "refresh_indexes"):
        before = {name: getattr(instance, name) for name in model.index_fields}
        instance.refresh_indexes()
        after = {name: getattr(instance, name) for name in model.index_fields}
        indexes_changed = before != after
        changes.update(
            {name: after[name] for name in after if after[name] != before[name]}
        )
    if not changes:
        return

    # Compare-and-swap: the row is written only if no one saved it since it
    # was read; otherwise the next pass looks at it again.
    unchanged = {
        (f"{field.name}__sealed" if token is not None else f"{field.name}__isnull"): (
            SealedText(token) if token is not None else True
        )
        for field, token in tokens.items()
    }
    written = (
        model._base_manager.using(database)
        .filter(pk=instance.pk, **unchanged)
        .update(**changes)
    )
    if not written:
        progress.rows_raced += 1
        return
    if any(name in changes for name in (f.attname for f in fields)):
        progress.rows_resealed += 1
    if indexes_changed:
        progress.rows_reindexed += 1


def _token(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, StoredCiphertext):
        return value.token
    raise TypeError("a freshly loaded row holds only ciphertext")


def key_version_counts() -> dict[str, dict[int, int]]:
    """Sealed values per key version for each model, for ``rotate_keys --status``."""
    counts: dict[str, dict[int, int]] = {}
    for model, fields in sealed_models():
        per_version: dict[int, int] = {}
        names = [field.attname for field in fields]
        for row in model._base_manager.values_list(*names).iterator(chunk_size=2000):
            for value in row:
                if value is not None:
                    version = crypto.sealed_version(value.token)
                    per_version[version] = per_version.get(version, 0) + 1
        counts[model._meta.label] = per_version
    return counts
