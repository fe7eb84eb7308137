"""python manage.py verify_audit [--from N] [--to M] — prove the audit chain intact."""

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections
from django.db.models import Max

from audit.checkpoints import CheckpointInvalid, read_checkpoints
from audit.models import AuditEvent
from audit.routers import AUDIT_DATABASE
from audit.verification import verify_chain
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

    def handle(self, *args, first, last, checkpoint_dir, **options):
        _require_audit_database()
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
        if not checkpoints and newest:
            self.stderr.write(
                "Warning: no audit checkpoints found, so events cut from the end "
                "of the trail cannot be detected. Checkpoints are written by "
                "Celery beat (or, with tasks in-process, by the portal itself) "
                "every PORTAL_AUDIT_CHECKPOINT_SECONDS; `manage.py "
                "audit_checkpoint` writes one now."
            )

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
