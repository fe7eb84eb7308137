"""Envelope encryption: data keys wrapped by a master key in a file or a token."""

import base64
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from records import crypto, keyproviders
from records.models import Patient, PatientSource
from records.services import register_patient

pytestmark = pytest.mark.django_db(databases="__all__")


def _patient(family="Keytestfamily"):
    return register_patient(
        given_name="Keytestgiven", family_name=family,
        birth_date=datetime.date(1980, 3, 4), source=PatientSource.DEMO,
    )  # fmt: skip


def test_development_creates_private_master_key_and_wrapped_keyring(isolated_keys):
    keys = isolated_keys.PORTAL_KEYRING_FILE.parent

    assert (keys / "master.key").stat().st_mode & 0o777 == 0o600
    assert (keys / "keyring.json").stat().st_mode & 0o777 == 0o600


def test_keyring_file_holds_no_raw_key(isolated_keys):
    ring = crypto.keyring()
    stored = isolated_keys.PORTAL_KEYRING_FILE.read_bytes()

    for key in [*ring.data_keys.values(), *ring.index_keys.values(), ring.dedupe_key]:
        assert base64.b64encode(key) not in stored
        assert key not in stored
        assert key.hex().encode() not in stored
    assert json.loads(stored)["master_key"].startswith("file:")


def test_keyring_does_not_open_with_another_master_key(isolated_keys, tmp_path):
    isolated_keys.PORTAL_MASTER_KEY_FILE = tmp_path / "other.key"
    keyproviders.create_master_key_file(tmp_path / "other.key")

    with pytest.raises(crypto.KeyringUnavailable, match="configured master key"):
        crypto.load_keyring(create_if_missing=False)


@pytest.mark.parametrize(
    ("kind", "version", "named"),
    [("data_keys", "1", "data key 1"), ("index_keys", "1", "index key 1")],
)
def test_a_damaged_keyring_entry_is_not_blamed_on_the_master_key(
    isolated_keys, kind, version, named
):
    crypto.keyring()
    document = json.loads(isolated_keys.PORTAL_KEYRING_FILE.read_text())
    wrapped = bytearray(base64.b64decode(document[kind][version]["wrapped"]))
    wrapped[-1] ^= 1
    document[kind][version]["wrapped"] = base64.b64encode(wrapped).decode()
    isolated_keys.PORTAL_KEYRING_FILE.write_text(json.dumps(document))

    with pytest.raises(crypto.KeyringUnavailable) as refused:
        crypto.load_keyring(create_if_missing=False)

    message = str(refused.value)
    assert named in message and "damaged" in message
    assert "configured master key" not in message


def test_production_refuses_to_start_without_the_master_key(isolated_keys, tmp_path):
    isolated_keys.PORTAL_MASTER_KEY_FILE = tmp_path / "absent.key"

    with pytest.raises(crypto.KeyringUnavailable, match="PORTAL_MASTER_KEY_FILE"):
        crypto.load_keyring(create_if_missing=False)


def test_production_refuses_a_master_key_others_can_read(isolated_keys):
    isolated_keys.DEVELOPMENT = False
    isolated_keys.PORTAL_MASTER_KEY_FILE.chmod(0o644)

    with pytest.raises(crypto.KeyringUnavailable, match="chmod 600"):
        crypto.load_keyring(create_if_missing=False)


def test_no_keys_means_no_writes_never_plaintext(isolated_keys):
    isolated_keys.PORTAL_KEYRING_FILE.unlink()
    isolated_keys.DEVELOPMENT = False
    crypto.reset_keyring_cache()

    with pytest.raises(crypto.KeyringUnavailable):
        _patient()

    assert not Patient.objects.exists()


def test_a_wrapped_key_moved_to_another_version_fails(isolated_keys):
    path = isolated_keys.PORTAL_KEYRING_FILE
    document = json.loads(path.read_text())
    document["data_keys"]["2"] = document["data_keys"]["1"]
    path.write_text(json.dumps(document))

    with pytest.raises(crypto.KeyringUnavailable):
        crypto.load_keyring(create_if_missing=False)


def test_values_sealed_under_the_first_keyring_format_stay_readable(
    isolated_keys, tmp_path
):
    legacy = {
        "format": 1, "current": 1,
        "data_keys": {"1": base64.b64encode(b"\x01" * 32).decode()},
        "index_key": base64.b64encode(b"\x02" * 32).decode(),
    }  # fmt: skip
    isolated_keys.PORTAL_KEYRING_FILE.write_text(json.dumps(legacy))
    crypto.reset_keyring_cache()
    patient = _patient()
    assert crypto.keyring().wrapped is False

    provider = keyproviders.master_key_provider(create_if_missing=False)
    crypto.write_keyring(crypto.keyring(), provider)

    stored = isolated_keys.PORTAL_KEYRING_FILE.read_text()
    assert legacy["data_keys"]["1"] not in stored
    assert legacy["index_key"] not in stored
    assert Patient.objects.get(pk=patient.pk).family_name == "Keytestfamily"


