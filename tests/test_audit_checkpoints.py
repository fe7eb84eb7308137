"""Checkpoints: written by a real Celery worker over Redis, once each, and verified."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.core.management import call_command

from audit.checkpoints import read_checkpoints, write_checkpoint
from audit.models import AuditAction, AuditOutcome
from audit.services import record_event
from ehr_portal.celery import app
from tests.conftest import portal_process_env

REDIS_URL = os.environ.get("EHR_TEST_REDIS_URL", "redis://127.0.0.1:6379/6")
TASK = "audit.tasks.write_audit_checkpoint"


def write_events(count: int) -> None:
    for _ in range(count):
        record_event(
            actor="system:test", action=AuditAction.VIEWED, outcome=AuditOutcome.SUCCESS
        )


@pytest.mark.django_db(databases="__all__")
def test_a_checkpoint_is_a_new_read_only_file_each_time(settings, tmp_path):
    settings.AUDIT_CHECKPOINT_DIR = tmp_path
    write_events(2)
    first = write_checkpoint()

    assert write_checkpoint() is None, "no new events, no new checkpoint"
    write_events(1)
    second = write_checkpoint()

    assert [c.sequence for c in read_checkpoints()] == [2, 3]
    assert first != second
    assert first.stat().st_mode & 0o222 == 0


def test_celery_beat_schedules_the_checkpoint_task():
    app.loader.import_default_modules()

    schedule = settings.CELERY_BEAT_SCHEDULE["audit-checkpoint"]
    assert schedule["task"] == TASK
    assert TASK in app.tasks


@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")
def test_a_celery_worker_writes_the_checkpoint_that_verify_audit_checks(
    tmp_path, capsys
):
    checkpoints = tmp_path / "checkpoints"
    # One queue name for every run, so Redis keeps no binding per run; a
    # message left by an interrupted run only writes the same checkpoint.
    queue = "audit-checkpoint-test"
    write_events(3)
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "ehr_portal", "worker",
            "--pool=solo", "--queues", queue, "--without-gossip",
            "--without-mingle", "--without-heartbeat", "--loglevel=WARNING",
        ],
        env=portal_process_env(
            CELERY_BROKER_URL=REDIS_URL,
            PORTAL_AUDIT_CHECKPOINT_DIR=str(checkpoints),
        ),
    )  # fmt: skip
    try:
        with app.connection_for_write(REDIS_URL) as connection:
            app.send_task(TASK, connection=connection, queue=queue)
        written = _wait_for(lambda: list(checkpoints.glob("checkpoint-*.json")))
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    assert [path.name for path in written] == ["checkpoint-000000000000003.json"]
    call_command("verify_audit", "--checkpoint-dir", str(checkpoints))
    assert "1 of 1 checkpoint(s) matched" in capsys.readouterr().out


def _wait_for(found, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := found():
            return result
        time.sleep(0.2)
    raise AssertionError("the worker wrote no checkpoint in time")


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_with_tasks_in_process_the_portal_writes_checkpoints_itself(
    settings, tmp_path, monkeypatch
):
    from audit import services

    settings.AUDIT_CHECKPOINT_DIR = tmp_path
    settings.AUDIT_CHECKPOINT_SECONDS = 0
    monkeypatch.setattr(services, "_next_checkpoint", None)

    write_events(3)

    assert settings.CELERY_TASK_ALWAYS_EAGER
    assert [c.sequence for c in read_checkpoints()][-1] == 3


class _Clock:
    """time.monotonic for the audit writer, moved on by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def beat_expected(settings, tmp_path, monkeypatch, caplog):
    """A broker is configured, so Celery beat should write the checkpoints."""
    from audit import services

    settings.AUDIT_CHECKPOINT_DIR = tmp_path
    settings.AUDIT_CHECKPOINT_SECONDS = 300
    settings.CELERY_TASK_ALWAYS_EAGER = False
    clock = _Clock()
    monkeypatch.setattr(services.time, "monotonic", clock)
    for name in ("_next_checkpoint", "_writing_since", "_last_write"):
        monkeypatch.setattr(services, name, None)
    caplog.set_level("ERROR", logger="audit.services")
    return clock


