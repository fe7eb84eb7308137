"""Patients, care teams and clinical records.

Every model that holds PHI uses a UUID primary key made in Python, so that the
key exists before the first save and each sealed value can be bound to its row.
Clinical dates stay in clear (they order a chart and page it); the identity,
codes, descriptions and values are sealed.
"""

import uuid

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, FieldError, ValidationError
from django.db import models, router, transaction
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from accounts.roles import Role
from audit.models import AuditAction, AuditOutcome
from audit.services import record_events
from records import crypto
from records import mrn as mrn_rules
from records.fields import (
    EncryptedDateField,
    EncryptedField,
    EncryptedTextField,
    SealedModel,
    SealedQuerySet,
)
from records.units import printed_value

INDEX_LENGTH = 64


class UnauditedBulkWrite(FieldError):
    """A bulk write on PHI that would leave no audit event per record."""


class ClinicalQuerySet(SealedQuerySet):
    """Bulk writes on PHI either leave one audit event per record or do not run.

    QuerySet.update and bulk_update change rows without loading them, so they
    can neither seal encrypted values nor say which records changed: they are
    refused. bulk_create needs the acting person or system actor and records
    one event per created record, in the same chain write.
    """

    def update(self, **kwargs):
        raise UnauditedBulkWrite(
            f"{self.model.__name__}: QuerySet.update is refused on clinical records "
            "(encrypted values cannot be sealed, and no audit event would name the "
            "records changed); save them one by one through an auditing service"
        )

    def bulk_update(self, objs, fields, batch_size=None):
        raise UnauditedBulkWrite(
            f"{self.model.__name__}: bulk_update is refused on clinical records "
            "(encrypted values cannot be sealed, and no audit event would name the "
            "records changed)"
        )

    def bulk_create(self, objs, *args, actor=None, **kwargs):
        if actor is None:
            raise UnauditedBulkWrite(
                f"{self.model.__name__}.bulk_create needs actor= (a user or a "
                "named system actor), for the audit trail"
            )
        created = super().bulk_create(objs, *args, **kwargs)
        if issubclass(self.model, ClinicalRecord):
            recount_sensitive_records(
                {record.patient_id for record in created if record.sensitivity}
            )
        record_type = self.model.__name__
        fields = [
            field.name
            for field in self.model._meta.concrete_fields
            if isinstance(field, EncryptedField)
        ]
        record_events(
            actor=actor,
            action=AuditAction.RECORD_CREATED,
            outcome=AuditOutcome.SUCCESS,
            records=[(str(_patient_id(obj)), record_type, fields) for obj in created],
        )
        return created


def _patient_id(record) -> str:
    return record.pk if isinstance(record, Patient) else record.patient_id


class PatientSource(models.TextChoices):
    FHIR_IMPORT = "fhir", "FHIR import"
    DEMO = "demo", "Synthetic demo data"


class Patient(SealedModel):
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

    objects = ClinicalQuerySet.as_manager()

    # Blind indexes that refresh_indexes() derives; rotate_keys rebuilds them.
    index_fields = ("mrn_index", "given_name_index", "family_name_index")
    index_fields += ("birth_date_index",)

    class Meta:
        # Grants for the sensitive categories, given to users or groups in
        # the admin (42 CFR Part 2; 45 CFR 164.508(a)(2) psychotherapy notes).
        permissions = [
            ("view_psychotherapy", "Can see psychotherapy notes"),
            ("view_substance_use", "Can see substance-use treatment records"),
            ("view_hiv", "Can see HIV results and diagnoses"),
            ("view_genetic", "Can see genetic test results"),
        ]

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

    # What identifies the patient on a list, a report or a chart's band.
    IDENTITY = ("family_name", "given_name", "birth_date", "sex", "mrn", "deceased_on")

    def check_identity(self) -> None:
        """Open every identity field; raises crypto.IntegrityError if one does not.

        Records filed under a patient whose identity cannot be verified may
        belong to someone else: no page shows them under it.
        """
        for name in self.IDENTITY:
            getattr(self, name)


