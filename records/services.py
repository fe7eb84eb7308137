"""Reads and writes of patient data, each behind the access decision and audited."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.http import Http404

from audit.models import AuditAction, AuditOutcome
from audit.services import record_event
from records import crypto
from records import mrn as mrn_rules
from records.access import ChartAction, Purpose, decide, patients_in_care_of
from records.models import (
    AllergyIntolerance,
    Condition,
    Encounter,
    Immunization,
    MedicationRequest,
    Observation,
    ObservationCategory,
    Patient,
    PatientIdentifier,
    Procedure,
)

logger = logging.getLogger(__name__)

IDENTITY_FIELDS = ("name", "birth_date", "mrn", "sex")


@dataclass(frozen=True)
class ChartSection:
    slug: str
    title: str
    model: type[models.Model]
    fields: tuple[str, ...]
    category: str | None = None

    @property
    def record_type(self) -> str:
        return self.model.__name__

    def records_for(self, patient: Patient):
        records = self.model.objects.filter(patient=patient)
        if self.category:
            records = records.filter(category=self.category)
        return records.order_by("-occurred_at", "pk")


CHART_SECTIONS = {
    section.slug: section
    for section in (
        ChartSection(
            "encounters", "Encounters", Encounter,
            ("occurred_at", "ended_at", "encounter_class", "description", "reason"),
        ),
        ChartSection(
            "conditions", "Conditions", Condition,
            ("occurred_at", "abated_at", "status", "description", "code"),
        ),
        ChartSection(
            "medications", "Medications", MedicationRequest,
            ("occurred_at", "status", "description", "dosage"),
        ),
        ChartSection(
            "allergies", "Allergies", AllergyIntolerance,
            ("occurred_at", "status", "criticality", "description", "reaction"),
        ),
        ChartSection(
            "immunizations", "Immunizations", Immunization,
            ("occurred_at", "status", "description"),
        ),
        ChartSection(
            "vitals", "Vital signs", Observation,
            ("occurred_at", "description", "value"),
            category=ObservationCategory.VITAL_SIGNS,
        ),
        ChartSection(
            "labs", "Laboratory results", Observation,
            ("occurred_at", "description", "value"),
            category=ObservationCategory.LABORATORY,
        ),
        ChartSection(
            "observations", "Other observations", Observation,
            ("occurred_at", "description", "value"),
            category=ObservationCategory.OTHER,
        ),
        ChartSection(
            "procedures", "Procedures", Procedure,
            ("occurred_at", "status", "description"),
        ),
    )
}  # fmt: skip


def get_chart_for(
    user,
    patient_id,
    *,
    record_type: str,
    fields: Iterable[str],
    purpose: Purpose = Purpose.TREATMENT,
) -> Patient:
    """Return the patient whose chart ``user`` may open, having audited the open.

    Raises Http404 for an unknown id, PermissionDenied when the decision
    denies, and AuditUnavailable when the evidence cannot be written; in each
    case the caller shows no PHI. Every outcome is audited.
    """
    patient = Patient.objects.filter(pk=patient_id).first()
    if patient is None:
        record_event(
            actor=user,
            action=AuditAction.ACCESS_DENIED,
            outcome=AuditOutcome.DENIED,
            patient_ref=str(patient_id),
            record_type=record_type,
            purpose=purpose,
            reason="unknown patient",
        )
        raise Http404("No such patient")

    decision = decide(user, patient, ChartAction.VIEW, purpose)
    if not decision:
        record_event(
            actor=user,
            action=AuditAction.ACCESS_DENIED,
            outcome=AuditOutcome.DENIED,
            patient_ref=patient.pk,
            record_type=record_type,
            purpose=purpose,
            reason=decision.reason,
        )
        raise PermissionDenied(decision.reason)

    record_event(
        actor=user,
        action=AuditAction.VIEWED,
        outcome=AuditOutcome.SUCCESS,
        patient_ref=patient.pk,
        record_type=record_type,
        fields=fields,
        purpose=purpose,
        reason=decision.reason,
    )
    return patient


@dataclass(frozen=True)
class PatientQuery:
    mrn: str = ""
    family_name: str = ""
    given_name: str = ""
    birth_date: str = ""

    def is_empty(self) -> bool:
        return not any((self.mrn, self.family_name, self.given_name, self.birth_date))

    @property
    def used_fields(self) -> list[str]:
        return [name for name, value in vars(self).items() if value]


def search_patients(user, query: PatientQuery) -> list[Patient]:
    """Exact search over blind indexes, limited to the user's own patients."""
    patients = patients_in_care_of(user)
    if query.mrn:
        patients = patients.filter(
            mrn_index=crypto.blind_index("mrn", mrn_rules.normalise(query.mrn))
        )
    if query.family_name:
        patients = patients.filter(
            family_name_index=crypto.blind_index("family", query.family_name)
        )
    if query.given_name:
        patients = patients.filter(
            given_name_index=crypto.blind_index("given", query.given_name)
        )
    if query.birth_date:
        patients = patients.filter(
            birth_date_index=crypto.blind_index("birth_date", query.birth_date)
        )

    found = sorted(patients[:200], key=_name_order)
    record_event(
        actor=user,
        action=AuditAction.PATIENT_SEARCH,
        outcome=AuditOutcome.SUCCESS,
        record_type="Patient",
        fields=query.used_fields,
        purpose=Purpose.TREATMENT,
        reason=f"{len(found)} match(es)",
    )
    return found


