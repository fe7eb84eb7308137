"""The audit writer: the one public way other apps leave evidence.

Callers that show PHI write the event first and show nothing if it raises
(fail closed): an access that cannot be recorded does not happen.
"""

import logging
import time
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction

from audit import chain
from audit.checkpoints import newest_checkpoint_age, write_checkpoint
from audit.models import AuditAction, AuditEvent, AuditOutcome
from audit.routers import AUDIT_DATABASE
from ehr_portal import request_context
from ehr_portal.logging import error_kind

logger = logging.getLogger(__name__)
security_logger = logging.getLogger("ehr_portal.security")


class AuditUnavailable(Exception):
    """The audit event could not be written; the caller must not proceed."""


def _actor_fields(actor) -> dict:
    if isinstance(actor, str):
        if not actor.strip():
            # Work with no person behind it still names who did it.
            raise ValueError("a system actor must be named, e.g. 'system:import_fhir'")
        return {"actor_id": None, "actor_username": actor, "actor_role": "system"}
    if actor is None or not getattr(actor, "is_authenticated", False):
        return {"actor_id": None, "actor_username": "anonymous", "actor_role": ""}
    role = getattr(actor, "primary_role", None)
    return {
        "actor_id": actor.pk,
        "actor_username": actor.get_username(),
        "actor_role": str(role.value) if role else "",
    }


def record_event(
    *,
    actor,
    action: AuditAction,
    outcome: AuditOutcome,
    patient_ref: str = "",
    record_type: str = "",
    fields: Iterable[str] = (),
    purpose: str = "",
    reason: str = "",
    username: str | None = None,
) -> AuditEvent:
    """Write one audit event, or raise AuditUnavailable.

    ``actor`` is a user, or a string naming a system actor such as
    ``"system:import_fhir"``. ``username`` overrides the recorded name for
    events about someone not signed in (a failed sign-in). Nothing here may
    carry PHI: patients are named by their opaque reference only.
    """
    event = _new_event(
        actor=actor,
        action=action,
        outcome=outcome,
        patient_ref=patient_ref,
        record_type=record_type,
        fields=fields,
        purpose=purpose,
        reason=reason,
        username=username,
    )
    _append([event], action)

    if outcome != AuditOutcome.SUCCESS:
        security_logger.info(
            "audit %s %s actor=%s event=%s",
            action,
            outcome,
            _logged_actor(event),
            event.pk,
        )
    return event


def _logged_actor(event: AuditEvent):
    """A person by id; work with no person behind it by its system name.

    Never a name typed at sign-in: it may be a password typed in the wrong
    field.
    """
    if event.actor_id is None and event.actor_username.startswith("system:"):
        return event.actor_username
    return event.actor_id


def record_events(
    *,
    actor,
    action: AuditAction,
    outcome: AuditOutcome,
    records: Iterable[tuple[str, str, Iterable[str]]],
    purpose: str = "",
    reason: str = "",
) -> list[AuditEvent]:
    """Write one event per (patient_ref, record_type, fields) in one transaction.

    For bulk paths: as many events as records, at the cost of one chain
    write. Raises AuditUnavailable like record_event.
    """
    rows = (
        (patient_ref, record_type, fields, reason)
        for patient_ref, record_type, fields in records
    )
    return _write_many(actor, action, outcome, rows, purpose=purpose)


def record_change_events(
    *,
    actor,
    action: AuditAction,
    entries: Iterable[tuple[str, Iterable[str], str]],
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
) -> list[AuditEvent]:
    """Write one event per (record_type, fields, reason) in one chain write.

    For administrators' changes to accounts and groups: one change may take
    several events to tell in full (many accounts at once, or more detail
    than one reason holds), and they are all written or none is. No patient
    is involved. Raises AuditUnavailable like record_event.
    """
    rows = (
        ("", record_type, fields, reason) for record_type, fields, reason in entries
    )
    return _write_many(actor, action, outcome, rows, purpose="")


def _write_many(actor, action, outcome, rows, *, purpose: str) -> list[AuditEvent]:
    """Events from (patient_ref, record_type, fields, reason), in one chain write."""
    events = [
        _new_event(
            actor=actor,
            action=action,
            outcome=outcome,
            patient_ref=patient_ref,
            record_type=record_type,
            fields=fields,
            purpose=purpose,
            reason=reason,
        )
        for patient_ref, record_type, fields, reason in rows
    ]
    if events:
        _append(events, action)
    return events


