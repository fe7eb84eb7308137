import records.fields
from django.db import migrations

from records.sealed_storage import seal_companions_with_hosts


def _sealed_with_code(model_name: str, name: str) -> migrations.AlterField:
    return migrations.AlterField(
        model_name=model_name,
        name=name,
        field=records.fields.EncryptedTextField(
            blank=True, default="", sealed_with="code"
        ),
    )


class Migration(migrations.Migration):
    """A record's description and other short texts are sealed inside its code's
    value: one AES-GCM opening per chart row instead of up to three.

    No column changes. Existing rows are sealed again (the data keys must be
    present); reversing puts each value back in its own column.
    """

    dependencies = [
        ("records", "0005_note_draft"),
    ]

    operations = [
        *(
            _sealed_with_code(model_name, "description")
            for model_name in (
                "allergyintolerance",
                "clinicalnote",
                "condition",
                "encounter",
                "immunization",
                "medicationrequest",
                "observation",
                "procedure",
            )
        ),
        _sealed_with_code("allergyintolerance", "reaction"),
        _sealed_with_code("encounter", "reason"),
        _sealed_with_code("medicationrequest", "dosage"),
        _sealed_with_code("observation", "value"),
        seal_companions_with_hosts("records"),
    ]
