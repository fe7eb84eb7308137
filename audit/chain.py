"""The hash chain that makes the audit trail provable.

Each event carries a sequence number, given out by the database inside the
insert transaction, and an HMAC over its canonical form and the previous
event's hash. Editing, removing, reordering or forging an event breaks the
chain at that event, even for a database superuser who can lift the
write-once triggers, because the chain key is not in the database.

Writers serialise on the chain head in the database, never in Python, so web
processes and workers on several machines can write at once: PostgreSQL
takes a transaction-scoped advisory lock, SQLite's IMMEDIATE transactions
take its single write lock. A rolled-back insert gives its number back, so
the sequence has no gaps.
"""

import datetime
import functools
import hmac
import ipaddress
import json
import logging

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from audit.routers import AUDIT_DATABASE

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64

# Any constant will do, as long as every writer uses the same one: the
# portal's audit database holds nothing else that takes advisory locks.
CHAIN_LOCK_ID = 0x4548525F41554449

TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

# The canonical form of an event is its row as PostgreSQL's COPY prints it in
# text format: columns joined by tabs, backslash escapes, \N for NULL. The
# verifier then hashes COPY's output lines as they arrive, without parsing
# them, which is what lets it check hundreds of thousands of events a second.
_COPY_ESCAPES = str.maketrans(
    {
        "\\": "\\\\",
        "\b": "\\b",
        "\f": "\\f",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
        "\v": "\\v",
    }
)
# Spelled as PostgreSQL spells a jsonb array when it prints it.
_json_text = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode


def chain_key() -> bytes:
    return settings.AUDIT_CHAIN_KEY.encode()


class ChainKeyMismatch(Exception):
    """This process's chain key is not the one the trail is sealed with."""


_FINGERPRINT_TEXT = b"EHR Portal audit chain key fingerprint, version 1"
RECORDED_KEYS = "SELECT fingerprint FROM audit_chainkeyfingerprint"
# Slot 1 is the only one there is (audit/0008): a second key cannot be added.
RECORD_KEY = (
    "INSERT INTO audit_chainkeyfingerprint (slot, fingerprint, recorded_at) "
    "VALUES (1, %s, %s)"
)


@functools.lru_cache(maxsize=8)
def key_fingerprint(key: bytes) -> str:
    # Asked on every append, of the same key.
    return hmac.digest(key, _FINGERPRINT_TEXT, "sha256").hex()


@functools.lru_cache(maxsize=4096)
def normalised_ip(address: str | None) -> str | None:
    """The address as PostgreSQL's host() prints it; IPv4 seen over IPv6 as IPv4.

    Python and PostgreSQL agree on IPv6 spelling except where an IPv4 address
    sits in the low 32 bits, which PostgreSQL prints in dotted form.
    """
    if not address:
        return None
    # A zone (fe80::1%eth0) names an interface of the server, not the client,
    # and PostgreSQL's inet cannot hold one.
    parsed = ipaddress.ip_address(address.split("%", 1)[0])
    if parsed.version == 4:
        return str(parsed)
    if parsed.ipv4_mapped:
        return str(parsed.ipv4_mapped)
    # PostgreSQL writes the low 32 bits in dotted form only when the zeros
    # end exactly there (::1.2.3.4); ::2 or ::0.0.1.0 stay in hexadecimal.
    words = [(int(parsed) >> shift) & 0xFFFF for shift in range(112, -16, -16)]
    if not any(words[:6]) and words[6]:
        return "::" + str(ipaddress.IPv4Address(int(parsed) & 0xFFFFFFFF))
    return str(parsed)


def _text(value) -> str:
    return "\\N" if value is None else str(value).translate(_COPY_ESCAPES)


def canonical_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime(TIME_FORMAT)