class PatientIdentifier(SealedModel):
    """An identifier from another system (Synthea's id, SSN, licence...)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, related_name="identifiers"
    )
    system = models.CharField(max_length=255)
    value = EncryptedTextField()
    value_index = models.CharField(max_length=INDEX_LENGTH)

    objects = ClinicalQuerySet.as_manager()

    index_fields = ("value_index",)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["system", "value_index"], name="unique_external_identifier"
            )
        ]

    def __str__(self):
        return f"Identifier {self.pk}"

    def refresh_indexes(self) -> None:
        self.value_index = crypto.blind_index(f"identifier:{self.system}", self.value)


class CareTeamRole(models.TextChoices):
    ATTENDING = "attending", "Attending physician"
    CONSULTING = "consulting", "Consulting physician"
    PRIMARY_NURSE = "primary_nurse", "Primary nurse"
    NURSE = "nurse", "Nurse"


class DatedAssignmentQuerySet(SealedQuerySet):
    """Rows with ``starts_on``/``ends_on`` dates (an open end means ongoing)."""

    def active_on(self, day):
        return self.filter(
            Q(starts_on__lte=day), Q(ends_on__isnull=True) | Q(ends_on__gte=day)
        )

    def overlapping(self, starts_on, ends_on):
        """Rows active on at least one day from ``starts_on`` to ``ends_on``."""
        rows = self.filter(Q(ends_on__isnull=True) | Q(ends_on__gte=starts_on))
        return rows if ends_on is None else rows.filter(starts_on__lte=ends_on)


def ends_after_start(name: str) -> models.CheckConstraint:
    return models.CheckConstraint(
        condition=Q(ends_on__isnull=True) | Q(ends_on__gte=models.F("starts_on")),
        name=name,
    )


def _validate_dated_assignment(
    assignment, same_relation, *, needs: Role, as_what: str, duplicate: str
) -> None:
    """Refuse a member whose role cannot use the relation, or one held twice.

    A relation the member's role cannot use (a unit opens charts to nurses
    only) grants nothing, and a care-team role of another profession (a nurse
    as attending physician) misstates who treats the patient: either row would
    mislead whoever reads the care team. A second row for the same days leaves
    one behind, still granting access, when the other is ended. Overlap is
    checked here rather than by a constraint: SQLite has no exclusion
    constraint to express it.
    """
    errors = {}
    member = assignment.member if assignment.member_id is not None else None
    if member is not None and member.has_role(Role.ADMIN):
        errors["member"] = (
            f"{member.get_username()} administers the portal, and an account "
            "that assigns care relations is given none: use a clinical account."
        )
    elif member is not None and not member.is_clinician:
        errors["member"] = (
            f"{member.get_username()} holds neither the physician nor "
            "the nurse role: only clinicians can be given a care relation."
        )
    elif member is not None and not member.has_role(needs):
        errors["member"] = (
            f"{member.get_username()} does not hold the {needs.label.lower()} "
            f"role, which {as_what} needs."
        )
    ends_on, starts_on = assignment.ends_on, assignment.starts_on
    if ends_on is not None and starts_on is not None and ends_on < starts_on:
        errors["ends_on"] = (
            "The end comes before the start. The end date is the last day of "
            "access, included: to end access at once for a relation that began "
            "today, delete it."
        )
    elif starts_on is not None:
        _hold_member(assignment)
        others = same_relation.exclude(pk=assignment.pk).overlapping(starts_on, ends_on)
        if others.exists():
            errors[NON_FIELD_ERRORS] = duplicate
    if errors:
        raise ValidationError(errors)


def _hold_member(assignment) -> None:
    """Lock the member's account row until the caller's transaction ends.

    Two administrators saving the same member's relations at once then take
    turns, and the second one's overlap check sees the first one's row. Only
    inside a transaction (the admin saves in one); SQLite ignores the lock and
    serialises writers instead.
    """
    if assignment.member_id is None:
        return
    connection = transaction.get_connection(router.db_for_write(type(assignment)))
    if connection.in_atomic_block:
        user_model = type(assignment).member.field.related_model
        list(user_model.objects.select_for_update().filter(pk=assignment.member_id))


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

    objects = DatedAssignmentQuerySet.as_manager()

    class Meta:
        constraints = [ends_after_start("care_team_ends_after_start")]
        indexes = [models.Index(fields=["member", "patient"])]

    def __str__(self):
        return f"Care team membership {self.pk}"

    def clean(self):
        physician = self.role in (CareTeamRole.ATTENDING, CareTeamRole.CONSULTING)
        label = dict(CareTeamRole.choices).get(self.role)
        _validate_dated_assignment(
            self,
            CareTeamMembership.objects.filter(
                member_id=self.member_id, patient_id=self.patient_id
            ),
            needs=Role.PHYSICIAN if physician else Role.NURSE,
            as_what=f"the care-team role {label.lower()}" if label else "this role",
            duplicate="This member is already on this patient's care team for "
            "some of these days: change that membership instead.",
        )

    def audit_description(self) -> str:
        """What the relation opens, for the audit trail: no patient identity."""
        return (
            f"care team: {self.member.get_username()} as {self.role}, "
            f"{self.starts_on} to {self.ends_on or 'open'}"
        )


class Sensitivity(models.TextChoices):
    """Categories that even the care team sees only with a matching grant."""

    ROUTINE = "", "Routine"
    PSYCHOTHERAPY = "psychotherapy", "Psychotherapy notes"
    SUBSTANCE_USE = "substance_use", "Substance-use treatment"
    HIV = "hiv", "HIV"
    GENETIC = "genetic", "Genetic results"

    @property
    def permission(self) -> str:
        return f"records.view_{self.value}"


class ClinicalRecord(SealedModel):
    """Fields every clinical record shares."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="+")
    # HMAC of the source resource's type and id: makes re-import idempotent
    # without keeping the source id in clear.
    source_key = models.CharField(max_length=INDEX_LENGTH)
    occurred_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=32, blank=True, default="")
    code = EncryptedTextField(blank=True, default="")
    # Sealed inside the code's value, with the record's other short texts:
    # a chart's row opens with one AES-GCM call rather than three.
    description = EncryptedTextField(blank=True, default="", sealed_with="code")
    sensitivity = models.CharField(
        max_length=16, choices=Sensitivity.choices, blank=True, default=""
    )

    objects = ClinicalQuerySet.as_manager()

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
    reason = EncryptedTextField(blank=True, default="", sealed_with="code")

    Meta = _clinical_meta("encounter")


