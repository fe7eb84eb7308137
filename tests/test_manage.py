"""manage.py refuses to run a command on settings the portal cannot start with."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


def _manage(*args: str) -> subprocess.CompletedProcess:
    # Production mode (no PORTAL_MODE) with none of its secrets set.
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PORTAL_", "DJANGO_", "DATABASE_", "AUDIT_"))
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    "command", [["shell", "-c", "print('shell ran')"], ["check"], ["migrate"]]
)
def test_a_command_on_unusable_settings_stops_with_one_line_saying_why(command):
    finished = _manage(*command)

    assert finished.returncode != 0
    assert "shell ran" not in finished.stdout
    assert finished.stderr.strip().splitlines() == [
        "manage.py: the portal cannot start: DJANGO_SECRET_KEY (or "
        "DJANGO_SECRET_KEY_FILE) is required in production "
        "(PORTAL_TRACEBACK=1 shows where)"
    ]


def test_help_runs_without_settings_and_says_what_is_missing():
    finished = _manage("help")

    assert finished.returncode == 0
    assert "Available subcommands" in finished.stdout
    assert "DJANGO_SECRET_KEY" in finished.stdout


@pytest.mark.parametrize(
    "extra, expected", [({}, "0"), ({"PORTAL_DB_CONN_MAX_AGE": "60"}, "60")]
)
def test_development_keeps_no_database_connection_open_between_requests(
    tmp_path, extra, expected
):
    # runserver starts a thread per request: kept connections would pile up
    # until PostgreSQL refuses new ones.
    environment = {
        **os.environ, "PORTAL_MODE": "development", "PORTAL_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "ehr_portal.settings",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/ehr_unused",
        "AUDIT_DATABASE_URL": "postgres://postgres@127.0.0.1:5432/ehr_unused_audit",
        **extra,
    }  # fmt: skip
    printed = subprocess.run(
        [
            sys.executable, "-c",
            "from django.conf import settings; "
            "print(settings.DATABASES['default']['CONN_MAX_AGE'], "
            "settings.DATABASES['audit']['CONN_MAX_AGE'])",
        ],
        cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip

    assert printed.stdout.split() == [expected, expected]
