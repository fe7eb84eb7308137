from django.db import migrations

from records.sealed_storage import store_sealed_columns_as_binary


class Migration(migrations.Migration):
    """The authenticator seed's column holds bytes, as every sealed column does.

    Irreversible: a column holding binary sealed values cannot go back to text.
    """

    dependencies = [
        ("accounts", "0004_factor_stamp"),
    ]

    operations = [store_sealed_columns_as_binary("accounts")]