def canonical_form(
    sequence: int,
    occurred_at: str,
    actor_id: int | None,
    actor_username: str,
    actor_role: str,
    action: str,
    outcome: str,
    patient_ref: str,
    record_type: str,
    fields: list,
    ip_address: str | None,
    device_fingerprint: str,
    purpose: str,
    reason: str,
    request_id: str,
) -> bytes:
    """The bytes the HMAC covers: every column but the id and the hash itself."""
    return "\t".join(
        map(
            _text,
            (
                sequence,
                occurred_at,
                actor_id,
                actor_username,
                actor_role,
                action,
                outcome,
                patient_ref,
                record_type,
                _json_text(fields),
                normalised_ip(ip_address),
                device_fingerprint,
                purpose,
                reason,
                request_id,
            ),
        )
    ).encode()


def seal(previous_hash: str, canonical: bytes, key: bytes) -> str:
    return hmac.digest(key, previous_hash.encode() + canonical, "sha256").hex()


def event_canonical_form(event) -> bytes:
    return canonical_form(
        event.sequence,
        canonical_time(event.occurred_at),
        event.actor_id,
        event.actor_username,
        event.actor_role,
        event.action,
        event.outcome,
        event.patient_ref,
        event.record_type,
        list(event.fields),
        event.ip_address,
        event.device_fingerprint,
        event.purpose,
        event.reason,
        event.request_id,
    )


def chain_head(cursor) -> tuple[int, str]:
    """The newest (sequence, hash), or the genesis values for an empty trail."""
    cursor.execute(
        "SELECT sequence, chain_hash FROM audit_auditevent "
        "ORDER BY sequence DESC LIMIT 1"
    )
    row = cursor.fetchone()
    return (row[0], row[1]) if row else (0, GENESIS_HASH)


# Spelled out once rather than built by the ORM on every chart open, where
# building it cost more than the hashing. The values follow the canonical
# form's order, then the hash itself (_insert_values).
INSERT_EVENT = """
    INSERT INTO audit_auditevent (
        sequence, occurred_at, actor_id, actor_username, actor_role, action,
        outcome, patient_ref, record_type, fields, ip_address,
        device_fingerprint, purpose, reason, request_id, chain_hash
    )
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s)
    RETURNING id
"""


def append(events: list) -> None:
    """Number, seal and insert ``events`` (unsaved AuditEvents) in one transaction.

    The lock and the read of the chain head are separate statements on
    purpose: in READ COMMITTED each statement sees what was committed before
    it began, so the head read after the lock is granted includes the event
    the previous holder just committed.
    """
    if not events:
        return
    connection = connections[AUDIT_DATABASE]
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        _append_in_two_round_trips(connection, events)
        return

    # SQLite, or PostgreSQL inside a transaction the caller opened (the
    # tests' transactions): Django's atomic block holds the statements.
    from audit.models import AuditEvent

    key = chain_key()
    with transaction.atomic(using=AUDIT_DATABASE), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_ID])
        sequence, previous_hash = chain_head(cursor)
        cursor.execute(RECORDED_KEYS)
        unrecorded = _unrecorded_key(cursor.fetchall(), sequence, previous_hash, key)
        _number_and_seal(events, sequence, previous_hash, key)

        if unrecorded:
            cursor.execute(RECORD_KEY, [unrecorded, timezone.now()])
        if len(events) == 1:
            events[0].save(using=AUDIT_DATABASE)
        else:
            AuditEvent.objects.bulk_create(events)


