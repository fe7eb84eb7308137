"""Reads and writes of patient data, each behind the access decision and audited."""

import datetime
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.http import Http404
from django.utils import timezone

from accounts.roles import Role
from audit.models import CHART_ACCESS_ACTIONS, AuditAction, AuditEvent, AuditOutcome
from audit.services import (
    count_events_for_patient,
    recent_events_for_patient,
    recent_events_query,
    record_event,
    record_events,
)
from ehr_portal.logging import error_kind
from records import crypto
from records import mrn as mrn_rules
from records.access import (
    ChartAction,
    Decision,
    Purpose,
    Relation,
    decide,
    patients_in_care_of,
)
from records.chart_queries import CompiledChartQuery
from records.models import (
    AllergyIntolerance,
    ClinicalNote,
    Condition,
    Encounter,
    Immunization,
    MedicationRequest,
    NoteDraft,
    NoteKind,
    Observation,
    ObservationCategory,
    Patient,
    PatientIdentifier,
    Procedure,
    SensitiveRecordTally,
    Sensitivity,
)
from records.sensitivity import categories_visible_to

logger = logging.getLogger(__name__)

IDENTITY_FIELDS = ("name", "birth_date", "mrn", "sex")


# Records of one moment fall to their key, so that a page (or the summary's
# cut at ten) is the same on every open.
NEWEST_FIRST = ("-occurred_at", "pk")


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

    def all_records_for(self, patient: Patient):
        records = self.model.objects.filter(patient=patient)
        if self.category:
            records = records.filter(category=self.category)
        return records

    def records_for(self, chart: "Chart"):
        """The section's records the chart's reader may see, newest first."""
        records = self.all_records_for(chart.patient)
        return records.filter(sensitivity__in=chart.visible_categories).order_by(
            *NEWEST_FIRST
        )

    def withheld_count(self, chart: "Chart") -> int:
        return (
            self.all_records_for(chart.patient)
            .exclude(sensitivity__in=chart.visible_categories)
            .count()
        )


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
        ChartSection(
            "notes", "Notes", ClinicalNote,
            ("occurred_at", "kind", "description", "body", "author"),
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Chart:
    """A patient's chart as one reader may see it, after the decision allowed it."""

    patient: Patient
    decision: Decision
    visible_categories: frozenset[str]
    requested_purpose: Purpose = Purpose.TREATMENT

    @property
    def is_break_glass(self) -> bool:
        return self.decision.relation == Relation.BREAK_GLASS


def open_chart(
    user,
    patient_id,
    *,
    record_type: str,
    fields: Iterable[str],
    action: ChartAction = ChartAction.VIEW,
    purpose: Purpose = Purpose.TREATMENT,
) -> Chart:
    """Return the chart ``user`` may open, having audited the open.

    Raises Http404 for an unknown id, PermissionDenied when the decision
    denies, and AuditUnavailable when the evidence cannot be written; in each
    case the caller shows no PHI. Every outcome is audited.
    """
    chart = decide_chart(
        user, patient_id, record_type=record_type, action=action, purpose=purpose
    )
    record_chart_open(user, chart, record_type=record_type, fields=fields)
    return chart


def decide_chart(
    user,
    patient_id,
    *,
    record_type: str,
    action: ChartAction = ChartAction.VIEW,
    purpose: Purpose = Purpose.TREATMENT,
) -> Chart:
    """The chart ``user`` may open, decided but not yet recorded as opened.

    For a caller that must look at the request against the chart first (a
    page number past the end shows nothing, so opens nothing); it must show
    nothing from the chart before ``record_chart_open`` has returned.
    Refusals are raised and recorded as by ``open_chart``.
    """
    patient, decision = _decided(user, patient_id, action, purpose, record_type)
    # Raises IntegrityError before anything is recorded as shown: a section
    # needs no name on it, but its records may not be this patient's.
    patient.check_identity()
    return Chart(
        patient,
        decision,
        frozenset(categories_visible_to(user)),
        requested_purpose=purpose,
    )


def record_chart_open(user, chart: Chart, *, record_type: str, fields) -> None:
    """Record that ``user`` is shown ``fields`` of a decided chart."""
    record_event(
        actor=user,
        action=AuditAction.VIEWED,
        outcome=AuditOutcome.SUCCESS,
        patient_ref=chart.patient.pk,
        record_type=record_type,
        fields=fields,
        purpose=_purpose_for(chart.decision, chart.requested_purpose),
        reason=chart.decision.reason,
    )


# Every chart open reads its patient first: compiled once, like the summary.
_PATIENT_BY_ID = CompiledChartQuery(
    Patient,
    lambda patient_id, _categories: Patient.objects.filter(pk=patient_id),
    patient_field="id",
)


def _decided(user, patient_id, action, purpose, record_type):
    """(patient, decision) when the access decision allows ``action``.

    Raises Http404 for an unknown id and PermissionDenied when the decision
    denies, each after recording the refusal.
    """
    found = _PATIENT_BY_ID.run(patient_id)
    if not found:
        refuse_unknown_patient(
            user, patient_id, record_type=record_type, purpose=purpose
        )
    patient = found[0]
    decision = decide(user, patient, action, purpose)
    if decision:
        return patient, decision

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


def refuse_unknown_patient(user, patient_id, *, record_type: str, purpose) -> None:
    """Record an open of an id that names no patient, and raise Http404."""
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


def _purpose_for(decision: Decision, requested: Purpose) -> str:
    if decision.relation == Relation.BREAK_GLASS:
        return Purpose.EMERGENCY.value
    return Purpose(requested).value


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


class SearchRateExceeded(Exception):
    """Too many searches in the last minute: a brake on bulk extraction."""


class SearchUnavailable(Exception):
    """The search brake's counter cannot be reached, so no search is run."""


def _check_search_rate(user) -> None:
    try:
        searches = _count_search(user)
    except Exception as error:
        # Fail closed: without its brake, search would be a way to harvest
        # the patient list. The user's own list needs no counter and works.
        logger.error("Search rate counter unavailable (%s)", error_kind(error))
        record_event(
            actor=user, action=AuditAction.ACCESS_DENIED, outcome=AuditOutcome.DENIED,
            record_type="PatientSearch", reason="search rate counter unavailable",
        )  # fmt: skip
        raise SearchUnavailable("patient search is unavailable for a moment") from error
    if searches > settings.PATIENT_SEARCHES_PER_MINUTE:
        record_event(
            actor=user, action=AuditAction.ACCESS_DENIED, outcome=AuditOutcome.DENIED,
            record_type="PatientSearch", reason="search rate exceeded",
        )  # fmt: skip
        raise SearchRateExceeded("too many searches; wait a minute")


# A refused searcher may search again within this many seconds (Retry-After).
SEARCH_WINDOW_SECONDS = 60


def _count_search(user) -> int:
    # The window opens at the user's first search and lasts a minute, so a
    # burst cannot straddle a clock-minute boundary to get twice the quota.
    key = f"patient-search:{user.pk}"
    cache.add(key, 0, timeout=SEARCH_WINDOW_SECONDS)
    try:
        return cache.incr(key)
    except ValueError:  # the window closed between add and incr
        cache.add(key, 1, timeout=SEARCH_WINDOW_SECONDS)
        return 1


@dataclass(frozen=True)
class UnreadablePatient:
    """A listed patient whose identity failed its integrity check.

    Listed by id only, so that one damaged row does not cost the clinician
    the rest of their list, and nothing read from it is shown.
    """

    pk: uuid.UUID
    unreadable: bool = True
    mrn: None = None
    family_name: None = None
    given_name: None = None
    birth_date: None = None
    sex: None = None

    @property
    def id(self) -> uuid.UUID:
        return self.pk


def _by_name(user, patients) -> tuple[list[Patient | UnreadablePatient], int]:
    """Readable patients by name, then those whose identity does not open."""
    readable, unreadable = [], []
    for patient in patients:
        if identity_opens(user, patient):
            readable.append(patient)
        else:
            unreadable.append(UnreadablePatient(patient.pk))
    return sorted(readable, key=_name_order) + unreadable, len(unreadable)


def identity_opens(user, patient: Patient) -> bool:
    """Whether ``patient``'s identity passes its integrity check.

    For lists and reports, which go on without it: a failure is logged and
    recorded as an integrity failure, as a chart that does not open is.
    """
    try:
        patient.check_identity()
    except crypto.IntegrityError as error:
        logger.error("Patient record unreadable: %s", error_kind(error))
        record_event(
            actor=user,
            action=AuditAction.INTEGRITY_FAILURE,
            outcome=AuditOutcome.FAILURE,
            patient_ref=patient.pk,
            record_type="Patient",
            reason="identity failed its integrity check; shown as unreadable",
        )
        return False
    return True


def _unreadable(patient) -> bool:
    return getattr(patient, "unreadable", False)


def _unreadable_note(unreadable: int) -> str:
    return f", {unreadable} unreadable" if unreadable else ""


def _name_order(patient: Patient):
    return (patient.family_name.casefold(), patient.given_name.casefold())


def search_patients(user, query: PatientQuery) -> list[Patient | UnreadablePatient]:
    """Exact search over blind indexes, limited to the user's own patients."""
    _check_search_rate(user)
    patients = patients_in_care_of(user)
    if query.mrn:
        patients = patients.filter(
            mrn_index__in=crypto.blind_index_candidates(
                "mrn", mrn_rules.normalise(query.mrn)
            )
        )
    if query.family_name:
        patients = patients.filter(
            family_name_index__in=crypto.blind_index_candidates(
                "family", query.family_name
            )
        )
    if query.given_name:
        patients = patients.filter(
            given_name_index__in=crypto.blind_index_candidates(
                "given", query.given_name
            )
        )
    if query.birth_date:
        patients = patients.filter(
            birth_date_index__in=crypto.blind_index_candidates(
                "birth_date", query.birth_date
            )
        )

    found, unreadable = _by_name(user, patients[:200])
    _record_listing(
        user, AuditAction.PATIENT_SEARCH, found, fields=query.used_fields,
        reason=f"{len(found) - unreadable} match(es)" + _unreadable_note(unreadable),
    )  # fmt: skip
    return found


def list_my_patients(user) -> list[Patient | UnreadablePatient]:
    """The user's care-team patients by name, with the listing audited."""
    patients, unreadable = _by_name(user, patients_in_care_of(user))
    _record_listing(
        user, AuditAction.PATIENT_LIST, patients, fields=IDENTITY_FIELDS,
        reason=f"{len(patients) - unreadable} patient(s) listed"
        + _unreadable_note(unreadable),
    )  # fmt: skip
    return patients


def _record_listing(user, action: AuditAction, shown, *, fields, reason: str) -> None:
    """One event per patient a list names, naming that patient.

    A list discloses each patient's name, birth date and MRN, so "who saw
    this patient" must find it; a patient listed unreadable is named with no
    fields shown; a list with nobody on it is recorded once.
    """
    if not shown:
        record_event(
            actor=user, action=action, outcome=AuditOutcome.SUCCESS,
            record_type="Patient", fields=fields, purpose=Purpose.TREATMENT,
            reason=reason,
        )  # fmt: skip
        return
    record_events(
        actor=user, action=action, outcome=AuditOutcome.SUCCESS,
        records=[
            (str(patient.pk), "Patient", () if _unreadable(patient) else fields)
            for patient in shown
        ],
        purpose=Purpose.TREATMENT, reason=reason,
    )  # fmt: skip


def _newest_visible(model, limit: int, *, leave_out=None, **matching):
    """A compiled query for the reader's newest ``limit`` records of ``model``.

    Newest first as on the section pages, with only the sensitive
    categories the reader may see; ``matching`` filters, ``leave_out``
    excludes.
    """

    def build(patient_id, categories):
        records = model.objects.filter(
            patient_id=patient_id, sensitivity__in=categories, **matching
        )
        if leave_out:
            records = records.exclude(**leave_out)
        return records.order_by(*NEWEST_FIRST)[:limit]

    return CompiledChartQuery(model, build)


# How many records of each kind the summary shows, newest first.
SUMMARY_LIMITS = {"conditions": 10, "allergies": 10, "medications": 10, "encounters": 5}

# The summary's queries have the same shape on every open: compiled once
# (records.chart_queries), they cost the portal a fraction of building them.
# Each reads one record past its limit, to say when there are more: a
# clinician must not take the newest ten allergies for all of them.
_SUMMARY_QUERIES = {
    "conditions": _newest_visible(
        Condition,
        SUMMARY_LIMITS["conditions"] + 1,
        abated_at__isnull=True,
        leave_out={"status": "resolved"},
    ),
    "allergies": _newest_visible(AllergyIntolerance, SUMMARY_LIMITS["allergies"] + 1),
    "medications": _newest_visible(
        MedicationRequest, SUMMARY_LIMITS["medications"] + 1, status="active"
    ),
    "encounters": _newest_visible(Encounter, SUMMARY_LIMITS["encounters"] + 1),
}

_RECENT_VITAL_SIGNS = _newest_visible(
    Observation, 40, category=ObservationCategory.VITAL_SIGNS
)


def chart_summary(chart: Chart) -> dict:
    """A lean first page: what a clinician checks first, never whole histories."""
    patient, visible = chart.patient, chart.visible_categories
    summary = {"more": set()}
    for section, query in _SUMMARY_QUERIES.items():
        records = query.run(patient.pk, visible)
        limit = SUMMARY_LIMITS[section]
        summary[section] = records[:limit]
        if len(records) > limit:
            summary["more"].add(section)
    summary["vitals"] = latest_vitals(patient, visible)
    summary["withheld_count"] = withheld_in_chart(chart)
    return summary


_PATIENT_TALLIES = CompiledChartQuery(
    SensitiveRecordTally,
    lambda patient_id, _categories: SensitiveRecordTally.objects.filter(
        patient_id=patient_id
    ),
)


def withheld_in_chart(chart: Chart) -> int:
    """How many records across the chart the reader may not see.

    Read from the patient's sensitive-record tallies (one row per category
    the chart holds): one short query, where counting every clinical table
    cost more than the rest of the summary.
    """
    visible = chart.visible_categories
    return sum(
        tally.records
        for tally in _PATIENT_TALLIES.run(chart.patient.pk, ())
        if tally.sensitivity not in visible
    )


SUMMARY_FIELDS = (
    "conditions.description", "allergies.description", "medications.description",
    "vitals.value", "encounters.description",
)  # fmt: skip


def latest_vitals(patient: Patient, visible) -> list[Observation]:
    """The most recent value of each vital sign, from the latest 40 readings."""
    latest: dict[str, Observation] = {}
    for observation in _RECENT_VITAL_SIGNS.run(patient.pk, visible):
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
        indexes = crypto.blind_index_candidates("mrn", candidate)
        if not Patient.objects.filter(mrn_index__in=indexes).exists():
            return candidate
    raise RuntimeError("could not find an unused MRN")


def identifier_index(system: str, value: str) -> str:
    return crypto.blind_index(f"identifier:{system}", value)


def identifier_index_candidates(system: str, value: str) -> list[str]:
    return crypto.blind_index_candidates(f"identifier:{system}", value)


def find_patient_by_identifier(system: str, value: str) -> Patient | None:
    match = (
        PatientIdentifier.objects.filter(
            system=system,
            value_index__in=identifier_index_candidates(system, value),
        )
        .select_related("patient")
        .first()
    )
    return match.patient if match else None


def patient_ref_for_mrn(mrn: str) -> str | None:
    """The opaque reference of the patient with this MRN (for the audit screens)."""
    if not mrn_rules.is_valid(mrn):
        return None
    indexes = crypto.blind_index_candidates("mrn", mrn_rules.normalise(mrn))
    patient_id = Patient.objects.filter(mrn_index__in=indexes).values_list(
        "pk", flat=True
    )
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


class NoteRefused(Exception):
    """A note the author may not write (kind needs a grant they lack)."""


def note_kinds_for(writer) -> list[str]:
    """The kinds of note ``writer`` may write.

    A nursing note is a nurse's record of care, a psychotherapy note needs
    the psychotherapy grant; a progress note any clinician on the chart may
    write.
    """
    kinds = [NoteKind.PROGRESS.value]
    if writer.has_role(Role.NURSE):
        kinds.append(NoteKind.NURSING.value)
    if Sensitivity.PSYCHOTHERAPY.value in categories_visible_to(writer):
        kinds.append(NoteKind.PSYCHOTHERAPY.value)
    return kinds


# Why a kind of note outside note_kinds_for is refused.
_KIND_REFUSED = {
    NoteKind.NURSING: "nursing notes are written by nurses",
    NoteKind.PSYCHOTHERAPY: "psychotherapy notes need the psychotherapy grant",
}


def _note_sensitivity(kind: str, writer) -> Sensitivity:
    """The category a note of ``kind`` is filed under; NoteRefused if its
    writer may not write that kind (note_kinds_for)."""
    if kind not in note_kinds_for(writer):
        raise NoteRefused(_KIND_REFUSED.get(kind, "no such kind of note"))
    if kind == NoteKind.PSYCHOTHERAPY:
        return Sensitivity.PSYCHOTHERAPY
    return Sensitivity.ROUTINE


def refuse_unwritable_chart(author, patient_id, *, record_type: str) -> None:
    """Refuse, and record, a write to a chart the author may not add to.

    For a request to be checked before its body is: someone who may not
    write to a chart is told so, and leaves an event on its trail, however
    malformed what they sent.
    """
    _decided(author, patient_id, ChartAction.WRITE, Purpose.TREATMENT, record_type)


def add_note(*, author, patient_id, kind: str, title: str, body: str) -> ClinicalNote:
    """Write a note to a chart the author may add to, and audit it.

    One event says what happened: NOTE_CREATED, or ACCESS_DENIED when the
    chart or the kind of note is refused. Nothing of the chart is shown.
    """
    chart = decide_chart(
        author, patient_id, record_type="ClinicalNote", action=ChartAction.WRITE
    )
    try:
        sensitivity = _note_sensitivity(kind, author)
    except NoteRefused as refusal:
        record_event(
            actor=author, action=AuditAction.ACCESS_DENIED,
            outcome=AuditOutcome.DENIED, patient_ref=chart.patient.pk,
            record_type="ClinicalNote", fields=("kind",),
            purpose=_purpose_for(chart.decision, Purpose.TREATMENT),
            reason=str(refusal),
        )  # fmt: skip
        raise

    with transaction.atomic():
        note = ClinicalNote.objects.create(
            patient=chart.patient, author=author, kind=kind,
            description=title, body=body, sensitivity=sensitivity,
            occurred_at=timezone.now(), status="final",
            source_key=crypto.dedupe_tag("note", str(uuid.uuid4())),
        )  # fmt: skip
        record_event(
            actor=author, action=AuditAction.NOTE_CREATED,
            outcome=AuditOutcome.SUCCESS, patient_ref=chart.patient.pk,
            record_type="ClinicalNote", fields=("kind", "title", "body"),
            purpose=_purpose_for(chart.decision, Purpose.TREATMENT),
            reason=chart.decision.reason,
        )  # fmt: skip
        # A note kept at the idle warning has done its work once saved.
        NoteDraft.objects.filter(author=author, patient=chart.patient).delete()
    return note


def keep_note_draft(*, author, patient_id, kind: str, title: str, body: str) -> None:
    """Keep a note its author has not sent, for when they open the chart again.

    The notes page asks for this when the idle warning shows, so that an idle
    sign-out loses no typed text. Only a note its author may still add to
    the chart is kept; the keeping is audited like any write of PHI.
    """
    patient, decision = _decided(
        author, patient_id, ChartAction.WRITE, Purpose.TREATMENT, "NoteDraft"
    )
    _note_sensitivity(kind, author)

    purge_lapsed_note_drafts()
    with transaction.atomic():
        NoteDraft.objects.update_or_create(
            author=author, patient=patient,
            defaults={
                "kind": kind, "title": title, "body": body,
                "kept_at": timezone.now(),
            },
        )  # fmt: skip
        record_event(
            actor=author, action=AuditAction.NOTE_DRAFT_KEPT,
            outcome=AuditOutcome.SUCCESS, patient_ref=patient.pk,
            record_type="NoteDraft", fields=("kind", "title", "body"),
            purpose=_purpose_for(decision, Purpose.TREATMENT),
            reason=decision.reason,
        )  # fmt: skip


def kept_note_draft(author, patient) -> NoteDraft | None:
    """The note ``author`` had not sent on ``patient``'s chart, if one was kept.

    A kept note older than PORTAL_NOTE_DRAFT_DAYS is deleted instead: an
    unsent draft is not kept as long as the chart.
    """
    drafts = NoteDraft.objects.filter(author=author, patient=patient)
    drafts.filter(kept_at__lt=_oldest_draft_kept()).delete()
    return drafts.first()


def purge_lapsed_note_drafts() -> int:
    """Delete every kept note older than PORTAL_NOTE_DRAFT_DAYS; how many went.

    Run daily by Celery beat, and whenever a note is kept (tasks in-process):
    an author who never comes back does not leave their text for good.
    """
    deleted, _ = NoteDraft.objects.filter(kept_at__lt=_oldest_draft_kept()).delete()
    if deleted:
        logger.info("Deleted %d unsent note(s) kept past their time", deleted)
    return deleted


def _oldest_draft_kept() -> datetime.datetime:
    return timezone.now() - datetime.timedelta(days=settings.PORTAL_NOTE_DRAFT_DAYS)


def discard_note_draft(*, author, patient_id) -> bool:
    """Delete the author's kept note on this chart; False if there was none."""
    with transaction.atomic():
        deleted, _ = NoteDraft.objects.filter(
            author=author, patient_id=patient_id
        ).delete()
        if deleted:
            record_event(
                actor=author, action=AuditAction.NOTE_DRAFT_DISCARDED,
                outcome=AuditOutcome.SUCCESS, patient_ref=str(patient_id),
                record_type="NoteDraft",
            )  # fmt: skip
    return bool(deleted)


# The chart's ten latest access events, newest first in chain order: the
# reports' query (audit.services.recent_events_query), compiled once, as it
# runs on every chart open.
_RECENT_ACCESS = CompiledChartQuery(
    AuditEvent,
    lambda patient_id, _categories: recent_events_query(
        str(patient_id), CHART_ACCESS_ACTIONS, 10
    ),
    patient_field="patient_ref",
)


def recent_access(chart: Chart) -> list[dict]:
    """Who opened this chart lately and how, for the chart's transparency panel."""
    events = _RECENT_ACCESS.run(chart.patient.pk)
    return [
        {
            "username": event.actor_username,
            "role": event.actor_role,
            "when": event.occurred_at,
            "how": "break-the-glass"
            if event.purpose == Purpose.EMERGENCY
            else event.reason,
            "what": event.action_label,
            "emergency": event.purpose == Purpose.EMERGENCY,
        }
        for event in events
    ]


REPORTED_ACTIONS = (
    AuditAction.VIEWED,
    AuditAction.ACCESS_DENIED,
    AuditAction.NOTE_CREATED,
    AuditAction.BREAK_GLASS,
    AuditAction.BREAK_GLASS_REFUSED,
    AuditAction.IDENTITY_REVIEWED,
    AuditAction.INTEGRITY_FAILURE,
)

# The newest accesses the report lists; it says how many more the trail holds.
ACCESS_REPORT_ROWS = 200


def identity_review(reviewer, mrn: str) -> dict | None:
    """The "who viewed this patient" report: identity and access history only.

    For compliance officers, who see who the patient is and who touched the
    chart, but no clinical content.
    """
    patient = Patient.objects.filter(
        mrn_index__in=crypto.blind_index_candidates("mrn", mrn_rules.normalise(mrn))
    ).first()
    if patient is None:
        return None

    decision = decide(
        reviewer, patient, ChartAction.REVIEW_IDENTITY, Purpose.COMPLIANCE_REVIEW
    )
    outcome = AuditOutcome.SUCCESS if decision else AuditOutcome.DENIED
    # An identity that does not open is not shown: its review names no field.
    readable = bool(decision) and identity_opens(reviewer, patient)
    record_event(
        actor=reviewer,
        action=AuditAction.IDENTITY_REVIEWED if decision else AuditAction.ACCESS_DENIED,
        outcome=outcome, patient_ref=patient.pk, record_type="PatientIdentity",
        fields=IDENTITY_FIELDS if readable or not decision else (),
        purpose=Purpose.COMPLIANCE_REVIEW, reason=decision.reason,
    )  # fmt: skip
    if not decision:
        raise PermissionDenied(decision.reason)

    # The history holds no identity: it is reported even when the identity
    # does not open, as that patient is the one a reviewer must look into.
    return {
        "patient": patient,
        "mrn_display": mrn_rules.display(mrn_rules.normalise(mrn)),
        "identity_readable": readable,
        "events": recent_events_for_patient(
            str(patient.pk), REPORTED_ACTIONS, ACCESS_REPORT_ROWS
        ),
        "total": count_events_for_patient(str(patient.pk), REPORTED_ACTIONS),
    }


def record_care_relation_change(
    *, actor, relation, what: str, fields=(), before=None
) -> None:
    """Audit a change to who may open which chart, made by an administrator.

    A care-team membership, a unit assignment or an admission opens charts to
    someone, so adding, changing or ending one is evidence like a chart open.
    ``before`` is the relation as it was stored: a change names the old state
    too, and a change of patient also leaves an event on the old patient's
    trail, where someone has just lost access. Raises AuditUnavailable, so
    that the caller's transaction undoes it.
    """
    description = relation.audit_description()
    old_patient = getattr(before, "patient_id", None)
    new_patient = getattr(relation, "patient_id", None)
    events = []
    if before is not None:
        description = f"{before.audit_description()} -> {description}"
        if old_patient != new_patient:
            events.append((old_patient, f"moved to another patient: {description}"))
    events.append((new_patient, f"{what}: {description}"))

    for patient_id, reason in events:
        record_event(
            actor=actor,
            action=AuditAction.CARE_RELATION_CHANGED,
            outcome=AuditOutcome.SUCCESS,
            patient_ref=str(patient_id or ""),
            record_type=type(relation).__name__,
            fields=list(fields),
            reason=reason,
        )