class Condition(ClinicalRecord):
    abated_at = models.DateTimeField(null=True, blank=True)

    Meta = _clinical_meta("condition")


class MedicationRequest(ClinicalRecord):
    dosage = EncryptedTextField(blank=True, default="", sealed_with="code")

    Meta = _clinical_meta("medicationrequest")


class AllergyIntolerance(ClinicalRecord):
    category = models.CharField(max_length=32, blank=True, default="")
    criticality = models.CharField(max_length=32, blank=True, default="")
    reaction = EncryptedTextField(blank=True, default="", sealed_with="code")

    Meta = _clinical_meta("allergyintolerance")


class ObservationCategory(models.TextChoices):
    VITAL_SIGNS = "vital-signs", "Vital signs"
    LABORATORY = "laboratory", "Laboratory"
    OTHER = "other", "Other"


class Observation(ClinicalRecord):
    category = models.CharField(
        max_length=16, choices=ObservationCategory.choices, default="other"
    )
    value = EncryptedTextField(blank=True, default="", sealed_with="code")

    Meta = _clinical_meta("observation")

    @property
    def printed_value(self) -> str:
        """The value with its unit as a chart prints it (mmHg, °C, no {score})."""
        return printed_value(self.value)


class Immunization(ClinicalRecord):
    Meta = _clinical_meta("immunization")


