"""Break-the-glass: emergency access to one chart off the care team.

A clinician gives a reason and a written justification and re-enters a
one-time code; access lasts a fixed time, shows a banner on every page of that
chart, is audited as BREAK_GLASS, alerts compliance at once and waits in a
review queue until a compliance officer records the outcome.
"""

import datetime
import logging
import unicodedata

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from accounts.models import Refusal
from accounts.roles import Role
from accounts.services import verify_second_factor
from audit.models import AuditAction, AuditOutcome
from audit.services import record_event, record_events
from ehr_portal.digits import is_ascii_digits
from ehr_portal.logging import error_kind
from records import services
from records.access import ChartAction, Purpose, decide
from records.models import BreakGlassAccess, BreakGlassReason, BreakGlassReview, Patient

logger = logging.getLogger(__name__)

MINIMUM_JUSTIFICATION = 20
MAXIMUM_JUSTIFICATION = 2000


class BreakGlassRefused(Exception):
    """The request does not meet the rules; the message is safe to show."""


def _refuse(user, patient_ref, reason: str):
    _record_refusal(user, patient_ref, reason)
    raise BreakGlassRefused(reason)


def _record_refusal(user, patient_ref, reason: str) -> None:
    record_event(
        actor=user, action=AuditAction.BREAK_GLASS_REFUSED,
        outcome=AuditOutcome.DENIED, patient_ref=patient_ref,
        record_type="BreakGlassAccess", purpose=Purpose.EMERGENCY, reason=reason,
    )  # fmt: skip


def refuse_unreadable_request(clinician, patient_id) -> None:
    """Record a request the form could not read (a NUL character in it).

    The form holds no rule of its own; what it cannot read is refused
    before the service sees it, and is recorded as any refusal is.
    """
    _record_refusal(
        clinician, str(patient_id), "request held characters that are not allowed"
    )


def refuse_unknown_patient(clinician, patient_id) -> None:
    """Raise Http404 when no patient has this id, recorded as the chart records it.

    A request form for nobody's chart is not found, as that chart's address
    is: it tells the clinician no more than the chart already does.
    """
    if not Patient.objects.filter(pk=patient_id).exists():
        services.refuse_unknown_patient(
            clinician, patient_id, record_type="BreakGlassAccess",
            purpose=Purpose.EMERGENCY,
        )  # fmt: skip


def already_has_access(clinician, patient_id) -> bool:
    """True when the chart is open to the clinician without breaking the glass."""
    patient = Patient.objects.filter(pk=patient_id).first()
    return patient is not None and bool(
        decide(clinician, patient, ChartAction.VIEW, Purpose.TREATMENT)
    )


def request_access(
    request, *, patient_id, reason: str, justification: str, one_time_code: str
) -> BreakGlassAccess:
    """Grant the signed-in clinician emergency access when every rule holds.

    Takes the request because the fresh code is checked like any other: a
    wrong one is audited and counts toward the account lockout.
    """
    clinician = request.user
    patient = Patient.objects.filter(pk=patient_id).first()
    if patient is None:
        _refuse(clinician, str(patient_id), "unknown patient")

    decision = decide(clinician, patient, ChartAction.BREAK_GLASS, Purpose.EMERGENCY)
    if not decision:
        record_event(
            actor=clinician, action=AuditAction.ACCESS_DENIED,
            outcome=AuditOutcome.DENIED, patient_ref=patient.pk,
            record_type="BreakGlassAccess", purpose=Purpose.EMERGENCY,
            reason=decision.reason,
        )  # fmt: skip
        raise PermissionDenied(decision.reason)

    # Every mistake in the form is named at once (one refusal, one event):
    # in an emergency, each round trip to learn the next one costs time.
    mistakes = []
    if reason not in BreakGlassReason.values:
        mistakes.append("no reason category chosen")
    justification = _visible(justification).strip()
    if _readable_length(justification) < MINIMUM_JUSTIFICATION or not _has_words(
        justification
    ):
        mistakes.append("justification shorter than 20 characters")
    if len(justification) > MAXIMUM_JUSTIFICATION:
        mistakes.append("justification longer than 2000 characters")
    one_time_code = one_time_code.strip()
    if not (len(one_time_code) == 6 and is_ascii_digits(one_time_code)):
        # Not a code at all (a typo, look-alike digits): said so, and not
        # counted toward the lock, as at sign-in.
        mistakes.append("enter the six digits your app shows")
    if mistakes:
        _refuse(clinician, patient.pk, "; ".join(mistakes))
    # A fresh code proves the person at the keyboard is the signed-in user,
    # not someone at a workstation left unlocked.
    if not verify_second_factor(request, one_time_code, step_up=True):
        refusal = getattr(request, "otp_refusal", None)
        if refusal == Refusal.REPLAYED:
            # The code that just signed them in cannot be used twice.
            _refuse(
                clinician, patient.pk,
                "one-time code already used; wait for the next code in your app",
            )  # fmt: skip
        if refusal == Refusal.THROTTLED:
            # Retyping at once would only lock the account, in an emergency.
            _refuse(
                clinician, patient.pk,
                "too many wrong codes in a row: wait a few seconds, then enter "
                "the code your app shows",
            )  # fmt: skip
        _refuse(clinician, patient.pk, "one-time code not accepted")

    return _grant(clinician, patient, reason, justification)