def test_softhsm_master_key_wraps_the_keyring_and_seals_records(hsm_keys):
    patient = _patient(family="Hsmfamily")

    document = json.loads(hsm_keys.PORTAL_KEYRING_FILE.read_text())
    assert document["master_key"].startswith("pkcs11:ehr-test/")
    crypto.reset_keyring_cache()
    assert Patient.objects.get(pk=patient.pk).family_name == "Hsmfamily"


def test_softhsm_master_key_never_leaves_the_token(hsm_keys):
    import pkcs11
    from pkcs11 import Attribute

    provider = keyproviders.master_key_provider(create_if_missing=False)
    with provider._lock:
        key = provider._key()
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.SENSITIVE] is True
        with pytest.raises(pkcs11.AttributeSensitive):
            key[Attribute.VALUE]


def test_softhsm_keyring_does_not_open_with_the_file_master_key(hsm_keys):
    hsm_keys.PORTAL_MASTER_KEY_PROVIDER = "file"

    with pytest.raises(crypto.KeyringUnavailable, match="pkcs11:ehr-test"):
        crypto.load_keyring(create_if_missing=False)


def test_softhsm_without_its_key_refuses_to_start(hsm_keys):
    hsm_keys.PORTAL_PKCS11_KEY_LABEL = "no-such-key"

    with pytest.raises(crypto.KeyringUnavailable, match="create_master_key"):
        crypto.load_keyring(create_if_missing=False)


def test_a_replaced_keyring_that_does_not_open_leaves_the_loaded_keys_in_force(
    isolated_keys, tmp_path, caplog
):
    patient = _patient(family="Steadyfamily")
    crypto.keyring()
    other = tmp_path / "other.key"
    keyproviders.create_master_key_file(other)
    # Replaced by another process, as a botched copy would be: this process's
    # loaded keys are not told.
    wrong = keyproviders.FileMasterKey(other, require_private=True)
    isolated_keys.PORTAL_KEYRING_FILE.write_text(
        json.dumps(crypto.keyring_document(crypto.new_keyring(), wrong))
    )

    readings = [Patient.objects.get(pk=patient.pk).family_name for _ in range(3)]

    assert readings == ["Steadyfamily"] * 3
    assert "The replaced keyring does not open" in caplog.text


def _run_portal_command(tmp_path, **keys) -> subprocess.CompletedProcess:
    """``manage.py check`` in development mode, on a data folder of its own."""
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ehr_portal.settings",
        "PORTAL_MODE": "development",
        "PORTAL_DATA_DIR": str(tmp_path / "data"),
        **{name: str(value) for name, value in keys.items()},
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parents[1], env=environment,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_named_master_key_file_that_is_missing_is_refused_not_made(
    isolated_keys, tmp_path
):
    keyring = isolated_keys.PORTAL_KEYRING_FILE
    before = keyring.read_bytes()
    missing = tmp_path / "elsewhere" / "master.key"

    finished = _run_portal_command(
        tmp_path, PORTAL_KEYRING_FILE=keyring, PORTAL_MASTER_KEY_FILE=missing
    )

    assert finished.returncode != 0
    assert "PORTAL_MASTER_KEY_FILE" in finished.stderr.splitlines()[-1]
    assert not missing.parent.exists()
    assert keyring.read_bytes() == before


@pytest.mark.parametrize("name_the_master_key", [False, True])
def test_a_named_keyring_that_is_missing_is_refused_not_made(
    tmp_path, name_the_master_key
):
    keyring = tmp_path / "fresh" / "keyring.json"
    keys = {"PORTAL_KEYRING_FILE": keyring}
    if name_the_master_key:
        keys["PORTAL_MASTER_KEY_FILE"] = tmp_path / "elsewhere" / "master.key"

    finished = _run_portal_command(tmp_path, **keys)

    assert finished.returncode != 0
    assert "PORTAL_KEYRING_FILE" in finished.stderr.splitlines()[-1]
    assert not keyring.parent.exists()
    assert not (tmp_path / "elsewhere").exists()
    # Nor a master key at development's own path, for a keyring never made.
    assert not (tmp_path / "data" / "keys" / "master.key").exists()


def test_development_makes_no_master_key_for_a_keyring_it_has(isolated_keys):
    master_key = isolated_keys.PORTAL_MASTER_KEY_FILE
    master_key.unlink()
    crypto.reset_keyring_cache()

    with pytest.raises(crypto.KeyringUnavailable, match="PORTAL_MASTER_KEY_FILE"):
        crypto.load_keyring(create_if_missing=True)

    assert not master_key.exists()


def test_create_master_key_makes_no_key_that_cannot_open_the_keyring(
    isolated_keys, tmp_path
):
    from django.core.management import CommandError, call_command

    stray = tmp_path / "elsewhere" / "master.key"
    isolated_keys.PORTAL_MASTER_KEY_FILE = stray

    with pytest.raises(CommandError, match="rewrap_keyring"):
        call_command("create_master_key")

    assert not stray.exists()