class Procedure(ClinicalRecord):
    Meta = _clinical_meta("procedure")


class NoteKind(models.TextChoices):
    PROGRESS = "progress", "Progress note"
    NURSING = "nursing", "Nursing note"
    PSYCHOTHERAPY = "psychotherapy", "Psychotherapy note"


class ClinicalNote(ClinicalRecord):
    """A note written in the portal; ``description`` holds its title."""

    kind = models.CharField(max_length=16, choices=NoteKind.choices)
    body = EncryptedTextField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )

    Meta = _clinical_meta("clinicalnote")


class NoteDraft(SealedModel):
    """A note its author had not sent when the idle warning showed.

    The page keeps it then, before the sign-out, and the notes form gives it
    back when the author opens the chart again. Not part of the chart:
    only its author sees it, and it is gone once the note is saved or
    discarded.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=NoteKind.choices)
    title = EncryptedTextField(blank=True, default="")
    body = EncryptedTextField(blank=True, default="")
    kept_at = models.DateTimeField()

    objects = SealedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["author", "patient"], name="one_kept_note_per_author_and_chart"
            )
        ]

    def __str__(self):
        return f"Kept note {self.pk}"


def clinical_record_models() -> list[type[ClinicalRecord]]:
    """Every kind of clinical record a chart holds."""
    return [
        model for model in ClinicalRecord.__subclasses__() if not model._meta.abstract
    ]


class SensitiveRecordTally(models.Model):
    """How many records of one sensitive category a patient's chart holds.

    Every chart open tells the reader how many records are withheld from
    them; counting across every clinical table on each open cost more than
    the rest of the summary. The tally is kept by every path that creates or
    removes a sensitive record (bulk_create, save, delete); a write that
    could change a record without loading it is refused by ClinicalQuerySet.
    """

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="+")
    sensitivity = models.CharField(max_length=16, choices=Sensitivity.choices)
    records = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "sensitivity"], name="unique_sensitive_tally"
            ),
        ]

    def __str__(self):
        return f"Sensitive record tally {self.pk}"


def recount_sensitive_records(patient_ids) -> None:
    """Count again, from the records themselves, the tallies of these patients.

    The patients' rows are locked first: two notes written at once on one
    chart then recount one after the other, the second seeing the first's
    record, instead of both replacing the same tallies.
    """
    patient_ids = set(patient_ids)
    if not patient_ids:
        return

    with transaction.atomic():
        locked = Patient.objects.select_for_update().filter(pk__in=patient_ids)
        list(locked.order_by("pk").values_list("pk", flat=True))

        counts: dict[tuple, int] = {}
        for model in clinical_record_models():
            rows = (
                model.objects.filter(patient_id__in=patient_ids)
                .exclude(sensitivity=Sensitivity.ROUTINE)
                .order_by()
                .values_list("patient_id", "sensitivity")
                .annotate(records=models.Count("pk"))
            )
            for patient_id, sensitivity, records in rows:
                key = (patient_id, sensitivity)
                counts[key] = counts.get(key, 0) + records

        tallies = SensitiveRecordTally.objects
        tallies.filter(patient_id__in=patient_ids).delete()
        tallies.bulk_create(
            SensitiveRecordTally(patient_id=patient_id, sensitivity=sensitivity,
                                 records=records)
            for (patient_id, sensitivity), records in counts.items()
        )  # fmt: skip


def _recount_after_save(sender, instance, created, raw=False, **kwargs):
    # A new routine record changes no tally; any other save may have changed
    # the record's category, so its patient is counted again.
    if raw or (created and not instance.sensitivity):
        return
    recount_sensitive_records({instance.patient_id})


def _recount_after_delete(sender, instance, **kwargs):
    if instance.sensitivity:
        recount_sensitive_records({instance.patient_id})


for _model in clinical_record_models():
    post_save.connect(_recount_after_save, sender=_model)
    post_delete.connect(_recount_after_delete, sender=_model)


class Unit(models.Model):
    """A ward or unit; nurses assigned to it reach the patients admitted there."""

    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)

    def __str__(self):
        return self.name


class UnitAssignment(models.Model):
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="staff")
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    starts_on = models.DateField(default=timezone.localdate)
    ends_on = models.DateField(null=True, blank=True)

    objects = DatedAssignmentQuerySet.as_manager()

    class Meta:
        constraints = [ends_after_start("unit_assignment_ends_after_start")]

    def __str__(self):
        return f"Unit assignment {self.pk}"

    def clean(self):
        _validate_dated_assignment(
            self,
            UnitAssignment.objects.filter(
                member_id=self.member_id, unit_id=self.unit_id
            ),
            # Only nurses reach charts through their unit (records.access).
            needs=Role.NURSE,
            as_what="a unit assignment",
            duplicate="This member is already assigned to this unit for some of "
            "these days: change that assignment instead.",
        )

    def audit_description(self) -> str:
        return (
            f"unit {self.unit.code}: {self.member.get_username()}, "
            f"{self.starts_on} to {self.ends_on or 'open'}"
        )


class AdmissionQuerySet(models.QuerySet):
    def under_way_at(self, moment):
        """Stays the patient is on the unit for at ``moment``.

        Admitted by then and not yet discharged: an admission entered ahead
        of time gives the unit's nurses nothing before it starts, and a
        planned discharge keeps them on the chart until it comes.
        """
        return self.filter(admitted_at__lte=moment).filter(
            Q(discharged_at__isnull=True) | Q(discharged_at__gt=moment)
        )


class Admission(models.Model):
    """A patient's stay on a unit, from ``admitted_at`` until ``discharged_at``."""

    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, related_name="admissions"
    )
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="admissions")
    admitted_at = models.DateTimeField(default=timezone.now)
    discharged_at = models.DateTimeField(null=True, blank=True)

    objects = AdmissionQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(discharged_at__isnull=True)
                | Q(discharged_at__gte=models.F("admitted_at")),
                name="admission_discharged_after_admitted",
            ),
        ]

    def __str__(self):
        return f"Admission {self.pk}"

    def audit_description(self) -> str:
        discharged = ", discharged" if self.discharged_at else ""
        return f"admission to unit {self.unit.code}{discharged}"