def _write_every(clock, seconds: float, until: float) -> None:
    start = clock.now
    while clock.now - start <= until:
        write_events(1)
        clock.now += seconds


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_when_beat_writes_no_checkpoint_the_portal_writes_one_and_says_so(
    beat_expected, caplog
):
    _write_every(beat_expected, 60, until=599)
    before_two_intervals = read_checkpoints()
    _write_every(beat_expected, 60, until=120)

    assert before_two_intervals == []
    assert len(read_checkpoints()) == 1
    assert "Celery beat is not running or cannot reach the broker" in caplog.text


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_while_beat_keeps_up_the_portal_writes_none(beat_expected, caplog):
    for _ in range(4):
        _write_every(beat_expected, 60, until=299)
        write_checkpoint()  # what beat does every interval

    written = read_checkpoints()

    assert len(written) == 4
    assert "Celery beat" not in caplog.text


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_after_a_quiet_spell_beat_is_given_its_interval_again(beat_expected, caplog):
    _write_every(beat_expected, 60, until=120)
    beat_expected.now += 3600  # nothing written for an hour: nothing for beat
    _write_every(beat_expected, 60, until=400)

    assert read_checkpoints() == []
    assert "Celery beat" not in caplog.text


@pytest.mark.django_db(databases="__all__")
def test_verify_audit_warns_that_without_checkpoints_a_cut_tail_goes_unseen(
    settings, tmp_path, capsys
):
    # Not there at all: an unmounted share looks like this.
    settings.AUDIT_CHECKPOINT_DIR = tmp_path / "unmounted-share"
    write_events(2)

    call_command("verify_audit")

    captured = capsys.readouterr()
    assert "intact" in captured.out
    assert "no audit checkpoints found" in captured.err
    warning = " ".join(captured.err.split())
    assert f"the checkpoint folder {tmp_path / 'unmounted-share'} does not exist" in (
        warning
    )
    assert "is it mounted" in warning
    # One warning, not two saying the same thing.
    assert warning.count("cannot be detected") == 1


@pytest.mark.django_db(databases="__all__")
@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            ["--from", "99"],
            "Nothing to verify from event 99: the trail ends at event 2",
        ),
        (["--from", "-5"], "event numbers start at 1"),
        (["--to", "0"], "event numbers start at 1"),
    ],
)
def test_verify_audit_tells_a_wrong_range_from_a_broken_chain(arguments, message):
    from django.core.management import CommandError

    write_events(2)

    with pytest.raises(CommandError) as refused:
        call_command("verify_audit", *arguments)

    assert str(refused.value) == message
    assert "broken" not in str(refused.value)


@pytest.mark.django_db(databases="__all__")
def test_verify_audit_says_how_many_events_no_checkpoint_covers_yet(
    settings, tmp_path, capsys
):
    settings.AUDIT_CHECKPOINT_DIR = tmp_path
    write_events(3)
    write_checkpoint()
    write_events(4)

    call_command("verify_audit")

    captured = capsys.readouterr()
    assert "intact: 7 event(s)" in captured.out
    assert (
        "4 event(s) after the newest checkpoint (event 3) are covered by none yet"
        in captured.err
    )


def _verify_in_a_process(tmp_path, audit_database: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "verify_audit"],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=120,
        env=portal_process_env(
            AUDIT_DATABASE_URL=audit_database, PORTAL_DATA_DIR=str(tmp_path / "data")
        ),
    )  # fmt: skip


def test_verify_audit_on_a_missing_sqlite_file_says_so_and_makes_none(tmp_path):
    missing = tmp_path / "nowhere" / "audit.sqlite3"

    finished = _verify_in_a_process(tmp_path, f"sqlite:///{missing}")

    assert finished.returncode != 0
    assert finished.stderr.strip().splitlines()[-1] == (
        f"CommandError: no audit database at {missing}: check AUDIT_DATABASE_URL "
        "(or PORTAL_DATA_DIR)"
    )
    assert "Traceback" not in finished.stderr
    assert not missing.exists()


def test_verify_audit_on_a_file_that_is_no_database_says_so(tmp_path):
    garbage = tmp_path / "audit.sqlite3"
    garbage.write_bytes(b"not a database at all" * 100)

    finished = _verify_in_a_process(tmp_path, f"sqlite:///{garbage}")

    assert finished.returncode != 0
    assert "Traceback" not in finished.stderr
    assert finished.stderr.strip().splitlines()[-1] == (
        "CommandError: the audit database cannot be read (DatabaseError): check "
        "AUDIT_DATABASE_URL"
    )


