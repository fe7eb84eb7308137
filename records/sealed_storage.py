"""Changes to how sealed values are stored, for the migrations.

Sealed values were text (``a1.<version>.<base64>``) until the binary format;
their columns become BLOB (SQLite) or bytea (PostgreSQL). Values already
stored keep their bytes and stay readable in the text format until
``rotate_keys`` seals them again as binary. No key is needed to migrate.

Fields sealed with another (``sealed_with``) move their values into their
host's; that migration opens and seals values, so it needs the data keys.
"""

import logging

from django.core.management.base import CommandError
from django.db import migrations, models

from records import crypto
from records.fields import IN_HOST, EncryptedField, is_in_host, sealed_groups

logger = logging.getLogger(__name__)


def store_sealed_columns_as_binary(app_label: str) -> migrations.RunPython:
    def forwards(apps, schema_editor):
        for model in apps.get_app_config(app_label).get_models():
            for field in model._meta.local_concrete_fields:
                if isinstance(field, EncryptedField):
                    _alter_from_text(schema_editor, model, field)

    return migrations.RunPython(forwards)


def _alter_from_text(schema_editor, model, field) -> None:
    # The column as earlier migrations made it: the schema editor compares
    # the two and writes the change of type (PostgreSQL keeps each text
    # value's bytes; SQLite copies the table, values unchanged).
    as_text = models.TextField(null=field.null, blank=field.blank)
    as_text.set_attributes_from_name(field.name)
    as_text.model = model
    schema_editor.alter_field(model, as_text, field, strict=True)


def seal_companions_with_hosts(app_label: str) -> migrations.RunPython:
    """Move each companion's value (``sealed_with``) into its host's value.

    Needs the data keys, as every value moved is opened and sealed again.
    A row whose values do not open is left as it was, still readable (or
    failing) exactly as before, and counted in one warning; the portal reads
    both forms. When no row of a table opens, the keys are taken to be the
    wrong ones and the migration stops.
    """

    def forwards(apps, schema_editor):
        for model, host, members in _groups(apps, app_label):
            _in_batches(model, host, members, schema_editor, _joined_row, "group")

    def backwards(apps, schema_editor):
        for model, host, members in _groups(apps, app_label):
            _in_batches(model, host, members, schema_editor, _parted_row, "ungroup")

    return migrations.RunPython(forwards, backwards)


def _groups(apps, app_label: str):
    for model in apps.get_app_config(app_label).get_models():
        for host, *members in sealed_groups(model):
            yield model, host, members


def _in_batches(
    model, host, members, schema_editor, change, verb: str, size: int = 500
) -> None:
    database = schema_editor.connection.alias
    rows = model._base_manager.using(database).order_by("pk")
    names = [host.attname, *(member.attname for member in members)]
    changed = 0
    failed = []
    last_pk = None
    while True:
        batch = rows if last_pk is None else rows.filter(pk__gt=last_pk)
        batch = list(batch.values_list("pk", *names)[:size])
        if not batch:
            break
        for pk, *tokens in batch:
            try:
                columns = change(host, members, pk, tokens)
            except crypto.IntegrityError:
                failed.append(pk)
                continue
            if columns:
                rows.filter(pk=pk).update(**columns)
                changed += 1
        last_pk = batch[-1][0]

    # Row ids name no one; they say which rows to look at.
    named = ", ".join(str(pk) for pk in failed[:5]) + (", ..." if failed[5:] else "")
    if failed and not changed:
        # Not one row opens: other keys than the ones these rows were sealed
        # with, more likely than every row damaged. The migration stops, and
        # its transaction keeps every row as it was. A command error, so that
        # migrate prints the message alone.
        raise CommandError(
            f"None of the {len(failed)} row(s) of {model._meta.label} to {verb} "
            "opens with these keys: nothing was changed. Are they this "
            "installation's keys (PORTAL_KEYRING_FILE, the master key)? If they "
            f"are, these rows are damaged: {named}"
        )
    if failed:
        logger.warning(
            "%d row(s) of %s do not open and keep their form: %s",
            len(failed),
            model._meta.label,
            named,
        )


def _joined_row(host, members, pk, tokens) -> dict | None:
    member_tokens = tokens[1:]
    grouped = [is_in_host(token) for token in member_tokens]
    if all(grouped):
        return None
    if any(grouped):
        # Some texts grouped and some not: only a row changed by hand.
        raise crypto.IntegrityError("a row's texts are partly grouped")
    texts = [
        field.open_token(pk, token)
        for field, token in zip((host, *members), tokens, strict=True)
    ]
    return {
        host.attname: host.seal_group(pk, texts),
        **{member.attname: IN_HOST for member in members},
    }


def _parted_row(host, members, pk, tokens) -> dict | None:
    host_token, *member_tokens = tokens
    if not all(is_in_host(token) for token in member_tokens):
        return None
    texts = host.open_group(pk, host_token)
    return {
        field.attname: field.seal_for(pk, text)
        for field, text in zip((host, *members), texts, strict=True)
    }
