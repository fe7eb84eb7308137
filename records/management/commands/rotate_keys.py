"""python manage.py rotate_keys — new data key, every sealed row re-encrypted."""

import getpass

from django.core.management.base import BaseCommand, CommandError

from audit.models import AuditAction, AuditOutcome
from audit.services import record_event
from records import crypto
from records.key_rotation import (
    BATCH_SIZE,
    RotationStopped,
    key_version_counts,
    rotate_keys,
)


class _BatchLimit(Exception):
    pass


def _version_label(version, ring) -> str:
    # A key version, or a word for values whose version cannot be read. A
    # version the keyring has no key for is named as such: those values do
    # not open (damaged, or written with another keyring).
    if not isinstance(version, int):
        return version
    return f"v{version}" if version in ring.data_keys else f"v{version} (no such key)"


def _by_version(item) -> tuple:
    version = item[0]
    return (0, version, "") if isinstance(version, int) else (1, 0, version)


def _values(count: int) -> str:
    return "1 sealed value" if count == 1 else f"{count} sealed values"


class Command(BaseCommand):
    help = (
        "Make a new data key current (and, with --index-key, a new blind-index "
        "key) and re-encrypt every sealed value in batches while the portal "
        "serves. Resumable: run it again after an interruption to finish."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--index-key",
            action="store_true",
            help="also rotate the blind-index key and rebuild indexes",
        )
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
        parser.add_argument(
            "--max-batches",
            type=int,
            default=None,
            help="stop after this many batches (resume later)",
        )
        parser.add_argument(
            "--status",
            action="store_true",
            help="print sealed values per key version and exit",
        )

    def handle(self, *args, index_key, batch_size, max_batches, status, **options):
        # Key changes are security events (45 CFR 164.312(b)); their events
        # name the operator's account on this machine, never key material.
        self.actor = f"system:rotate_keys ({getpass.getuser()})"
        if status:
            return self._print_status()
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if max_batches is not None and max_batches < 1:
            # Checked before the rotation starts: it would make a key first.
            raise CommandError("--max-batches must be at least 1")
        unfinished = crypto.keyring().rotation
        if index_key and unfinished and unfinished.get("index") is None:
            # Resuming would finish the data key alone and say nothing of the
            # index key asked for.
            raise CommandError(
                f"a rotation of the data key alone (version {unfinished['data']}) "
                "is unfinished: run rotate_keys without --index-key to finish it, "
                "then rotate_keys --index-key"
            )

        def on_batch(model, progress):
            self.stdout.write(
                f"batch {progress.batches}: {model._meta.label} "
                f"{progress.rows_checked} rows checked"
            )
            self.stdout.flush()
            if max_batches is not None and progress.batches >= max_batches:
                raise _BatchLimit

        try:
            progress = rotate_keys(
                index_key=index_key,
                batch_size=batch_size,
                on_batch=on_batch,
                actor=self.actor,
            )
        except _BatchLimit:
            self.stdout.write("Stopped at the batch limit; run rotate_keys to resume.")
            return
        except (
            RotationStopped,
            crypto.KeyringUnavailable,
            crypto.KeyringSuperseded,
        ) as error:
            raise CommandError(str(error)) from error

        version = crypto.keyring().current_version
        damaged = sorted(progress.damaged, key=str)
        record_event(
            actor=self.actor,
            action=AuditAction.KEYS_ROTATED,
            outcome=AuditOutcome.SUCCESS,
            record_type="Keyring",
            reason=f"data key v{version}; {progress.rows_resealed} re-encrypted"
            + ("; index key rotated" if progress.index_key_rotated else "")
            + (f"; {_values(len(damaged))} left under its old key" if damaged else ""),
        )
        self.stdout.write(
            f"Rotation finished at data key version {version}: "
            f"{progress.rows_resealed} row(s) re-encrypted, "
            f"{progress.rows_reindexed} re-indexed, {progress.rows_checked} checked."
        )
        if damaged:
            # The operator's scripts must see it: the exit status says so.
            listed = "\n  ".join(str(value) for value in damaged)
            one = len(damaged) == 1
            raise CommandError(
                f"{_values(len(damaged))} {'does' if one else 'do'} not open "
                "(tampered or damaged) and stay as they were, under their old "
                "key; each is in the audit trail as INTEGRITY_FAILURE. Restore "
                f"{'it' if one else 'them'} from a backup:\n  {listed}"
            )

    def _print_status(self):
        ring = crypto.keyring()
        self.stdout.write(
            f"current data key version {ring.current_version}, index key version "
            f"{ring.current_index_version}"
            + (" (rotation under way)" if ring.rotation else "")
        )
        for label, counts in key_version_counts().items():
            versions = ", ".join(
                f"{_version_label(version, ring)}: {count}"
                for version, count in sorted(counts.items(), key=_by_version)
            )
            self.stdout.write(f"  {label:<32} {versions or 'no values'}")
