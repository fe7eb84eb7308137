"""The access decision: the one place that says who may touch which chart.

Every view, command and task that reads or writes PHI asks ``decide``. It
denies by default and on any error (fail closed). Title alone never opens a
chart; a care relationship does: care-team membership, a nurse's unit where
the patient is admitted, or an unexpired break-the-glass grant
(45 CFR 164.312(a)(1) access control; 164.502(b) minimum necessary).

The table of who may do what is docs/ACCESS.md; the matrix test reads it.
"""

import logging
from dataclasses import dataclass

from django.db import connections, models, router
from django.utils import timezone

from accounts.roles import Role
from records.models import (
    Admission,
    BreakGlassAccess,
    CareTeamMembership,
    Patient,
    UnitAssignment,
)

logger = logging.getLogger(__name__)


class ChartAction(models.TextChoices):
    VIEW = "view", "Read the chart"
    WRITE = "write", "Add to the chart"
    REVIEW_IDENTITY = "review_identity", "See identity for a compliance review"
    BREAK_GLASS = "break_glass", "Request emergency access"


class Purpose(models.TextChoices):
    TREATMENT = "treatment", "Treatment"
    EMERGENCY = "emergency", "Emergency (break-the-glass)"
    COMPLIANCE_REVIEW = "compliance_review", "Compliance review"


class Relation(models.TextChoices):
    CARE_TEAM = "care_team", "Care team"
    UNIT = "unit", "Unit nurse"
    BREAK_GLASS = "break_glass", "Break-the-glass"
    COMPLIANCE = "compliance", "Compliance review"
    NONE = "none", "No care relationship"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    relation: Relation = Relation.NONE
    break_glass_until: object = None

    def __bool__(self):
        return self.allowed


def _deny(reason: str) -> Decision:
    return Decision(allowed=False, reason=reason)


# CareTeamMembership.objects.active_on(day).filter(member=, patient=).exists(),
# written out whole: asked on every chart open, where the ORM spent more time
# building the question than the database took to answer it.
ACTIVE_MEMBERSHIP = """
    SELECT 1 FROM records_careteammembership
    WHERE member_id = %s AND patient_id = %s
      AND starts_on <= %s AND (ends_on IS NULL OR ends_on >= %s)
    LIMIT 1
"""


def has_care_team_membership(user, patient: Patient) -> bool:
    connection = connections[router.db_for_read(CareTeamMembership)]
    fields = CareTeamMembership._meta
    today = connection.ops.adapt_datefield_value(timezone.localdate())
    parameters = [
        fields.get_field("member").get_db_prep_value(user.pk, connection),
        fields.get_field("patient").get_db_prep_value(patient.pk, connection),
        today,
        today,
    ]
    with connection.cursor() as cursor:
        cursor.execute(ACTIVE_MEMBERSHIP, parameters)
        return cursor.fetchone() is not None


def _admitted_to_my_unit(user, patient: Patient) -> bool:
    if not user.has_role(Role.NURSE):
        return False
    my_units = UnitAssignment.objects.active_on(timezone.localdate()).filter(
        member=user
    )
    return (
        Admission.objects.under_way_at(timezone.now())
        .filter(patient=patient, unit_id__in=my_units.values("unit_id"))
        .exists()
    )


def active_break_glass(user, patient: Patient) -> BreakGlassAccess | None:
    return (
        BreakGlassAccess.objects.active_at(timezone.now())
        .filter(clinician=user, patient=patient)
        .order_by("-expires_at")
        .first()
    )


def _care_relation(user, patient: Patient) -> Decision:
    if has_care_team_membership(user, patient):
        return Decision(True, "care team member", Relation.CARE_TEAM)
    if _admitted_to_my_unit(user, patient):
        return Decision(True, "nurse on the patient's unit", Relation.UNIT)
    grant = active_break_glass(user, patient)
    if grant is not None:
        return Decision(True, "break-the-glass", Relation.BREAK_GLASS, grant.expires_at)
    return _deny("not on the patient's care team")


def _decide(user, patient: Patient, action: ChartAction, purpose: Purpose) -> Decision:
    if not user.is_authenticated or not user.is_active:
        return _deny("not signed in")
    if not user.is_verified():
        return _deny("second factor not verified")

    if action == ChartAction.REVIEW_IDENTITY:
        if purpose == Purpose.COMPLIANCE_REVIEW and user.has_role(
            Role.COMPLIANCE_OFFICER
        ):
            return Decision(True, "compliance review", Relation.COMPLIANCE)
        return _deny("identity reviews are for compliance officers")

    if not user.is_clinician:
        return _deny("role does not treat patients")

    if action == ChartAction.BREAK_GLASS:
        if has_care_team_membership(user, patient):
            return _deny("already on the care team")
        return Decision(True, "emergency access may be requested")

    if purpose not in (Purpose.TREATMENT, Purpose.EMERGENCY):
        return _deny("purpose not permitted")
    return _care_relation(user, patient)


def decide(user, patient: Patient, action: ChartAction, purpose: Purpose) -> Decision:
    """Allow or deny ``user`` doing ``action`` on ``patient`` for ``purpose``.

    Returns a Decision whose ``reason`` is safe to record (no PHI) and whose
    ``relation`` says how access was granted. Any exception while deciding is
    a denial, never an accidental allow.
    """
    try:
        return _decide(user, patient, ChartAction(action), Purpose(purpose))
    except Exception:
        logger.exception("Access decision failed; denying")
        return _deny("access decision error")


def patients_in_care_of(user):
    """Patients a clinician may open today through the care team or their unit.

    Break-the-glass patients are left out on purpose: emergency access is to
    one chart, reached from that chart, never a way to widen lists or search.
    """
    if not (user.is_authenticated and user.is_verified() and user.is_clinician):
        return Patient.objects.none()

    today = timezone.localdate()
    on_team = CareTeamMembership.objects.active_on(today).filter(member=user)
    reachable = models.Q(pk__in=on_team.values("patient_id"))
    if user.has_role(Role.NURSE):
        my_units = UnitAssignment.objects.active_on(today).filter(member=user)
        on_my_units = Admission.objects.under_way_at(timezone.now()).filter(
            unit_id__in=my_units.values("unit_id")
        )
        reachable |= models.Q(pk__in=on_my_units.values("patient_id"))
    return Patient.objects.filter(reachable)
