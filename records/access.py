"""The access decision: the one place that says who may touch which chart.

Every view, command and task that reads or writes PHI asks ``decide``. It
denies by default and on any error (fail closed); title alone never opens a
chart, the care relationship does (45 CFR 164.312(a)(1), access control;
164.502(b), minimum necessary).
"""

import logging
from dataclasses import dataclass

from django.db import models
from django.utils import timezone

from records.models import CareTeamMembership, Patient

logger = logging.getLogger(__name__)


class ChartAction(models.TextChoices):
    VIEW = "view", "View the chart"
    SEARCH = "search", "Find the patient"


class Purpose(models.TextChoices):
    TREATMENT = "treatment", "Treatment"


class Relation(models.TextChoices):
    CARE_TEAM = "care_team", "Care team"
    NONE = "none", "No care relationship"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    relation: Relation = Relation.NONE

    def __bool__(self):
        return self.allowed


def _deny(reason: str) -> Decision:
    return Decision(allowed=False, reason=reason)


def _active_membership_exists(user, patient: Patient) -> bool:
    today = timezone.localdate()
    return (
        CareTeamMembership.objects.active_on(today)
        .filter(member=user, patient=patient)
        .exists()
    )


def _decide(user, patient: Patient, action: ChartAction, purpose: Purpose) -> Decision:
    if not user.is_authenticated or not user.is_active:
        return _deny("not signed in")
    if not user.is_verified():
        return _deny("second factor not verified")
    if not user.is_clinician:
        return _deny("role does not treat patients")
    if purpose != Purpose.TREATMENT:
        return _deny("purpose not permitted")
    if not _active_membership_exists(user, patient):
        return _deny("not on the patient's care team")
    return Decision(
        allowed=True, reason="care team member", relation=Relation.CARE_TEAM
    )


def decide(user, patient: Patient, action: ChartAction, purpose: Purpose) -> Decision:
    """Allow or deny ``user`` doing ``action`` on ``patient`` for ``purpose``.

    Returns a Decision whose ``reason`` is safe to record (no PHI). Any
    exception while deciding is a denial, never an accidental allow.
    """
    try:
        return _decide(user, patient, ChartAction(action), Purpose(purpose))
    except Exception:
        logger.exception("Access decision failed; denying")
        return _deny("access decision error")


def patients_in_care_of(user):
    """The patients a clinician may open today: the base of every list and search."""
    if not (user.is_authenticated and user.is_verified() and user.is_clinician):
        return Patient.objects.none()
    memberships = CareTeamMembership.objects.active_on(timezone.localdate()).filter(
        member=user
    )
    return Patient.objects.filter(pk__in=memberships.values("patient_id"))
