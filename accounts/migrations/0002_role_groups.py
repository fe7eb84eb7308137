"""Create one group per role; the names are the interface operators script against."""

from django.db import migrations

ROLE_NAMES = ("physician", "nurse", "compliance_officer", "export_staff", "admin")


def create_role_groups(apps, schema_editor):
    group_model = apps.get_model("auth", "Group")
    for name in ROLE_NAMES:
        group_model.objects.using(schema_editor.connection.alias).get_or_create(
            name=name
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(create_role_groups, migrations.RunPython.noop),
    ]
