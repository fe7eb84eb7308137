"""Check the audit chain: every event in sequence, each hash right, checkpoints met.

On PostgreSQL the verifier streams the events with COPY and hashes each
output line as it is (the canonical form is COPY's text format); on SQLite it
rebuilds the same bytes from raw rows. Neither builds model instances, which
would cost more than the hashing itself on a trail of millions of events.
"""

import datetime
import hmac
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from django.db import DatabaseError, connections
from psycopg import pq

from audit import chain
from audit.routers import AUDIT_DATABASE

logger = logging.getLogger(__name__)

FETCH_SIZE = 20_000
# Events after a bad one looked at to tell an edit from a wrong chain key.
KEY_CHECK_EVENTS = 3

# The statements are written out whole, with the range as bound parameters
# (SECURITY V1.2.4: no SQL built from strings). Each engine is asked for the
# time and the address in the writer's canonical spelling.
SQLITE_EVENTS = """
    SELECT sequence, CAST(occurred_at AS TEXT), actor_id, actor_username,
           actor_role, action, outcome, patient_ref, record_type, fields,
           ip_address, device_fingerprint, purpose, reason, request_id, chain_hash
    FROM audit_auditevent
    WHERE sequence BETWEEN %s AND %s
    ORDER BY sequence
"""
# COPY takes no parameters, so the range travels in two session settings,
# set by a parameterised query just before.
POSTGRESQL_EVENTS_COPY = """
    COPY (
        SELECT sequence,
               to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
               actor_id, actor_username, actor_role, action, outcome, patient_ref,
               record_type, fields, host(ip_address), device_fingerprint, purpose,
               reason, request_id, chain_hash
        FROM audit_auditevent
        WHERE sequence BETWEEN current_setting('portal.verify_first')::bigint
                           AND current_setting('portal.verify_last')::bigint
        ORDER BY sequence
    ) TO STDOUT
"""
SET_RANGE = """
    SELECT set_config('portal.verify_first', %s, false),
           set_config('portal.verify_last', %s, false)
"""
NEWEST_POSSIBLE = 2**63 - 1


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
    checkpoints = list(checkpoints)
    report = ChainReport(first=first)
    expected_at = {c.sequence: c for c in checkpoints if c.sequence >= first}
    if last is not None:
        expected_at = {s: c for s, c in expected_at.items() if s <= last}

    connection = connections[AUDIT_DATABASE]
    outside = _numbered_outside_the_chain(connection)
    if outside is not None:
        return report.fail(
            outside, f"event {outside} lies outside the chain, which starts at event 1"
        )
    misnumbered = event_without_a_whole_number(connection)
    if misnumbered is not None:
        return report.fail(_first_missing_whole_number(connection), misnumbered)

    anchors = {c.sequence: c.chain_hash for c in checkpoints}
    previous_hash = _hash_before(connection, first, anchors, report)
    if previous_hash is None:
        return report

    _check_rows(connection, first, last, previous_hash, expected_at, report)
    if report.intact:
        _check_nothing_cut_off(expected_at, report)
    return report


def _numbered_outside_the_chain(connection) -> int | None:
    """The number of an event below 1, which no chain check would ever read.

    The database refuses such numbers (migration audit/0006); one found here
    was put there by someone who could drop that trigger.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT MIN(sequence) FROM audit_auditevent WHERE sequence < 1")
        row = cursor.fetchone()
    return row[0] if row else None


def event_without_a_whole_number(connection) -> str | None:
    """Why the trail holds an event numbered with no whole number, if it does.

    PostgreSQL's column holds whole numbers only; SQLite keeps whatever it is
    given, so someone who could drop the triggers could number an event 2.5
    or "two". The event before it is the one the chain misses.
    """
    if connection.vendor != "sqlite":
        return None
    with connection.cursor() as cursor:
        cursor.execute(SQLITE_MISNUMBERED)
        row = cursor.fetchone()
    if row is None:
        return None
    return f"an event is numbered {row[0]!r}, not a whole number"


SQLITE_MISNUMBERED = """
    SELECT sequence FROM audit_auditevent
    WHERE typeof(sequence) != 'integer'
    LIMIT 1
"""


def _first_missing_whole_number(connection) -> int:
    """The first whole number the chain lacks: where a misnumbered event sits."""
    with connection.cursor() as cursor:
        cursor.execute(SQLITE_WHOLE_NUMBERS)
        expected = 1
        for (sequence,) in cursor.fetchall():
            if sequence != expected:
                break
            expected += 1
    return expected


SQLITE_WHOLE_NUMBERS = """
    SELECT sequence FROM audit_auditevent
    WHERE typeof(sequence) = 'integer'
    ORDER BY sequence
