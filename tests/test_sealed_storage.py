"""The migration to binary sealed columns keeps every value stored before it."""

import uuid

import pytest
from django.db import connection, models
from django.test.utils import isolate_apps

from records.fields import EncryptedTextField, SealedModel
from records.sealed_storage import _alter_from_text
from tests.test_encryption import _text_format_token

pytestmark = pytest.mark.django_db(transaction=True)


@isolate_apps("records")
def test_a_text_column_becomes_binary_and_its_values_still_open():
    class ChartSummary(SealedModel):
        id = models.UUIDField(primary_key=True)
        summary = EncryptedTextField()

        class Meta:
            app_label = "records"
            db_table = "records_patient_migration_check"

    field = ChartSummary._meta.get_field("summary")
    as_text = models.TextField()
    as_text.set_attributes_from_name("summary")
    as_text.model = ChartSummary
    pk = uuid.uuid4()
    token = _text_format_token(
        "Zyxwvutmarker", "summary", pk, table="records_patient_migration_check"
    )

    with connection.schema_editor() as editor:
        editor.create_model(ChartSummary)
        editor.alter_field(ChartSummary, field, as_text, strict=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO records_patient_migration_check (id, summary) "
                "VALUES (%s, %s)",
                [ChartSummary._meta.pk.get_db_prep_value(pk, connection), token],
            )
        with connection.schema_editor() as editor:
            _alter_from_text(editor, ChartSummary, field)

        with connection.cursor() as cursor:
            (summary,) = [
                column
                for column in connection.introspection.get_table_description(
                    cursor, "records_patient_migration_check"
                )
                if column.name == "summary"
            ]
        field_type = connection.introspection.get_field_type(summary.type_code, summary)
        assert field_type == "BinaryField"
        assert ChartSummary.objects.get(pk=pk).summary == "Zyxwvutmarker"
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(ChartSummary)