class BreakGlassReason(models.TextChoices):
    EMERGENCY = "emergency", "Emergency treatment"
    UNCONSCIOUS = "unconscious", "Patient cannot consent"
    COVERING = "covering", "Covering for the care team"
    OTHER = "other", "Other urgent need"


class BreakGlassReview(models.TextChoices):
    APPROPRIATE = "appropriate", "Appropriate"
    INAPPROPRIATE = "inappropriate", "Inappropriate: refer for sanction"
    FOLLOW_UP = "follow_up", "Needs follow-up"


class BreakGlassAccessQuerySet(models.QuerySet):
    def active_at(self, moment):
        return self.filter(started_at__lte=moment, expires_at__gt=moment)

    def awaiting_review(self):
        return self.filter(reviewed_at__isnull=True)


class BreakGlassAccess(SealedModel):
    """Emergency access to one patient off the care team, time-limited and reviewed."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinician = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=16, choices=BreakGlassReason.choices)
    # The justification may describe the patient's condition: sealed like PHI.
    justification = EncryptedTextField()
    started_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_outcome = models.CharField(
        max_length=16, choices=BreakGlassReview.choices, blank=True, default=""
    )
    review_note = EncryptedTextField(blank=True, default="")

    objects = BreakGlassAccessQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["clinician", "patient", "-expires_at"])]

    def __str__(self):
        return f"Break-glass access {self.pk}"
