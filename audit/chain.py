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

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from audit.routers import AUDIT_DATABASE

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


@functools.lru_cache(maxsize=4096)
def normalised_ip(address: str | None) -> str | None:
    """The address as PostgreSQL's host() prints it; IPv4 seen over IPv6 as IPv4.

    Python and PostgreSQL agree on IPv6 spelling except where an IPv4 address
    sits in the low 32 bits, which PostgreSQL prints in dotted form.
    """
    if not address:
        return None
    parsed = ipaddress.ip_address(address)
    if parsed.version == 4:
        return str(parsed)
    if parsed.ipv4_mapped:
        return str(parsed.ipv4_mapped)
    words = [(int(parsed) >> shift) & 0xFFFF for shift in range(112, -16, -16)]
    if not any(words[:6]) and (words[6] or words[7] > 1):
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


def append(events: list) -> None:
    """Number, seal and insert ``events`` (unsaved AuditEvents) in one transaction.

    The lock and the read of the chain head are separate statements on
    purpose: in READ COMMITTED each statement sees what was committed before
    it began, so the head read after the lock is granted includes the event
    the previous holder just committed. On PostgreSQL they travel together
    (pipeline mode) with the transaction's BEGIN: the server still runs them
    one after the other, and the writers queued on the lock wait one round
    trip less for each other.
    """
    from audit.models import AuditEvent

    connection = connections[AUDIT_DATABASE]
    key = chain_key()
    with transaction.atomic(using=AUDIT_DATABASE), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with connection.connection.pipeline():
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_ID])
                sequence, previous_hash = chain_head(cursor)
        else:
            sequence, previous_hash = chain_head(cursor)

        # Stamped under the lock, so time never runs backwards along the chain.
        now = timezone.now()
        for event in events:
            sequence += 1
            event.sequence = sequence
            event.occurred_at = now
            event.ip_address = normalised_ip(event.ip_address)
            event.chain_hash = seal(previous_hash, event_canonical_form(event), key)
            previous_hash = event.chain_hash

        if len(events) == 1:
            events[0].save(using=AUDIT_DATABASE)
        else:
            AuditEvent.objects.bulk_create(events)
