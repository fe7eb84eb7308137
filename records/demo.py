"""Demo data: users of every role with authenticators, patients and care teams.

Development mode only. Passwords and TOTP secrets are random on every run and
written, with the usernames, to a git-ignored file in the data folder.
"""

import datetime
import json
import os
import random
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from faker import Faker

from accounts.models import TOTPAuthenticator
from accounts.roles import Role
from audit.models import AuditAction, AuditOutcome
from audit.services import record_event
from records.models import (
    Admission,
    AllergyIntolerance,
    CareTeamMembership,
    CareTeamRole,
    Condition,
    Encounter,
    Observation,
    ObservationCategory,
    Patient,
    PatientSource,
    Unit,
    UnitAssignment,
)
from records.services import register_patient

SYSTEM_ACTOR = "system:seed_demo"
MINIMUM_PATIENTS = 25
CREDENTIALS_FILE_NAME = "demo-credentials.json"

DEMO_USERS = (
    ("dr.patel", Role.PHYSICIAN, "Asha", "Patel"),
    ("dr.okafor", Role.PHYSICIAN, "Chidi", "Okafor"),
    ("nurse.jones", Role.NURSE, "Megan", "Jones"),
    ("nurse.garcia", Role.NURSE, "Luis", "Garcia"),
    ("compliance.lee", Role.COMPLIANCE_OFFICER, "Hana", "Lee"),
    ("export.kim", Role.EXPORT_STAFF, "Min", "Kim"),
    ("admin.ross", Role.ADMIN, "Jordan", "Ross"),
)


@dataclass
class DemoCredential:
    username: str
    password: str
    role: str
    totp_secret: str


def credentials_path() -> Path:
    return Path(settings.PORTAL_DATA_DIR) / CREDENTIALS_FILE_NAME


def _ensure_user(username: str, role: Role, first: str, last: str) -> DemoCredential:
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=username)
    password = secrets.token_urlsafe(15)
    user.first_name, user.last_name = first, last
    # Break-the-glass alerts go to compliance by e-mail (the demo's console).
    user.email = f"{username}@demo.ehr-portal.test"
    user.is_staff = role == Role.ADMIN
    user.set_password(password)
    user.save()
    user.groups.set([Group.objects.get_or_create(name=role.value)[0]])

    TOTPAuthenticator.objects.filter(user=user).delete()
    device = TOTPAuthenticator.objects.create(
        user=user, name="Demo authenticator", confirmed=True
    )
    return DemoCredential(username, password, role.value, device.base32_secret())


def _write_credentials(credentials: list[DemoCredential]) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump([asdict(item) for item in credentials], handle, indent=2)
    os.replace(temporary, path)
    return path


def _synthetic_patient(fake: Faker, rng: random.Random) -> Patient:
    sex = rng.choice(["female", "male"])
    given = fake.first_name_female() if sex == "female" else fake.first_name_male()
    patient = register_patient(
        given_name=given,
        family_name=fake.last_name(),
        birth_date=fake.date_of_birth(minimum_age=1, maximum_age=95),
        sex=sex,
        address=fake.address().replace("\n", ", "),
        telecom=f"phone: {fake.numerify('555-###-####')}",
        source=PatientSource.DEMO,
    )
    _synthetic_history(patient, rng)
    return patient


CONDITIONS = (
    ("38341003", "Hypertension"),
    ("44054006", "Type 2 diabetes mellitus"),
    ("195967001", "Asthma"),
    ("40055000", "Chronic sinusitis"),
    ("55822004", "Hyperlipidemia"),
)
VITALS = (
    ("8867-4", "Heart rate", lambda r: f"{r.randint(58, 96)} /min"),
    ("8310-5", "Body temperature", lambda r: f"{r.uniform(36.2, 37.6):.1f} Cel"),
    ("29463-7", "Body weight", lambda r: f"{r.uniform(48, 110):.1f} kg"),
    (
        "85354-9",
        "Blood pressure panel",
        lambda r: f"{r.randint(105, 150)}/{r.randint(65, 95)} mm[Hg]",
    ),
)


