"""The hash chain: numbered by the database, sealed by a key, proven by verify_audit."""

import hashlib
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit import chain
from audit.checkpoints import write_checkpoint
from audit.models import AuditAction, AuditEvent, AuditOutcome
from audit.services import record_event
from ehr_portal import request_context
from tests.conftest import audit_triggers_lifted, portal_process_env

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture(autouse=True)
def checkpoint_dir(settings, tmp_path):
    settings.AUDIT_CHECKPOINT_DIR = tmp_path / "checkpoints"
    return settings.AUDIT_CHECKPOINT_DIR


def write_events(count: int) -> list[AuditEvent]:
    return [
        record_event(
            actor="system:test",
            action=AuditAction.VIEWED,
            outcome=AuditOutcome.SUCCESS,
            patient_ref=f"patient-{number}",
            fields=["name", "mrn"],
            reason=f"event {number}",
        )
        for number in range(count)
    ]


def verify(*args):
    call_command("verify_audit", *args)


def execute(connection, statement, params=()):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_events_are_numbered_one_after_another_and_sealed():
    events = write_events(3)

    assert [event.sequence for event in events] == [1, 2, 3]
    assert len({event.chain_hash for event in events}) == 3
    stored = AuditEvent.objects.get(sequence=2)
    assert stored.chain_hash == chain.seal(
        events[0].chain_hash, chain.event_canonical_form(stored), chain.chain_key()
    )


def test_an_intact_chain_verifies(capsys):
    write_events(5)

    verify()

    assert "intact: 5 event(s) (1..5)" in capsys.readouterr().out


def test_a_range_of_the_chain_verifies(capsys):
    write_events(6)

    verify("--from", "3", "--to", "4")

    assert "intact: 2 event(s) (3..4)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "address",
    [
        "203.0.113.9",
        "::ffff:198.51.100.7",
        "2001:db8::1",
        "::192.0.2.1",
        "::2",
        "::0.0.1.0",
        "::1",
        "::",
        "::1:0:0",
        "fe80::1%eth0",
    ],
)
def test_awkward_values_verify_on_every_engine(address, capsys):
    context = request_context.RequestContext(
        request_id="r1", ip_address=address, device_fingerprint="f" * 64
    )
    token = request_context.activate(context)
    try:
        record_event(
            actor="system:test",
            action=AuditAction.VIEWED,
            outcome=AuditOutcome.SUCCESS,
            fields=["name", 'tab\there "quoted" \\ élan'],
            reason="line one\nline two\r\\ back\\slash\t\u00e9\u2028",
        )
    finally:
        request_context.deactivate(token)
    write_events(1)

    verify()

    assert "intact: 2 event(s)" in capsys.readouterr().out


def test_a_field_edited_by_a_superuser_is_detected():
    write_events(5)

    with audit_triggers_lifted() as connection:
        execute(
            connection,
            "UPDATE audit_auditevent SET actor_username = 'someone.else' "
            "WHERE sequence = 3",
        )

    with pytest.raises(CommandError, match="event 3 does not match its hash"):
        verify()


def test_an_edit_in_a_long_trail_is_called_an_edit_not_a_wrong_key():
    write_events(8)

    with audit_triggers_lifted() as connection:
        execute(
            connection,
            "UPDATE audit_auditevent SET reason = 'nothing to see' WHERE sequence = 3",
        )

    with pytest.raises(CommandError, match="event 3 does not match its hash") as failed:
        verify()
    assert "chain key" not in str(failed.value)


def test_several_edited_events_after_good_ones_are_called_edits():
    write_events(10)

    with audit_triggers_lifted() as connection:
        execute(
            connection,
            "UPDATE audit_auditevent SET actor_username = 'x' "
            "WHERE sequence BETWEEN 5 AND 9",
        )

    with pytest.raises(CommandError, match="event 5 does not match its hash") as failed:
        verify()
    assert "chain key" not in str(failed.value)


def test_an_event_with_an_edited_or_unreadable_time_is_named_not_a_crash():
    write_events(4)

    with audit_triggers_lifted() as connection:
        # SQLite stores any text in the column; PostgreSQL keeps it a time.
        edit = (
            "occurred_at || ' x'"
            if connection.vendor == "sqlite"
            else "occurred_at + interval '1 second'"
        )
        execute(
            connection,
            f"UPDATE audit_auditevent SET occurred_at = {edit} WHERE sequence = 3",  # noqa: S608
        )

    with pytest.raises(CommandError, match="event 3 does not match its hash"):
        verify()


def test_verifying_with_another_chain_key_says_the_key_is_wrong(settings):
    write_events(6)

    settings.AUDIT_CHAIN_KEY = "another valid key, but not the one that wrote the trail"

    with pytest.raises(CommandError, match="chain key .* is most likely not"):
        verify()


def test_a_deleted_event_is_detected():
    write_events(5)

    with audit_triggers_lifted() as connection:
        execute(connection, "DELETE FROM audit_auditevent WHERE sequence = 3")

    with pytest.raises(CommandError, match="event 3 is missing"):
        verify()


def test_two_swapped_events_are_detected():
    write_events(5)

    with audit_triggers_lifted() as connection:
        for old, new in ((2, -2), (4, 2), (-2, 4)):
            execute(
                connection,
                "UPDATE audit_auditevent SET sequence = %s WHERE sequence = %s",
                [new, old],
            )

    with pytest.raises(CommandError, match="broken at event 2"):
        verify()