def _append_in_two_round_trips(connection, events: list) -> None:
    """PostgreSQL outside any transaction: the same steps, in two round trips.

    BEGIN, the lock and the head read travel together (pipeline mode; the
    server still runs them one after the other), then the INSERT with the
    COMMIT. Writers queue on the lock, so every round trip saved while it is
    held is saved for each writer waiting behind it.
    """
    connection.ensure_connection()
    session = connection.connection
    key = chain_key()
    try:
        with connection.cursor() as cursor, connection.cursor() as keys:
            with session.pipeline():
                cursor.execute("BEGIN")
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_ID])
                sequence, previous_hash = chain_head(cursor)
                keys.execute(RECORDED_KEYS)
            recorded = keys.fetchall()

            unrecorded = _unrecorded_key(recorded, sequence, previous_hash, key)
            _number_and_seal(events, sequence, previous_hash, key)

            # psycopg's own cursor: Django's wrapper passes no ``returning``.
            inserts = cursor.cursor
            with session.pipeline():
                if unrecorded:
                    keys.execute(RECORD_KEY, [unrecorded, timezone.now()])
                inserts.executemany(
                    INSERT_EVENT, [_insert_values(event) for event in events],
                    returning=True,
                )  # fmt: skip
                keys.execute("COMMIT")
            ids = [inserts.fetchone()[0]]
            while inserts.nextset():
                ids.append(inserts.fetchone()[0])
    except BaseException:
        _abandon(connection)
        raise

    for event, pk in zip(events, ids, strict=True):
        event.pk = pk
        event._state.adding = False
        event._state.db = AUDIT_DATABASE


def _abandon(connection) -> None:
    """Roll back a failed append, or drop the connection if even that fails.

    Nothing may stay half-done on a connection that the next request reuses:
    an open transaction would hold the chain lock against every other writer.
    """
    try:
        connection.connection.rollback()
    except Exception:
        connection.close()


def _insert_values(event) -> tuple:
    return (
        event.sequence, event.occurred_at, event.actor_id, event.actor_username,
        event.actor_role, event.action, event.outcome, event.patient_ref,
        event.record_type, _json_text(list(event.fields)), event.ip_address,
        event.device_fingerprint, event.purpose, event.reason, event.request_id,
        event.chain_hash,
    )  # fmt: skip


def _unrecorded_key(recorded: list, sequence: int, previous_hash: str, key: bytes):
    """The fingerprint of ``key`` if the trail has yet to record one, else None.

    Raises ChainKeyMismatch when the trail does not take ``key``
    (trail_takes_key).
    """
    known = {row[0] for row in recorded}
    if trail_takes_key(key, known, sequence, previous_hash):
        return None if known else key_fingerprint(key)

    if known:
        logger.error(
            "This process's audit chain key is not the one the trail is sealed "
            "with: nothing written. Check PORTAL_AUDIT_CHAIN_KEY (or its _FILE)."
        )
    else:
        logger.error(
            "The newest audit event does not verify under this process's chain "
            "key (a wrong PORTAL_AUDIT_CHAIN_KEY, or an altered event: run "
            "verify_audit); nothing written."
        )
    raise ChainKeyMismatch("the audit chain key differs from the trail's")


def trail_takes_key(key: bytes, recorded: set, sequence: int, head_hash: str) -> bool:
    """Whether events sealed with ``key`` belong on this trail.

    Its recorded key decides. A trail begun before keys were recorded has
    events but none: its newest event must then verify under ``key``.
    """
    if recorded:
        return key_fingerprint(key) in recorded
    return sequence == 0 or head_is_sealed_with(key, sequence, head_hash)


def head_is_sealed_with(key: bytes, sequence: int, head_hash: str) -> bool:
    from audit.models import AuditEvent

    events = AuditEvent.objects.using(AUDIT_DATABASE)
    head = events.get(sequence=sequence)
    before = (
        events.get(sequence=sequence - 1).chain_hash if sequence > 1 else GENESIS_HASH
    )
    return hmac.compare_digest(seal(before, event_canonical_form(head), key), head_hash)


def _number_and_seal(
    events: list, sequence: int, previous_hash: str, key: bytes
) -> None:
    # Stamped under the lock, so time never runs backwards along the chain.
    now = timezone.now()
    for event in events:
        sequence += 1
        event.sequence = sequence
        event.occurred_at = now
        event.ip_address = normalised_ip(event.ip_address)
        event.chain_hash = seal(previous_hash, event_canonical_form(event), key)
        previous_hash = event.chain_hash