"""


def _hash_before(
    connection, first: int, anchors: dict, report: ChainReport
) -> str | None:
    """The hash the chain continues from: genesis, the event before, or its checkpoint.

    Events archived out of the database leave a signed checkpoint at the
    boundary, which anchors the events still online.
    """
    if first == 1:
        return chain.GENESIS_HASH
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT chain_hash FROM audit_auditevent WHERE sequence = %s", [first - 1]
        )
        row = cursor.fetchone()
    if row is not None and anchors.get(first - 1, row[0]) != row[0]:
        report.fail(first - 1, f"event {first - 1} differs from its checkpoint")
        return None
    if row is not None:
        return row[0]
    if first - 1 in anchors:
        return anchors[first - 1]
    report.fail(first - 1, f"event {first - 1} is missing")
    return None


def _lines(connection, first: int, last: int | None) -> Iterator[bytes]:
    """Each event as its canonical form, a tab, and its stored hash."""
    if connection.vendor == "postgresql":
        return _copy_lines(connection, first, last)
    return _sqlite_lines(connection, first, last)


def _copy_lines(connection, first, last) -> Iterator[bytes]:
    """COPY's text output, which is the canonical form itself (see audit.chain).

    Read through libpq directly: psycopg's own COPY reader costs several
    microseconds per row in Python, more than the HMAC, because PostgreSQL
    sends each row as a message of its own.
    """
    with connection.cursor() as cursor:
        cursor.execute(SET_RANGE, [str(first), str(_last_or_newest(last))])
    pgconn = connection.connection.pgconn
    pgconn.send_query(POSTGRESQL_EVENTS_COPY.encode())
    result = pgconn.get_result()
    if result.status != pq.ExecStatus.COPY_OUT:
        message = result.error_message.decode(errors="replace")
        _drain_results(pgconn)
        raise DatabaseError(f"cannot read the audit trail: {message}")

    get_copy_data = pgconn.get_copy_data
    finished = False
    try:
        while True:
            size, data = get_copy_data(0)
            if size < 0:
                finished = True
                break
            yield bytes(data)[:-1]
    finally:
        # A caller that stops at a bad event leaves the rest unread; the
        # connection must leave COPY mode before anyone else uses it.
        while not finished:
            finished = get_copy_data(0)[0] < 0
        _drain_results(pgconn)


def _drain_results(pgconn) -> None:
    while pgconn.get_result() is not None:
        pass


def _sqlite_lines(connection, first, last) -> Iterator[bytes]:
    canonical_form = chain.canonical_form
    with connection.chunked_cursor() as cursor:
        cursor.execute(SQLITE_EVENTS, [first, _last_or_newest(last)])
        while rows := cursor.fetchmany(FETCH_SIZE):
            for sequence, moment, *values, stored_hash in rows:
                try:
                    if len(moment) != len("2026-01-01 00:00:00.000000"):
                        # SQLite keeps no fraction when the microseconds were
                        # zero, and other tools may spell it shorter.
                        moment = _sqlite_time(moment)
                    values[7] = json.loads(values[7])
                    canonical = canonical_form(sequence, moment, *values)
                except (ValueError, TypeError):
                    # A time or field list no writer of the trail could have
                    # stored: it cannot match its hash, and is reported so.
                    canonical = b"%d\t(unreadable)" % sequence
                yield canonical + b"\t" + str(stored_hash).encode()


def _last_or_newest(last: int | None) -> int:
    return NEWEST_POSSIBLE if last is None else last


def _sqlite_time(text: str) -> str:
    return datetime.datetime.fromisoformat(text).strftime(chain.TIME_FORMAT)


def _check_rows(connection, first, last, previous_hash, expected_at, report):
    key = chain.chain_key()
    digest = hmac.digest
    previous = previous_hash.encode()
    expected = first

    lines = _lines(connection, first, last)
    try:
        for line in lines:
            canonical, _, stored = line.rpartition(b"\t")
            sequence = int(canonical[: canonical.index(b"\t")])
            if sequence != expected:
                return _sequence_problem(report, expected, sequence)
            if digest(key, previous + canonical, "sha256").hex().encode() != stored:
                # An event before this one matched with this key: the key is
                # right, whatever follows.
                following = [] if sequence > first else islice(lines, KEY_CHECK_EVENTS)
                return report.fail(
                    sequence, _hash_problem(key, sequence, stored, list(following))
                )
            if sequence in expected_at:
                checkpoint = expected_at[sequence]
                if checkpoint.chain_hash.encode() != stored:
                    return report.fail(
                        sequence,
                        f"event {sequence} differs from checkpoint {checkpoint.name}",
                    )
                report.checkpoints_matched += 1
            previous = stored
            expected += 1
    finally:
        report.checked = expected - first
        report.last = expected - 1
    return report


def _hash_problem(key: bytes, sequence: int, stored: bytes, following) -> str:
    """Why event ``sequence`` fails its hash: an edit, or the wrong chain key.

    An edited, forged or moved event breaks its own hash and, at most, the
    next event's link to it; every later event still matches its stored
    predecessor. A wrong chain key breaks every event. So the events after
    the bad one are each checked against their own predecessor.
    """
    edited = f"event {sequence} does not match its hash (edited, forged or moved)"
    if not following:
        return edited
    links = []
    predecessor = stored
    for line in following:
        canonical, _, hash_stored = line.rpartition(b"\t")
        computed = hmac.digest(key, predecessor + canonical, "sha256").hex().encode()
        links.append(computed == hash_stored)
        predecessor = hash_stored
    if any(links[1:]):
        return edited
    if len(links) < KEY_CHECK_EVENTS:
        return (
            f"{edited}; the {len(links) + 1} event(s) checked all fail, so the "
            "chain key (PORTAL_AUDIT_CHAIN_KEY or its _FILE) may be the wrong one"
        )
    return (
        f"event {sequence} and the {len(links)} after it each fail their own "
        "hash: the chain key (PORTAL_AUDIT_CHAIN_KEY or its _FILE) is most "
        "likely not the one that wrote them; if it is, those events were all "
        "edited"
    )


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