def test_a_forged_event_is_detected():
    events = write_events(4)
    forged = AuditEvent(
        sequence=5,
        occurred_at=events[-1].occurred_at,
        actor_username="dr.house",
        action=AuditAction.VIEWED,
        outcome=AuditOutcome.SUCCESS,
    )
    # A forger without the chain key can only guess at the seal.
    forged.chain_hash = hashlib.sha256(
        events[-1].chain_hash.encode() + chain.event_canonical_form(forged)
    ).hexdigest()

    forged.save()

    with pytest.raises(CommandError, match="event 5 does not match its hash"):
        verify()


@pytest.mark.parametrize("sequence", [0, -1])
def test_an_event_numbered_outside_the_chain_is_detected(sequence):
    write_events(3)
    forged = AuditEvent(
        sequence=sequence, chain_hash="0" * 64, occurred_at=timezone.now(),
        actor_username="dr.house", action=AuditAction.BREAK_GLASS_REVIEWED,
        outcome=AuditOutcome.SUCCESS,
    )  # fmt: skip

    # Only with the triggers dropped: the database refuses such a number.
    with audit_triggers_lifted():
        forged.save()

    with pytest.raises(
        CommandError,
        match=f"event {sequence} lies outside the chain, which starts at event 1",
    ):
        verify()


@pytest.mark.parametrize("number", [2.5, "two"])
def test_an_event_numbered_with_no_whole_number_is_named_not_a_crash(number):
    from django.db import DatabaseError, transaction

    write_events(3)
    statement = "UPDATE audit_auditevent SET sequence = %s WHERE sequence = 2"

    with audit_triggers_lifted() as connection:
        if connection.vendor == "postgresql":
            # The column itself holds whole numbers only: "two" is refused,
            # 2.5 is rounded.
            try:
                with transaction.atomic(using="audit"):
                    execute(connection, statement, [number])
            except DatabaseError:
                pass
            stored = AuditEvent.objects.values_list("sequence", flat=True)
            assert all(isinstance(sequence, int) for sequence in stored)
            return
        # SQLite keeps whatever it is given in an integer column.
        execute(connection, statement, [number])

    with pytest.raises(CommandError, match="Audit chain broken at event 2") as broken:
        verify()

    assert "not a whole number" in str(broken.value)


@pytest.mark.parametrize("argument", ["--from", "--to"])
def test_an_event_number_beyond_any_trail_is_refused_as_a_range(argument):
    write_events(2)

    with pytest.raises(
        CommandError, match="event numbers go up to 9223372036854775807"
    ):
        verify(argument, str(2**70))


def test_newest_events_cut_off_are_detected_through_a_checkpoint():
    write_events(5)
    write_checkpoint()

    with audit_triggers_lifted() as connection:
        execute(connection, "DELETE FROM audit_auditevent WHERE sequence >= 4")

    with pytest.raises(CommandError, match="events 4 to 5 are missing: checkpoint"):
        verify()


def test_a_checkpoint_that_disagrees_with_the_chain_is_detected(checkpoint_dir):
    write_events(3)
    checkpoint = write_checkpoint()
    checkpoint.chmod(0o644)
    checkpoint.write_text(
        checkpoint.read_text().replace('"sequence": 3', '"sequence": 2')
    )

    with pytest.raises(CommandError, match="signature that does not match"):
        verify()


def test_a_blank_system_actor_is_refused():
    with pytest.raises(ValueError, match="actor"):
        record_event(actor=" ", action=AuditAction.VIEWED, outcome=AuditOutcome.SUCCESS)

    assert not AuditEvent.objects.exists()


WRITER = """
import django
django.setup()
from audit.models import AuditAction, AuditOutcome
from audit.services import record_event
for number in range({count}):
    record_event(
        actor="system:writer-{writer}",
        action=AuditAction.VIEWED,
        outcome=AuditOutcome.SUCCESS,
        reason=str(number),
    )
"""


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_concurrent_writers_in_several_processes_leave_a_gap_free_chain(capsys):
    writers, count = 4, 40
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER.format(count=count, writer=writer)],
            env=portal_process_env(),
        )
        for writer in range(writers)
    ]
    for process in processes:
        assert process.wait(timeout=120) == 0

    sequences = list(
        AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True)
    )
    assert sequences == list(range(1, writers * count + 1))
    per_writer = set(
        AuditEvent.objects.values_list("actor_username", flat=True).distinct()
    )
    assert len(per_writer) == writers
    verify()
    assert f"intact: {writers * count} event(s)" in capsys.readouterr().out


def test_events_archived_up_to_a_checkpoint_leave_the_rest_verifiable(capsys):
    write_events(6)
    call_command("audit_checkpoint", "--at", "3")

    with audit_triggers_lifted() as connection:
        execute(connection, "DELETE FROM audit_auditevent WHERE sequence <= 3")

    verify("--from", "4")
    assert "intact: 3 event(s) (4..6)" in capsys.readouterr().out
    with pytest.raises(CommandError, match="events 1 to 3 are missing"):
        verify()


def test_checkpoints_outside_a_range_checked_are_not_counted_as_unmatched(capsys):
    write_events(6)
    call_command("audit_checkpoint", "--at", "2")
    call_command("audit_checkpoint", "--at", "5")
    capsys.readouterr()

    verify("--from", "3", "--to", "4")
    in_between = capsys.readouterr().out
    verify("--from", "4")
    from_four = capsys.readouterr().out

    assert "0 of 0 checkpoint(s) matched (2 outside the range checked)" in in_between
    assert "1 of 1 checkpoint(s) matched (1 outside the range checked)" in from_four