@pytest.mark.django_db(databases="__all__")
@pytest.mark.parametrize("named", ["missing", "a-file"])
def test_verify_audit_refuses_a_checkpoint_folder_named_that_is_not_there(
    tmp_path, named
):
    from django.core.management import CommandError

    write_events(2)
    folder = tmp_path / named
    if named == "a-file":
        folder.write_text("not a folder")

    with pytest.raises(CommandError) as refused:
        call_command("verify_audit", "--checkpoint-dir", str(folder))

    assert str(refused.value) == f"no checkpoint folder at {folder}"


@pytest.mark.django_db(databases="__all__")
def test_verify_audit_warns_that_an_empty_trail_proves_nothing(
    settings, tmp_path, capsys
):
    settings.AUDIT_CHECKPOINT_DIR = tmp_path

    call_command("verify_audit")

    captured = capsys.readouterr()
    assert "intact: 0 event(s)" in captured.out
    assert "holds no events and no checkpoint" in " ".join(captured.err.split())


@pytest.mark.django_db(databases="__all__")
@pytest.mark.parametrize("events", [0, 2])
def test_verify_audit_can_require_checkpoints(settings, tmp_path, events):
    from django.core.management import CommandError

    settings.AUDIT_CHECKPOINT_DIR = tmp_path
    write_events(events)

    with pytest.raises(CommandError) as refused:
        call_command("verify_audit", "--require-checkpoints")

    assert "no audit checkpoint" in str(refused.value)
    write_events(1)
    write_checkpoint()
    call_command("verify_audit", "--require-checkpoints")


@pytest.mark.django_db(databases="__all__")
def test_a_checkpoint_whose_signature_is_not_ascii_is_reported(
    settings, tmp_path, capsys
):
    import json

    from django.core.management import CommandError

    settings.AUDIT_CHECKPOINT_DIR = tmp_path
    write_events(2)
    path = write_checkpoint()
    document = json.loads(path.read_text())
    path.chmod(0o600)
    path.write_text(json.dumps({**document, "signature": "é" * 64}))

    with pytest.raises(CommandError) as refused:
        call_command("verify_audit")

    assert "has a signature that does not match" in str(refused.value)


@pytest.mark.django_db(databases="__all__")
@pytest.mark.parametrize(
    "content, says",
    [
        *(
            (
                f'{{"sequence": {number}, "chain_hash": "x", "written_at": "x", '
                '"signature": "x"}',
                "cannot be read (its event number is not a whole number)",
            )
            for number in ("Infinity", "1e400", "1.5")
        ),
        ("[" * 100_000, "cannot be read (it is nested too deep)"),
        ("[1, 2]", "cannot be read (it is not a JSON object)"),
        ('{"sequence": 999', "cannot be read (it is not JSON)"),
        ('{"sequence": 999}', "has no chain_hash, written_at"),
    ],
    ids=["infinity", "overflow", "fraction", "nested", "a-list", "cut-short",
         "fields-missing"],
)  # fmt: skip
def test_a_damaged_checkpoint_file_is_named_not_a_traceback(
    settings, tmp_path, content, says
):
    from django.core.management import CommandError

    settings.AUDIT_CHECKPOINT_DIR = tmp_path
    write_events(2)
    (tmp_path / "checkpoint-000000000000999.json").write_text(content)

    with pytest.raises(CommandError) as refused:
        call_command("verify_audit")

    assert f"checkpoint-000000000000999.json {says}" in str(refused.value)


@pytest.mark.django_db(databases="__all__")
def test_a_pipe_among_the_checkpoints_is_named_not_waited_on(settings, tmp_path):
    from django.core.management import CommandError

    settings.AUDIT_CHECKPOINT_DIR = tmp_path
    write_events(2)
    os.mkfifo(tmp_path / "checkpoint-000000000000002.json")

    def waited_on(_signal, _frame):
        raise AssertionError("verify_audit waited on the pipe")

    # Opening a pipe blocks until a writer comes: without the check, the
    # alarm ends the test instead of CI's time limit.
    previous = signal.signal(signal.SIGALRM, waited_on)
    signal.alarm(60)
    try:
        with pytest.raises(CommandError) as refused:
            call_command("verify_audit")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

    assert "checkpoint-000000000000002.json is not a regular file" in str(refused.value)
