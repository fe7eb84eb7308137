"""Check the audit chain: every event in sequence, each hash right, checkpoints met.

The loop reads raw rows through a server-side cursor and recomputes each HMAC
from the stored values; it never builds model instances, which would cost
more than the hashing itself on a trail of millions of events.
"""

import hmac
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connections

from audit import chain
from audit.routers import AUDIT_DATABASE

logger = logging.getLogger(__name__)

FETCH_SIZE = 20_000

COLUMNS = (
    "actor_id, actor_username, actor_role, action, outcome, patient_ref, "
    "record_type, fields, {ip}, device_fingerprint, purpose, reason, request_id, "
    "chain_hash"
)
# Each engine is asked for the time in the writer's canonical spelling.
TIME_COLUMN = {
    "postgresql": "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    "sqlite": "CAST(occurred_at AS TEXT)",
}
IP_COLUMN = {"postgresql": "host(ip_address)", "sqlite": "ip_address"}


@dataclass(frozen=True)
class Checkpoint:
    sequence: int
    chain_hash: str
    name: str


@dataclass
class ChainReport:
    checked: int = 0
    first: int | None = None
    last: int | None = None
    bad_sequence: int | None = None
    problem: str = ""
    checkpoints_matched: int = 0

    @property
    def intact(self) -> bool:
        return not self.problem

    def fail(self, sequence: int, problem: str) -> "ChainReport":
        self.bad_sequence = sequence
        self.problem = problem
        logger.error("Audit chain broken at event %s: %s", sequence, problem)
        return self


def verify_chain(
    *,
    first: int | None = None,
    last: int | None = None,
    checkpoints: Iterable[Checkpoint] = (),
) -> ChainReport:
    """Verify events ``first``..``last`` (inclusive; default: the whole trail).

    Stops at the first bad event. A checkpoint beyond the newest event means
    the newest events were cut off, which the chain alone cannot show.
    """
    first = max(first or 1, 1)
    report = ChainReport(first=first)
    expected_at = {c.sequence: c for c in checkpoints if c.sequence >= first}
    if last is not None:
        expected_at = {s: c for s, c in expected_at.items() if s <= last}

    connection = connections[AUDIT_DATABASE]
    previous_hash = _hash_before(connection, first, report)
    if previous_hash is None:
        return report

    _check_rows(connection, first, last, previous_hash, expected_at, report)
    if report.intact:
        _check_nothing_cut_off(expected_at, report)
    return report


def _hash_before(connection, first: int, report: ChainReport) -> str | None:
    if first == 1:
        return chain.GENESIS_HASH
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT chain_hash FROM audit_auditevent WHERE sequence = %s", [first - 1]
        )
        row = cursor.fetchone()
    if row is None:
        report.fail(first - 1, f"event {first - 1} is missing")
        return None
    return row[0]


def _rows(connection, first: int, last: int | None):
    vendor = connection.vendor
    columns = COLUMNS.format(ip=IP_COLUMN[vendor])
    query = (
        f"SELECT sequence, {TIME_COLUMN[vendor]}, {columns} "  # noqa: S608 (constants)
        "FROM audit_auditevent WHERE sequence >= %s"
    )
    params = [first]
    if last is not None:
        query += " AND sequence <= %s"
        params.append(last)
    query += " ORDER BY sequence"

    with connection.chunked_cursor() as cursor:
        cursor.execute(query, params)
        while rows := cursor.fetchmany(FETCH_SIZE):
            yield rows


def _check_rows(connection, first, last, previous_hash, expected_at, report):
    key = chain.chain_key()
    digest = hmac.digest
    loads = json.loads
    canonical_form = chain.canonical_form
    expected = first

    for rows in _rows(connection, first, last):
        for row in rows:
            sequence, moment, *values, stored_hash = row
            if sequence != expected:
                return _sequence_problem(report, expected, sequence)
            if len(moment) == 19:
                # SQLite keeps no fraction when the microseconds were zero.
                moment += ".000000"
            values[7] = loads(values[7])
            canonical = canonical_form(sequence, moment, *values)
            if digest(key, previous_hash.encode() + canonical, "sha256").hex() != (
                stored_hash
            ):
                return report.fail(
                    sequence,
                    f"event {sequence} does not match its hash "
                    "(edited, forged or moved)",
                )
            checkpoint = expected_at.get(sequence)
            if checkpoint is not None:
                if checkpoint.chain_hash != stored_hash:
                    return report.fail(
                        sequence,
                        f"event {sequence} differs from checkpoint {checkpoint.name}",
                    )
                report.checkpoints_matched += 1
            previous_hash = stored_hash
            expected += 1
        report.checked = expected - first
        report.last = expected - 1
    return report


def _sequence_problem(report: ChainReport, expected: int, found: int) -> ChainReport:
    if found > expected:
        return report.fail(
            expected,
            f"event {expected} is missing (next is {found})"
            if found == expected + 1
            else f"events {expected} to {found - 1} are missing",
        )
    return report.fail(found, f"event {found} is out of order or repeated")


def _check_nothing_cut_off(expected_at: dict, report: ChainReport) -> None:
    newest = report.last or 0
    beyond = sorted(s for s in expected_at if s > newest)
    if beyond:
        checkpoint = expected_at[beyond[-1]]
        report.fail(
            newest + 1,
            f"events {newest + 1} to {checkpoint.sequence} are missing: "
            f"checkpoint {checkpoint.name} records event {checkpoint.sequence}",
        )