def test_create_master_key_makes_no_second_keyring_beside_sealed_records(
    isolated_keys, tmp_path
):
    from django.core.management import CommandError, call_command

    _patient()
    mistyped = tmp_path / "keys" / "keyrnig.json"
    isolated_keys.PORTAL_KEYRING_FILE = mistyped
    crypto.reset_keyring_cache()

    for flags in ([], ["--new-installation"]):
        with pytest.raises(CommandError, match="PORTAL_KEYRING_FILE"):
            call_command("create_master_key", *flags)

    assert not mistyped.exists()


def test_a_new_development_checkout_keeps_its_keys_folder_private(tmp_path):
    data_dir = tmp_path / "var"
    environment = {
        **os.environ,
        "PORTAL_MODE": "development",
        "PORTAL_DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "ehr_portal.settings",
    }
    for name in ("DATABASE_URL", "AUDIT_DATABASE_URL"):
        environment.pop(name, None)

    subprocess.run(
        [sys.executable, "manage.py", "create_master_key"],
        cwd=Path(__file__).resolve().parent.parent, env=environment, check=True,
        capture_output=True, timeout=120,
    )  # fmt: skip

    keys = data_dir / "keys"
    assert (keys / "audit_chain_key").exists() and (keys / "keyring.json").exists()
    assert keys.stat().st_mode & 0o777 == 0o700
    assert data_dir.stat().st_mode & 0o777 == 0o700

    # Run again, as a set-up script may: both are kept as they are.
    before = {
        name: (keys / name).read_bytes() for name in ("master.key", "keyring.json")
    }
    again = subprocess.run(
        [sys.executable, "manage.py", "create_master_key"],
        cwd=Path(__file__).resolve().parent.parent, env=environment,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0
    assert "Master key file already there, kept" in again.stdout
    assert "Keyring already there, left as it is" in again.stdout
    assert before == {name: (keys / name).read_bytes() for name in before}


def test_development_makes_no_new_keyring_beside_an_existing_master_key(tmp_path):
    # The keyring went missing, not the installation: new data keys would
    # seal new records under keys the old records do not open.
    first = _run_portal_command(tmp_path)
    keys = tmp_path / "data" / "keys"
    assert first.returncode == 0 and (keys / "keyring.json").exists()
    (keys / "keyring.json").unlink()

    again = _run_portal_command(tmp_path)

    assert again.returncode != 0
    assert (
        f"no keyring at {keys / 'keyring.json'}, but its master key is at "
        f"{keys / 'master.key'}"
    ) in again.stderr
    assert not (keys / "keyring.json").exists()


def test_a_keyring_that_is_not_json_is_named(isolated_keys):
    keyring = isolated_keys.PORTAL_KEYRING_FILE
    keyring.write_text("{not json")

    with pytest.raises(crypto.KeyringUnavailable) as refused:
        crypto.load_keyring(create_if_missing=False)

    assert str(refused.value) == (
        f"the keyring at {keyring} cannot be read (JSONDecodeError)"
    )


def test_an_older_keyring_put_back_leaves_the_loaded_keys_in_force(
    isolated_keys, caplog
):
    # A backup from before a rotation lacks the data key sealing new records:
    # taken up, it would fail every one of them as if tampered with.
    keyring = isolated_keys.PORTAL_KEYRING_FILE
    older = keyring.read_bytes()
    crypto.start_rotation(index_key=False)
    crypto.reset_keyring_cache()
    patient = _patient(family="Newkeyfamily")
    keyring.write_bytes(older)
    os.utime(keyring, ns=(1, 1))

    readings = [Patient.objects.get(pk=patient.pk).family_name for _ in range(3)]

    assert readings == ["Newkeyfamily"] * 3
    assert "The replaced keyring lacks data key version(s) 2" in caplog.text


def test_a_master_key_path_that_is_a_folder_is_named_as_such(tmp_path):
    folder = tmp_path / "master.key"
    folder.mkdir(mode=0o755)

    with pytest.raises(keyproviders.MasterKeyUnavailable) as refused:
        keyproviders.FileMasterKey(folder, require_private=True)

    assert str(refused.value) == (
        f"PORTAL_MASTER_KEY_FILE names {folder}, which is not a file"
    )


def test_a_master_key_file_that_cannot_be_read_is_named(tmp_path):
    damaged = tmp_path / "master.key"
    damaged.write_text("not base64 at all!")
    damaged.chmod(0o600)

    with pytest.raises(keyproviders.MasterKeyUnavailable) as refused:
        keyproviders.FileMasterKey(damaged, require_private=True)

    assert str(refused.value) == f"the master key file {damaged} cannot be read"


def test_a_pkcs11_library_that_does_not_load_is_named(hsm_keys, tmp_path):
    missing = tmp_path / "no-such-pkcs11.so"
    hsm_keys.PORTAL_PKCS11_LIBRARY = str(missing)

    with pytest.raises(crypto.KeyringUnavailable) as refused:
        crypto.load_keyring(create_if_missing=False)

    assert (
        f"the PKCS#11 library {missing} cannot be loaded: check PORTAL_PKCS11_LIBRARY"
        in str(refused.value)
    )