def _visible(text: str) -> str:
    """``text`` without characters nobody sees (zero-width spaces, joiners,
    fillers and blank patterns).

    Twenty of them would pass as a justification and show the reviewer an
    empty one.
    """
    return "".join(
        character
        for character in text
        if character.isspace()
        or (
            unicodedata.category(character) not in ("Cf", "Cc")
            and character not in _BLANK_LOOKING
        )
    )


def _readable_length(text: str) -> int:
    """How many characters a reader counts: a mark that sits on a letter (an
    accent typed as a character of its own, a stroke) is not one more."""
    composed = unicodedata.normalize("NFC", text)
    return sum(
        1
        for character in composed
        if unicodedata.category(character) not in ("Mn", "Me")
    )


def _has_words(text: str) -> bool:
    """At least half of a minimum justification is characters one can read
    (not spaces, nor marks that only sit on other characters)."""
    seen = sum(
        1
        for character in text
        if not character.isspace()
        and unicodedata.category(character) not in ("Mn", "Me", "Zs")
    )
    return seen >= MINIMUM_JUSTIFICATION // 2


# Letters and symbols that print as nothing: Hangul fillers, the blank
# Braille pattern, the Mongolian vowel separator.
_BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")


def _grant(clinician, patient: Patient, reason: str, justification: str):
    now = timezone.now()
    with transaction.atomic():
        access = BreakGlassAccess.objects.create(
            clinician=clinician, patient=patient, reason=reason,
            justification=justification, started_at=now,
            expires_at=now + datetime.timedelta(minutes=settings.BREAK_GLASS_MINUTES),
        )  # fmt: skip
        record_event(
            actor=clinician, action=AuditAction.BREAK_GLASS,
            outcome=AuditOutcome.SUCCESS, patient_ref=patient.pk,
            record_type="BreakGlassAccess", purpose=Purpose.EMERGENCY,
            reason=BreakGlassReason(reason).label,
        )  # fmt: skip
        transaction.on_commit(lambda: _alert_compliance(access.pk))
    logger.warning(
        "Break-the-glass access %s granted to user %s", access.pk, clinician.pk
    )
    return access


# How long a grant waits for a background worker to answer before the alert
# is sent from the web process instead.
WORKER_ANSWER_SECONDS = 1.0


def _a_worker_is_listening() -> bool:
    """Whether a Celery worker answers now (always, with tasks in-process).

    A queued alert with no worker running would wait, unseen, until one
    starts; one ping per grant (break-the-glass is rare) rules that out.
    """
    from ehr_portal.celery import app

    if app.conf.task_always_eager:
        return True
    try:
        with app.connection_for_write() as connection:
            # One try: ping's own connection would retry for seconds against
            # a broker that refuses, while the clinician waits.
            connection.ensure_connection(max_retries=0)
            answers = app.control.ping(
                timeout=WORKER_ANSWER_SECONDS, limit=1, connection=connection
            )
    except Exception as error:
        logger.error("Could not ask for a worker (%s)", error_kind(error))
        return False
    return bool(answers)


def _alert_compliance(access_id) -> None:
    from records.tasks import alert_compliance_of_break_glass

    if _a_worker_is_listening():
        try:
            alert_compliance_of_break_glass.delay(str(access_id))
            return
        except Exception as error:
            logger.error(
                "Could not queue the break-the-glass alert %s (%s): sending it now",
                access_id,
                error_kind(error),
            )
    else:
        logger.error(
            "No background worker answered: sending the break-the-glass alert %s "
            "from this process",
            access_id,
        )

    # With the broker or the workers down the alert is sent from this process
    # instead: the e-mail needs no queue, and compliance must hear of the
    # access now, not whenever the queue is back. The review queue lists it
    # either way.
    try:
        alert_compliance_of_break_glass.apply(args=[str(access_id)], throw=True)
    except Exception:
        logger.exception("Could not send the break-the-glass alert %s", access_id)


