"""Steps of bench/audit_bench.py that run inside the portal (Django set up).

_phases.py seed          a physician, a Synthea patient on their care team,
                         and a verified session; prints {patient, cookie}
_phases.py count         prints the number of chart-view audit events
_phases.py verify N      writes N synthetic chained events, prints the
                         verifier's events per second
_phases.py trail N ID    appends N synthetic chained views of patient ID to
                         the trail, as if the chart had been opened N times
"""

import datetime
import json
import os
import sys
import time
import uuid
from pathlib import Path

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.models import Group  # noqa: E402
from django.db import connections  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_otp import DEVICE_ID_SESSION_KEY  # noqa: E402

from accounts.models import TOTPAuthenticator  # noqa: E402
from accounts.roles import Role  # noqa: E402
from audit import chain  # noqa: E402
from audit.models import AuditAction, AuditEvent  # noqa: E402
from audit.verification import verify_chain  # noqa: E402
from records.fhir_import import import_bundle_file  # noqa: E402
from records.models import CareTeamMembership, CareTeamRole, Patient  # noqa: E402

SYNTHEA = (
    Path(
        os.environ.get(
            "EHR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
        )
    )
    / "synthea"
)


def seed() -> None:
    bundles = sorted(SYNTHEA.glob("*.json"))
    if not bundles:
        sys.exit(f"bench needs the Synthea bundles in {SYNTHEA}")
    import_bundle_file(bundles[0], actor="system:bench")
    patient = Patient.objects.get()

    physician = get_user_model().objects.create_user(
        username="dr.bench", password=uuid.uuid4().hex
    )
    physician.groups.add(Group.objects.get_or_create(name=Role.PHYSICIAN.value)[0])
    device = TOTPAuthenticator.objects.create(
        user=physician, name="bench", confirmed=True
    )
    CareTeamMembership.objects.create(
        member=physician, patient=patient, role=CareTeamRole.ATTENDING,
        starts_on=timezone.localdate() - datetime.timedelta(days=1),
    )  # fmt: skip

    client = Client()
    client.force_login(physician)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    print(json.dumps({"patient": str(patient.pk), "cookie": cookie}))


def count() -> None:
    print(AuditEvent.objects.filter(action=AuditAction.VIEWED).count())


def verify(total: int) -> None:
    _write_synthetic_events(total)
    # What autovacuum does to any trail long before anyone verifies it: the
    # first read of freshly loaded rows would otherwise also write hint bits.
    connection = connections["audit"]
    connection.connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE audit_auditevent")

    started = time.perf_counter()
    report = verify_chain()
    elapsed = time.perf_counter() - started
    if not report.intact or report.checked != total:
        sys.exit(f"synthetic chain not intact: {report.problem}")
    print(total / elapsed)


COLUMNS = (
    "sequence, chain_hash, occurred_at, actor_id, actor_username, actor_role, "
    "action, outcome, patient_ref, record_type, fields, ip_address, "
    "device_fingerprint, purpose, reason, request_id"
)


def trail(total: int, patient_ref: str) -> None:
    # Not analysed afterwards, on purpose: the chart's panel must stay cheap
    # on a trail PostgreSQL holds no statistics for (autovacuum off here).
    _write_synthetic_events(total, patients=[patient_ref], after_head=True)
    print(total)


def _write_synthetic_events(
    total: int, *, patients: list[str] | None = None, after_head: bool = False
) -> None:
    key = chain.chain_key()
    patients = patients or [str(uuid.uuid4()) for _ in range(500)]
    users = [(number, f"clinician.{number}") for number in range(1, 60)]
    fields = ["conditions.description", "allergies.description", "vitals.value"]
    start = timezone.now() - datetime.timedelta(days=30)

    connection = connections["audit"]
    connection.ensure_connection()
    raw = connection.connection
    head, previous, step = 0, chain.GENESIS_HASH, 1003
    if after_head:
        with raw.cursor() as cursor:
            head, previous = chain.chain_head(cursor)
            cursor.execute("SELECT max(occurred_at) FROM audit_auditevent")
            latest = cursor.fetchone()[0]
        # A microsecond apart from the head on: time runs forward along the
        # chain, and the events opened after these come later still.
        start, step = latest or timezone.now(), 1
    with (
        raw.cursor() as cursor,
        cursor.copy(
            f"COPY audit_auditevent ({COLUMNS}) FROM STDIN"  # noqa: S608 (constant)
        ) as copy,
    ):
        for sequence in range(head + 1, head + total + 1):
            moment = start + datetime.timedelta(microseconds=(sequence - head) * step)
            actor_id, username = users[sequence % len(users)]
            ip = f"10.0.{sequence % 7}.{sequence % 250 + 1}"
            values = (
                actor_id, username, "physician", "VIEWED", "success",
                patients[sequence % len(patients)], "ChartSummary", fields, ip,
                f"{sequence % 97:064x}", "treatment", "on care team",
                uuid.UUID(int=sequence).hex,
            )  # fmt: skip
            canonical = chain.canonical_form(
                sequence, chain.canonical_time(moment), *values
            )
            previous = chain.seal(previous, canonical, key)
            copy.write_row(
                (sequence, previous, moment, *values[:7], json.dumps(fields),
                 *values[8:])
            )  # fmt: skip
    raw.commit()


if __name__ == "__main__":
    phase, *arguments = sys.argv[1:]
    {
        "seed": seed,
        "count": count,
        "verify": lambda: verify(int(arguments[0])),
        "trail": lambda: trail(int(arguments[0]), arguments[1]),
    }[phase]()
