from django.db import migrations

from records.sealed_storage import store_sealed_columns_as_binary


class Migration(migrations.Migration):
    """Sealed columns hold bytes: the binary format needs no base64 to open.

    Irreversible: a column holding binary sealed values cannot go back to text.
    """

    dependencies = [
        ("records", "0003_sensitive_record_tally"),
    ]

    operations = [store_sealed_columns_as_binary("records")]