def list_my_patients(user) -> list[Patient]:
    """The user's care-team patients by name, with the listing audited."""
    patients = sorted(patients_in_care_of(user), key=_name_order)
    record_event(
        actor=user,
        action=AuditAction.PATIENT_LIST,
        outcome=AuditOutcome.SUCCESS,
        record_type="Patient",
        fields=IDENTITY_FIELDS,
        purpose=Purpose.TREATMENT,
        reason=f"{len(patients)} patient(s)",
    )
    return patients


def _name_order(patient: Patient):
    return (patient.family_name.casefold(), patient.given_name.casefold())


def chart_summary(patient: Patient) -> dict:
    """A lean first page: what a clinician checks first, never whole histories."""
    return {
        "conditions": list(
            Condition.objects.filter(patient=patient, abated_at__isnull=True)
            .exclude(status="resolved")
            .order_by("-occurred_at")[:10]
        ),
        "allergies": list(
            AllergyIntolerance.objects.filter(patient=patient).order_by("-occurred_at")[
                :10
            ]
        ),
        "medications": list(
            MedicationRequest.objects.filter(patient=patient, status="active").order_by(
                "-occurred_at"
            )[:10]
        ),
        "vitals": latest_vitals(patient),
        "encounters": list(
            Encounter.objects.filter(patient=patient).order_by("-occurred_at")[:5]
        ),
    }


SUMMARY_FIELDS = (
    "conditions.description", "allergies.description", "medications.description",
    "vitals.value", "encounters.description",
)  # fmt: skip


def latest_vitals(patient: Patient, limit: int = 40) -> list[Observation]:
    """The most recent value of each vital sign, from the latest readings."""
    recent = Observation.objects.filter(
        patient=patient, category=ObservationCategory.VITAL_SIGNS
    ).order_by("-occurred_at")[:limit]
    latest: dict[str, Observation] = {}
    for observation in recent:
        latest.setdefault(observation.code, observation)
    return list(latest.values())[:8]


@transaction.atomic
def register_patient(
    *,
    given_name: str,
    family_name: str,
    birth_date,
    source: str,
    sex: str = "",
    address: str = "",
    telecom: str = "",
    deceased_on=None,
    identifiers: Iterable[tuple[str, str]] = (),
) -> Patient:
    """Create a patient with a fresh MRN and its external identifiers."""
    patient = Patient(
        given_name=given_name,
        family_name=family_name,
        birth_date=birth_date,
        sex=sex,
        address=address,
        telecom=telecom,
        deceased_on=deceased_on,
        source=source,
        mrn=_unused_mrn(),
    )
    patient.refresh_indexes()
    patient.save()
    for system, value in identifiers:
        PatientIdentifier.objects.create(
            patient=patient,
            system=system,
            value=value,
            value_index=identifier_index(system, value),
        )
    return patient


def _unused_mrn() -> str:
    for _attempt in range(20):
        candidate = mrn_rules.generate()
        index = crypto.blind_index("mrn", candidate)
        if not Patient.objects.filter(mrn_index=index).exists():
            return candidate
    raise RuntimeError("could not find an unused MRN")


def identifier_index(system: str, value: str) -> str:
    return crypto.blind_index(f"identifier:{system}", value)


def find_patient_by_identifier(system: str, value: str) -> Patient | None:
    match = (
        PatientIdentifier.objects.filter(
            system=system, value_index=identifier_index(system, value)
        )
        .select_related("patient")
        .first()
    )
    return match.patient if match else None


def patient_ref_for_mrn(mrn: str) -> str | None:
    """The opaque reference of the patient with this MRN (for the audit screens)."""
    if not mrn_rules.is_valid(mrn):
        return None
    index = crypto.blind_index("mrn", mrn_rules.normalise(mrn))
    patient_id = Patient.objects.filter(mrn_index=index).values_list("pk", flat=True)
    found = patient_id.first()
    return str(found) if found else None


def mrn_labels_for_refs(refs: Iterable[str]) -> dict[str, str]:
    """MRNs for opaque references, for compliance review screens only."""
    valid_refs = set()
    for ref in refs:
        try:
            valid_refs.add(str(Patient._meta.pk.to_python(ref)))
        except Exception:  # noqa: S112 (an unknown reference just gets no label)
            continue
    patients = Patient.objects.filter(pk__in=valid_refs).only("pk", "mrn")
    return {str(patient.pk): patient.mrn_display for patient in patients}