def _new_event(
    *,
    actor,
    action,
    outcome,
    patient_ref,
    record_type,
    fields,
    purpose,
    reason,
    username=None,
) -> AuditEvent:
    context = request_context.current()
    values = _actor_fields(actor)
    if username is not None:
        values["actor_username"] = username[:150]

    return AuditEvent(
        action=AuditAction(action).value,
        outcome=AuditOutcome(outcome).value,
        patient_ref=str(patient_ref or ""),
        record_type=record_type,
        fields=list(fields),
        purpose=purpose[:255],
        reason=reason[:255],
        ip_address=context.ip_address if context else None,
        device_fingerprint=context.device_fingerprint if context else "",
        request_id=context.request_id if context else "",
        **values,
    )


def _append(events: list[AuditEvent], action) -> None:
    try:
        chain.append(events)
    except Exception as error:
        logger.error("Audit write failed for action %s: %s", action, error_kind(error))
        raise AuditUnavailable("the audit trail could not be written") from error
    _checkpoint_if_due()


# Without a broker (tasks in-process) no Celery beat writes checkpoints, and
# without checkpoints events cut from the end of the trail go unnoticed: the
# process that writes the trail then writes them, as often as beat would.
# With a broker, beat writes them; should it stop (not started, or the broker
# down) nothing else would say so. A process that has been writing the trail
# for two intervals and finds no checkpoint that recent writes one itself,
# and says beat is late, as a break-the-glass alert falls back when no
# worker answers.
_next_checkpoint: float | None = None
# When this process's current run of writes began, and its latest write: a
# pause longer than an interval starts a new run (beat may rightly have had
# nothing new to record during it).
_writing_since: float | None = None
_last_write: float | None = None


def _checkpoint_if_due() -> None:
    global _next_checkpoint, _writing_since, _last_write
    interval = settings.AUDIT_CHECKPOINT_SECONDS
    now = time.monotonic()
    if _last_write is None or now - _last_write > interval:
        _writing_since = now
    _last_write = now

    if _next_checkpoint is None:
        _next_checkpoint = now + interval
    if now < _next_checkpoint:
        return
    _next_checkpoint = now + interval
    # After the commit: a checkpoint must name an event that is really there.
    if settings.CELERY_TASK_ALWAYS_EAGER:
        transaction.on_commit(_write_checkpoint, using=AUDIT_DATABASE)
    elif now - _writing_since >= 2 * interval:
        transaction.on_commit(_write_checkpoint_if_beat_is_late, using=AUDIT_DATABASE)


def _write_checkpoint() -> None:
    try:
        write_checkpoint()
    except Exception as error:
        logger.error("Audit checkpoint not written: %s", error_kind(error))


def _write_checkpoint_if_beat_is_late() -> None:
    late_after = 2 * settings.AUDIT_CHECKPOINT_SECONDS
    try:
        age = newest_checkpoint_age()
    except OSError as error:
        logger.error("Audit checkpoints cannot be read: %s", error_kind(error))
        return
    if age is not None and age <= late_after:
        return
    logger.error(
        "No audit checkpoint for over %d s while events are written: Celery beat "
        "is not running or cannot reach the broker; this process writes one",
        late_after,
    )
    _write_checkpoint()


def _events_for_patient(patient_ref: str, actions: Iterable[AuditAction]):
    return AuditEvent.objects.filter(
        patient_ref=str(patient_ref), action__in=[a.value for a in actions]
    )


def count_events_for_patient(patient_ref: str, actions: Iterable[AuditAction]) -> int:
    return _events_for_patient(patient_ref, actions).count()


def recent_events_query(patient_ref: str, actions: Iterable[AuditAction], limit: int):
    """The latest events about one patient, for transparency panels and reports.

    Newest first in chain order (the sequence), which the database can read
    straight from an index; ordering by time needed every event of the
    patient sorted, a cost that grew with each open of the chart.
    """
    return _events_for_patient(patient_ref, actions).order_by("-sequence")[:limit]


def recent_events_for_patient(
    patient_ref: str, actions: Iterable[AuditAction], limit: int = 20
) -> list[AuditEvent]:
    return list(recent_events_query(patient_ref, actions, limit))