def review_queue(reviewer, reviewed_limit: int = 50):
    """Accesses waiting for review and the latest reviewed, with patient identity.

    A reviewer must know whose chart was opened to judge the justification;
    showing that identity is itself recorded, one event per patient shown.
    """
    accesses = BreakGlassAccess.objects.select_related(
        "clinician", "reviewed_by", "patient"
    )
    waiting = list(accesses.filter(reviewed_at__isnull=True).order_by("started_at"))
    reviewed = list(
        accesses.filter(reviewed_at__isnull=False).order_by("-reviewed_at")[
            :reviewed_limit
        ]
    )
    # A waiting row names the patient; a reviewed row gives the MRN only.
    shown = {str(access.patient_id): ("mrn",) for access in reviewed}
    shown.update((str(access.patient_id), ("name", "mrn")) for access in waiting)
    record_events(
        actor=reviewer,
        action=AuditAction.IDENTITY_REVIEWED,
        outcome=AuditOutcome.SUCCESS,
        records=[(ref, "PatientIdentity", shown[ref]) for ref in sorted(shown)],
        purpose=Purpose.COMPLIANCE_REVIEW,
        reason="break-the-glass review queue",
    )
    return waiting, reviewed


def review(*, reviewer, access_id, outcome: str, note: str) -> BreakGlassAccess:
    """Record a compliance officer's finding on one break-the-glass access.

    The finding is another person's: an officer who is also a clinician
    never reviews an access of their own.
    """
    if not reviewer.has_role(Role.COMPLIANCE_OFFICER):
        raise PermissionDenied("reviews are for compliance officers")
    if outcome not in BreakGlassReview.values:
        raise ValueError("unknown review outcome")

    with transaction.atomic():
        access = (
            BreakGlassAccess.objects.select_for_update().filter(pk=access_id).first()
        )
        waiting = access is not None and access.reviewed_at is None
        if waiting and access.clinician_id != reviewer.pk:
            access.reviewed_by = reviewer
            access.reviewed_at = timezone.now()
            access.review_outcome = outcome
            access.review_note = note.strip()
            access.save()
            record_event(
                actor=reviewer, action=AuditAction.BREAK_GLASS_REVIEWED,
                outcome=AuditOutcome.SUCCESS, patient_ref=access.patient_id,
                record_type="BreakGlassAccess", purpose=Purpose.COMPLIANCE_REVIEW,
                reason=BreakGlassReview(outcome).label,
            )  # fmt: skip
            return access

    raise BreakGlassRefused(_refused_review(reviewer, access))


def refuse_review(*, reviewer, access_id) -> str:
    """Record a review sent for an access not waiting for one; say why.

    For a review form that did not validate: there is no row to show its
    errors on, and the attempt is evidence like any other refused review.
    """
    access = (
        BreakGlassAccess.objects.select_related("reviewed_by")
        .filter(pk=access_id)
        .first()
    )
    return _refused_review(reviewer, access)


def _refused_review(reviewer, access) -> str:
    # A finding is recorded once, by someone other than the clinician; an
    # attempt to change it, to review one's own access or one that does not
    # exist is refused, and the refusal is evidence too.
    if access is None:
        refusal, reason = (
            "there is no such break-the-glass access",
            ("unknown break-the-glass access"),
        )
    elif access.reviewed_at is not None:
        earlier = BreakGlassReview(access.review_outcome).label.lower()
        refusal = (
            f"this access was already reviewed by {access.reviewed_by.get_username()} "
            f"({earlier}); a finding is recorded once"
        )
        reason = "already reviewed"
    else:
        refusal = (
            "this is your own emergency access; another compliance officer reviews it"
        )
        reason = "own access"
    record_event(
        actor=reviewer, action=AuditAction.BREAK_GLASS_REVIEWED,
        outcome=AuditOutcome.DENIED,
        patient_ref="" if access is None else access.patient_id,
        record_type="BreakGlassAccess", purpose=Purpose.COMPLIANCE_REVIEW,
        reason=reason,
    )  # fmt: skip
    return refusal
