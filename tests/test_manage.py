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
