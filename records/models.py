"""Patients, care teams and clinical records.

Every model that holds PHI uses a UUID primary key made in Python, so that the
key exists before the first save and each sealed value can be bound to its row.
Clinical dates stay in clear (they order a chart and page it); the identity,
codes, descriptions and values are sealed.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from records import crypto
from records import mrn as mrn_rules
from records.fields import EncryptedDateField, EncryptedTextField

INDEX_LENGTH = 64


class PatientSource(models.TextChoices):
    FHIR_IMPORT = "fhir", "FHIR import"
    DEMO = "demo", "Synthetic demo data"


class Patient(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    mrn = EncryptedTextField()
    mrn_index = models.CharField(max_length=INDEX_LENGTH, unique=True)
    given_name = EncryptedTextField()
    given_name_index = models.CharField(max_length=INDEX_LENGTH, db_index=True)
    family_name = EncryptedTextField()
    family_name_index = models.CharField(max_length=INDEX_LENGTH, db_index=True)
    birth_date = EncryptedDateField()
    birth_date_index = models.CharField(max_length=INDEX_LENGTH, db_index=True)
    sex = EncryptedTextField(blank=True, default="")
    deceased_on = EncryptedDateField(null=True, blank=True)
    address = EncryptedTextField(blank=True, default="")
    telecom = EncryptedTextField(blank=True, default="")
    source = models.CharField(max_length=8, choices=PatientSource.choices)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        # Never a name: this string lands in admin pages, logs and errors.
        return f"Patient {self.pk}"

    def refresh_indexes(self) -> None:
        """Recompute the blind indexes from the identity fields."""
        self.mrn_index = crypto.blind_index("mrn", self.mrn)
        self.given_name_index = crypto.blind_index("given", self.given_name)
        self.family_name_index = crypto.blind_index("family", self.family_name)
        self.birth_date_index = crypto.blind_index(
            "birth_date", self.birth_date.isoformat()
        )

    @property
    def mrn_display(self) -> str:
        return mrn_rules.display(self.mrn)

    @property
    def age(self) -> int:
        """Whole years at today, or at death."""
        end = self.deceased_on or timezone.localdate()
        born = self.birth_date
        return end.year - born.year - ((end.month, end.day) < (born.month, born.day))

    @property
    def display_name(self) -> str:
        return f"{self.family_name}, {self.given_name}"


class PatientIdentifier(models.Model):
    """An identifier from another system (Synthea's id, SSN, licence...)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, related_name="identifiers"
    )
    system = models.CharField(max_length=255)
    value = EncryptedTextField()
    value_index = models.CharField(max_length=INDEX_LENGTH)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["system", "value_index"], name="unique_external_identifier"
            )
        ]

    def __str__(self):
        return f"Identifier {self.pk}"


class CareTeamRole(models.TextChoices):
    ATTENDING = "attending", "Attending physician"
    CONSULTING = "consulting", "Consulting physician"
    PRIMARY_NURSE = "primary_nurse", "Primary nurse"
    NURSE = "nurse", "Nurse"


class CareTeamMembershipQuerySet(models.QuerySet):
    def active_on(self, day):
        return self.filter(
            Q(starts_on__lte=day), Q(ends_on__isnull=True) | Q(ends_on__gte=day)
        )


class CareTeamMembership(models.Model):
    """A clinician's care relationship with a patient: what opens the chart."""

    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, related_name="care_team"
    )
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="care_team_memberships",
    )
    role = models.CharField(max_length=16, choices=CareTeamRole.choices)
    starts_on = models.DateField(default=timezone.localdate)
    ends_on = models.DateField(null=True, blank=True)

    objects = CareTeamMembershipQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_on__isnull=True)
                | Q(ends_on__gte=models.F("starts_on")),
                name="care_team_ends_after_start",
            ),
        ]
        indexes = [models.Index(fields=["member", "patient"])]

    def __str__(self):
        return f"Care team membership {self.pk}"


class ClinicalRecord(models.Model):
    """Fields every clinical record shares."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="+")
    # HMAC of the source resource's type and id: makes re-import idempotent
    # without keeping the source id in clear.
    source_key = models.CharField(max_length=INDEX_LENGTH)
    occurred_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=32, blank=True, default="")
    code = EncryptedTextField(blank=True, default="")
    description = EncryptedTextField(blank=True, default="")

    class Meta:
        abstract = True
        ordering = ["-occurred_at"]

    def __str__(self):
        return f"{type(self).__name__} {self.pk}"


def _clinical_meta(name: str):
    return type(
        "Meta",
        (ClinicalRecord.Meta,),
        {
            "constraints": [
                models.UniqueConstraint(
                    fields=["patient", "source_key"], name=f"unique_{name}_source"
                )
            ],
            "indexes": [models.Index(fields=["patient", "-occurred_at"])],
        },
    )


class Encounter(ClinicalRecord):
    ended_at = models.DateTimeField(null=True, blank=True)
    encounter_class = models.CharField(max_length=16, blank=True, default="")
    reason = EncryptedTextField(blank=True, default="")

    Meta = _clinical_meta("encounter")


class Condition(ClinicalRecord):
    abated_at = models.DateTimeField(null=True, blank=True)

    Meta = _clinical_meta("condition")


class MedicationRequest(ClinicalRecord):
    dosage = EncryptedTextField(blank=True, default="")

    Meta = _clinical_meta("medicationrequest")


class AllergyIntolerance(ClinicalRecord):
    category = models.CharField(max_length=32, blank=True, default="")
    criticality = models.CharField(max_length=32, blank=True, default="")
    reaction = EncryptedTextField(blank=True, default="")

    Meta = _clinical_meta("allergyintolerance")


class ObservationCategory(models.TextChoices):
    VITAL_SIGNS = "vital-signs", "Vital signs"
    LABORATORY = "laboratory", "Laboratory"
    OTHER = "other", "Other"


class Observation(ClinicalRecord):
    category = models.CharField(
        max_length=16, choices=ObservationCategory.choices, default="other"
    )
    value = EncryptedTextField(blank=True, default="")

    Meta = _clinical_meta("observation")


class Immunization(ClinicalRecord):
    Meta = _clinical_meta("immunization")


class Procedure(ClinicalRecord):
    Meta = _clinical_meta("procedure")
