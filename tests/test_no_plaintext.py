"""After an import, no patient name from the bundles is readable in the stored bytes."""

import json
import logging
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connections

from records.models import Patient

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _names_in(bundles) -> set[str]:
    names = set()
    for path in bundles:
        for entry in json.loads(path.read_text())["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] != "Patient":
                continue
            for name in resource.get("name", []):
                names.update(name.get("given", []))
                if name.get("family"):
                    names.add(name["family"])
    return names


def _stored_bytes(alias: str) -> bytes:
    connection = connections[alias]
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        connection.close()
        database = Path(settings_dict["NAME"])
        files = [database, *database.parent.glob(database.name + "-*")]
        return b"".join(path.read_bytes() for path in files if path.exists())

    assert connection.vendor == "postgresql"
    command = ["pg_dump", "--no-owner", "--dbname", settings_dict["NAME"]]
    command += ["--host", settings_dict.get("HOST") or "127.0.0.1"]
    command += ["--username", settings_dict.get("USER") or "postgres"]
    if settings_dict.get("PORT"):
        command += ["--port", str(settings_dict["PORT"])]
    return subprocess.run(command, check=True, capture_output=True).stdout


def as_dumped(token, alias: str) -> bytes:
    """A sealed value as it appears in the database file or in pg_dump (hex)."""
    token = bytes(token)
    return token if connections[alias].vendor == "sqlite" else token.hex().encode()


def test_no_bundle_name_appears_in_either_database(synthea_bundles, caplog):
    caplog.set_level(logging.DEBUG)
    names = _names_in(synthea_bundles)
    assert len(names) >= 20

    call_command("import_fhir", str(synthea_bundles[0].parent))

    # Each dump must hold what was written, or an empty one would pass.
    sealed = Patient.objects.values_list("family_name", flat=True).first()
    expectations = {"default": as_dumped(sealed, "default"), "audit": b"FHIR_IMPORT"}
    for alias, written in expectations.items():
        stored = _stored_bytes(alias)
        assert written in stored, alias
        found = [name for name in names if name.encode() in stored]
        assert found == [], f"plaintext names in the {alias} database"
    assert not [name for name in names if name in caplog.text]
