"""Signed checkpoints of the chain head, kept outside both databases.

The chain proves that nothing inside it changed, but not that its newest
events are all there: cutting off the tail leaves a shorter, valid chain.
Each checkpoint records the head at one moment, signed with a key of its own,
in a file of its own that is created once and never rewritten; an operator
ships the directory to write-once storage (see README).
"""

import datetime
import hmac
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.db import connections

from audit.chain import chain_head
from audit.routers import AUDIT_DATABASE
from audit.verification import Checkpoint

logger = logging.getLogger(__name__)

FORMAT = 1
PREFIX = "checkpoint-"


class CheckpointInvalid(Exception):
    """A checkpoint file cannot be read or its signature does not match."""


def _signature(sequence: int, chain_hash: str, written_at: str) -> str:
    message = f"{FORMAT}|{sequence}|{chain_hash}|{written_at}".encode()
    return hmac.digest(settings.AUDIT_CHECKPOINT_KEY.encode(), message, "sha256").hex()


def checkpoint_dir() -> Path:
    return Path(settings.AUDIT_CHECKPOINT_DIR)


def write_checkpoint(
    directory: Path | None = None, *, at: int | None = None
) -> Path | None:
    """Record the chain head (or event ``at``); None when there is nothing new.

    A checkpoint at a chosen event marks an archive boundary: once the events
    up to it are archived, verify_audit --from at+1 starts from its hash.
    """
    directory = directory or checkpoint_dir()
    with connections[AUDIT_DATABASE].cursor() as cursor:
        if at is None:
            sequence, chain_hash = chain_head(cursor)
        else:
            sequence, chain_hash = _event_hash(cursor, at)
    if sequence == 0:
        return None

    target = directory / f"{PREFIX}{sequence:015d}.json"
    if target.exists():
        return None

    written_at = datetime.datetime.now(datetime.UTC).isoformat()
    document = {
        "format": FORMAT,
        "sequence": sequence,
        "chain_hash": chain_hash,
        "written_at": written_at,
        "signature": _signature(sequence, chain_hash, written_at),
    }
    _create_once(directory, target, json.dumps(document, indent=1) + "\n")
    logger.info("Audit checkpoint written at event %s", sequence)
    return target


def _event_hash(cursor, sequence: int) -> tuple[int, str]:
    cursor.execute(
        "SELECT chain_hash FROM audit_auditevent WHERE sequence = %s", [sequence]
    )
    row = cursor.fetchone()
    if row is None:
        raise LookupError(f"event {sequence} is not in the audit database")
    return sequence, row[0]


def _create_once(directory: Path, target: Path, text: str) -> None:
    """Write a whole file, then link it into place: never partial, never replaced."""
    directory.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".writing-")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o444)
        try:
            os.link(temporary, target)
        except FileExistsError:
            logger.info("Audit checkpoint %s already written", target.name)
    finally:
        os.unlink(temporary)

    folder = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def newest_checkpoint_age(directory: Path | None = None) -> float | None:
    """Seconds since the newest checkpoint file was written; None if there is none."""
    directory = directory or checkpoint_dir()
    if not directory.is_dir():
        return None
    # Names carry the sequence zero-padded: the last in order is the newest.
    newest = max(directory.glob(f"{PREFIX}*.json"), default=None)
    if newest is None:
        return None
    return max(0.0, time.time() - newest.stat().st_mtime)


def read_checkpoints(directory: Path | None = None) -> list[Checkpoint]:
    """Every checkpoint in ``directory``, oldest first; raises on a bad one."""
    directory = directory or checkpoint_dir()
    if not directory.is_dir():
        return []
    return sorted(
        (_read(path) for path in directory.glob(f"{PREFIX}*.json")),
        key=lambda checkpoint: checkpoint.sequence,
    )


def _document(path: Path) -> dict:
    """The checkpoint's JSON object, or CheckpointInvalid saying what is wrong.

    A damaged or hostile file (nested a million deep, a number JSON cannot
    hold, a list) is reported as one, in words of its own, never a traceback.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _unreadable(path, "it is not text") from None
    except OSError as error:
        raise _unreadable(
            path, error.strerror or "the file system refused it"
        ) from None
    try:
        document = json.loads(text)
    except RecursionError:
        raise _unreadable(path, "it is nested too deep") from None
    except ValueError:
        raise _unreadable(path, "it is not JSON") from None
    if not isinstance(document, dict):
        raise _unreadable(path, "it is not a JSON object")
    return document


def _unreadable(path: Path, why: str) -> CheckpointInvalid:
    return CheckpointInvalid(f"{path.name} cannot be read ({why})")


def _read(path: Path) -> Checkpoint:
    if not path.is_file():
        # A pipe or device would block the reader or never end.
        raise CheckpointInvalid(f"{path.name} is not a regular file")
    document = _document(path)
    missing = [
        field
        for field in ("sequence", "chain_hash", "written_at")
        if field not in document
    ]
    if missing:
        raise CheckpointInvalid(f"{path.name} has no {', '.join(missing)}")
    sequence = document["sequence"]
    if not isinstance(sequence, int) or isinstance(sequence, bool):
        raise _unreadable(path, "its event number is not a whole number")
    chain_hash = str(document["chain_hash"])
    signature = _signature(sequence, chain_hash, str(document["written_at"]))

    # As bytes: compare_digest refuses text that is not ASCII, and a damaged
    # file must be reported as one, not crash the verifier.
    given = str(document.get("signature", "")).encode()
    if not hmac.compare_digest(signature.encode(), given):
        raise CheckpointInvalid(f"{path.name} has a signature that does not match")
    if path.name != f"{PREFIX}{sequence:015d}.json":
        raise CheckpointInvalid(f"{path.name} records event {sequence}")
    return Checkpoint(sequence=sequence, chain_hash=chain_hash, name=path.name)
