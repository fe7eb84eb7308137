"""Moving sealed columns from text to binary storage, for the migrations.

Sealed values were text (``a1.<version>.<base64>``) until the binary format;
their columns become BLOB (SQLite) or bytea (PostgreSQL). Values already
stored keep their bytes and stay readable in the text format until
``rotate_keys`` seals them again as binary. No key is needed to migrate.
"""

from django.db import migrations, models

from records.fields import EncryptedField


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