def _synthetic_history(patient: Patient, rng: random.Random) -> None:
    now = timezone.now()
    # A young patient's history is shorter: nothing happens before birth.
    days_alive = (timezone.localdate() - patient.birth_date).days

    def days_ago(earliest: int, latest: int) -> datetime.timedelta:
        latest = min(latest, days_alive)
        return datetime.timedelta(days=rng.randint(min(earliest, latest), latest))

    for _visit in range(rng.randint(2, 5)):
        when = now - days_ago(10, 900)
        Encounter.objects.create(
            patient=patient,
            source_key=secrets.token_hex(16),
            occurred_at=when,
            ended_at=when + datetime.timedelta(minutes=30),
            status="finished",
            encounter_class="AMB",
            code="185349003",
            description="Encounter for check up",
            reason="",
        )
        for code, name, make_value in VITALS:
            Observation.objects.create(
                patient=patient,
                source_key=secrets.token_hex(16),
                occurred_at=when,
                status="final",
                category=ObservationCategory.VITAL_SIGNS,
                code=code,
                description=name,
                value=make_value(rng),
            )
    for code, name in rng.sample(CONDITIONS, rng.randint(0, 2)):
        Condition.objects.create(
            patient=patient,
            source_key=secrets.token_hex(16),
            occurred_at=now - days_ago(100, 4000),
            status="active",
            code=code,
            description=name,
        )
    if rng.random() < 0.3:
        AllergyIntolerance.objects.create(
            patient=patient, source_key=secrets.token_hex(16),
            occurred_at=now - days_ago(100, 4000),
            status="active", category="medication", criticality="high",
            code="7980", description="Penicillin G", reaction="Hives (moderate)",
        )  # fmt: skip


def _assign_care_teams(users: dict[str, object], rng: random.Random) -> None:
    today = timezone.localdate()
    CareTeamMembership.objects.filter(member__in=users.values()).delete()
    patients = sorted(Patient.objects.all(), key=lambda p: (p.source, str(p.pk)))
    imported = [p for p in patients if p.source == PatientSource.FHIR_IMPORT]
    synthetic = [p for p in patients if p.source != PatientSource.FHIR_IMPORT]

    # The first physician holds every imported patient and enough synthetic
    # ones to reach at least twelve; the second takes the rest.
    primary = (imported + synthetic)[: max(12, len(imported))]
    if len(primary) < 12:
        primary = patients[:12]
    secondary = [p for p in patients if p not in primary]
    memberships = [(users["dr.patel"], p, CareTeamRole.ATTENDING) for p in primary] + [
        (users["dr.okafor"], p, CareTeamRole.ATTENDING) for p in secondary
    ]

    # Each nurse looks after some of the patients, never all of them.
    half = len(primary) // 2
    memberships += [
        (users["nurse.jones"], p, CareTeamRole.PRIMARY_NURSE) for p in primary[1:half]
    ]
    memberships += [
        (users["nurse.garcia"], p, CareTeamRole.NURSE)
        for p in primary[half:] + secondary[:3]
    ]

    CareTeamMembership.objects.bulk_create(
        CareTeamMembership(
            member=member, patient=patient, role=role,
            starts_on=today - datetime.timedelta(days=rng.randint(1, 365)),
        )
        for member, patient, role in memberships
    )  # fmt: skip

    # Nurse Garcia also works on 4 West, where two more patients are admitted.
    unit, _ = Unit.objects.get_or_create(code="4west", defaults={"name": "4 West"})
    UnitAssignment.objects.filter(unit=unit).delete()
    UnitAssignment.objects.create(unit=unit, member=users["nurse.garcia"])
    Admission.objects.filter(unit=unit).delete()
    for patient in secondary[3:5]:
        Admission.objects.create(patient=patient, unit=unit)


ADMIN_MODELS = (
    ("accounts", "user"), ("auth", "group"), ("records", "careteammembership"),
    ("records", "unit"), ("records", "unitassignment"), ("records", "admission"),
)  # fmt: skip


def _grant_admin_permissions(user) -> None:
    # Groups too: roles and the sensitive-category grants are given to them.
    wanted = Q()
    for app_label, model in ADMIN_MODELS:
        wanted |= Q(content_type__app_label=app_label, content_type__model=model)
    user.user_permissions.set(Permission.objects.filter(wanted))


@transaction.atomic
def seed_demo(*, seed: int = 2026) -> Path:
    """Create or refresh the demo world and return the credentials file's path."""
    rng = random.Random(seed)  # noqa: S311 (demo content, not a secret)
    fake = Faker("en_US")
    fake.seed_instance(seed)

    credentials = [_ensure_user(*spec) for spec in DEMO_USERS]
    users = {
        user.username: user
        for user in get_user_model().objects.filter(
            username__in=[spec[0] for spec in DEMO_USERS]
        )
    }
    _grant_admin_permissions(users["admin.ross"])

    missing = MINIMUM_PATIENTS - Patient.objects.count()
    for _ in range(max(0, missing)):
        _synthetic_patient(fake, rng)

    _assign_care_teams(users, rng)
    record_event(
        actor=SYSTEM_ACTOR,
        action=AuditAction.DEMO_SEEDED,
        outcome=AuditOutcome.SUCCESS,
        reason=f"{Patient.objects.count()} patients",
    )
    return _write_credentials(credentials)
