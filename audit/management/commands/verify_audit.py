"""python manage.py verify_audit [--from N] [--to M] — prove the audit chain intact."""

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections
from django.db.models import Max

from audit.checkpoints import CheckpointInvalid, read_checkpoints
from audit.checkpoints import checkpoint_dir as checkpoint_folder
from audit.models import AuditEvent
from audit.routers import AUDIT_DATABASE
from audit.verification import (
    NEWEST_POSSIBLE,
    event_without_a_whole_number,
    verify_chain,
)
from ehr_portal.logging import error_kind


class Command(BaseCommand):
    help = (
        "Recompute the audit trail's hash chain and compare it with the signed "
        "checkpoints. Exits 0 when intact, non-zero naming the first bad event."
    )

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="first", type=int, help="first sequence")
        parser.add_argument("--to", dest="last", type=int, help="last sequence")
        parser.add_argument(
            "--checkpoint-dir",
            type=Path,
            help="checkpoint directory (default: PORTAL_AUDIT_CHECKPOINT_DIR)",
        )
        parser.add_argument(
            "--require-checkpoints",
            action="store_true",
            help="fail, rather than warn, when there is no checkpoint at all",
        )

    def handle(
        self, *args, first, last, checkpoint_dir, require_checkpoints, **options
    ):
        _require_audit_database()
        self.require_checkpoints = require_checkpoints
        try:
            self._verify(first, last, checkpoint_dir)
        except DatabaseError as error:
            raise CommandError(
                f"the audit database cannot be read ({error_kind(error)}): check "
                "AUDIT_DATABASE_URL"
            ) from None

    def _verify(self, first, last, checkpoint_dir) -> None:
        if first is not None and last is not None and first > last:
            raise CommandError("--from must not be greater than --to")
        if (first is not None and first < 1) or (last is not None and last < 1):
            raise CommandError("event numbers start at 1")
        if max(first or 1, last or 1) > NEWEST_POSSIBLE:
            raise CommandError(f"event numbers go up to {NEWEST_POSSIBLE}")
        misnumbered = event_without_a_whole_number(connections[AUDIT_DATABASE])
        if misnumbered is not None:
            # Before anything counts the trail: its newest number means nothing.
            report = verify_chain(first=first, last=last)
            raise CommandError(
                f"Audit chain broken at event {report.bad_sequence}: {report.problem}"
            )
        newest = AuditEvent.objects.aggregate(newest=Max("sequence"))["newest"] or 0
        if first is not None and first > newest:
            # Not a broken chain: there is nothing there to check.
            raise CommandError(
                f"Nothing to verify from event {first}: the trail ends at event "
                f"{newest}"
            )
        if checkpoint_dir is not None and not checkpoint_dir.is_dir():
            # Named on purpose: a mistyped folder must not pass as "none yet".
            raise CommandError(f"no checkpoint folder at {checkpoint_dir}")
        try:
            checkpoints = read_checkpoints(checkpoint_dir)
        except CheckpointInvalid as error:
            raise CommandError(f"Audit checkpoint invalid: {error}") from None
        if not checkpoints:
            self._no_checkpoints(checkpoint_dir or checkpoint_folder(), newest)

        started = time.perf_counter()
        report = verify_chain(first=first, last=last, checkpoints=checkpoints)
        elapsed = time.perf_counter() - started

        if not report.intact:
            raise CommandError(
                f"Audit chain broken at event {report.bad_sequence}: {report.problem}"
            )
        rate = report.checked / elapsed if elapsed else 0
        span = f" ({report.first}..{report.last})" if report.checked else ""
        # Only the checkpoints inside the events checked can match: those of
        # a range's outside are counted apart, not as failures to match.
        in_range = sum(
            1
            for checkpoint in checkpoints
            if report.checked and report.first <= checkpoint.sequence <= report.last
        )
        outside = len(checkpoints) - in_range
        self.stdout.write(
            f"Audit chain intact: {report.checked} event(s){span}, "
            f"{report.checkpoints_matched} of {in_range} checkpoint(s) matched"
            + (f" ({outside} outside the range checked)" if outside else "")
            + f", {rate:,.0f} events/s."
        )
        covered = checkpoints[-1].sequence if checkpoints else 0
        if checkpoints and newest > covered and (last is None or last > covered):
            # Intact says nothing of these: cut from the end, they would leave
            # a shorter chain that is intact too.
            self.stderr.write(
                f"Note: {newest - covered} event(s) after the newest checkpoint "
                f"(event {covered}) are covered by none yet; the next checkpoint "
                "is due within PORTAL_AUDIT_CHECKPOINT_SECONDS."
            )

    def _no_checkpoints(self, folder: Path, newest: int) -> None:
        """Say what a trail without checkpoints cannot prove, or refuse it."""
        if self.require_checkpoints:
            raise CommandError(
                f"no audit checkpoint in {folder}: without one, events cut from "
                "the end of the trail (or the whole trail) cannot be detected"
            )
        if not folder.is_dir():
            self.stderr.write(
                f"Warning: no audit checkpoints found: the checkpoint folder "
                f"{folder} does not exist (PORTAL_AUDIT_CHECKPOINT_DIR), so events "
                "cut from the end of the trail cannot be detected. If checkpoints "
                "go to a share, is it mounted? The folder is made with the first "
                "checkpoint."
            )
        elif not newest:
            self.stderr.write(
                "Warning: the trail holds no events and no checkpoint exists. "
                "On a portal that has been in use, both have been removed."
            )
        else:
            self.stderr.write(
                "Warning: no audit checkpoints found, so events cut from the end "
                "of the trail cannot be detected. Checkpoints are written by "
                "Celery beat (or, with tasks in-process, by the portal itself) "
                "every PORTAL_AUDIT_CHECKPOINT_SECONDS; `manage.py "
                "audit_checkpoint` writes one now."
            )


def _require_audit_database() -> None:
    """Refuse a SQLite audit database that is not there, rather than make one.

    SQLite creates a missing file on connecting: an empty trail would then
    look like nothing to verify, far from the mistyped setting.
    """
    connection = connections[AUDIT_DATABASE]
    if connection.vendor != "sqlite":
        return
    name = str(connection.settings_dict["NAME"])
    if name != ":memory:" and not name.startswith("file:") and not Path(name).exists():
        raise CommandError(
            f"no audit database at {name}: check AUDIT_DATABASE_URL (or "
            "PORTAL_DATA_DIR)"
        )
