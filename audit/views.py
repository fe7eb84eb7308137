"""Compliance screens: the audit trail, newest first, with filters, and its export."""

import json
import math

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Max
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.module_loading import import_string
from django.views.decorators.http import require_http_methods

from accounts.decorators import role_required, step_up_required
from accounts.roles import Role
from audit.fhir import EXPORT_LIMIT, audit_bundle
from audit.filters import AuditEventFilter
from audit.models import AuditAction, AuditEvent, AuditOutcome
from audit.services import record_event
from ehr_portal.digits import digits_as_ascii, is_ascii_digits

PAGE_SIZE = 50


@role_required(Role.COMPLIANCE_OFFICER, record_type="AuditTrail")
@require_http_methods(["GET", "POST"])
def audit_events(request):
    # Filters travel in the POST body: a patient's MRN must not land in a URL.
    data = request.POST if request.method == "POST" else None
    # The screen shows the trail up to its newest event as the page is made,
    # not the screen's own query event or any written while it is read: the
    # count it gives is then the total an export up to that event holds.
    trail_head = _trail_head()
    shown = AuditEvent.objects.filter(sequence__lte=trail_head)
    event_filter = AuditEventFilter(data, queryset=shown)
    if not event_filter.is_bound:
        events = shown
    elif event_filter.is_valid():
        events = event_filter.qs
    else:
        events = AuditEvent.objects.none()

    page = Paginator(events, PAGE_SIZE).get_page(request.POST.get("page"))
    labels = import_string(settings.AUDIT_PATIENT_LABELS)(
        event.patient_ref for event in page if event.patient_ref
    )
    record_event(
        actor=request.user,
        action=AuditAction.AUDIT_QUERY,
        outcome=AuditOutcome.SUCCESS,
        record_type="AuditEvent",
        fields=_filters_used(data),
        purpose="compliance review",
        patient_ref=_reviewed_patient(event_filter),
    )
    # A link or bookmark with filters in its address shows the whole trail:
    # the reviewer is told, rather than left to think the trail was filtered.
    address_filters = request.method == "GET" and any(
        name in request.GET for name in event_filter.form.fields
    )
    return render(
        request,
        "audit/events.html",
        {
            "filter": event_filter,
            "page": page,
            "patient_labels": labels,
            "address_filters_ignored": address_filters,
            "export_limit": EXPORT_LIMIT,
            "export_parts": _export_parts(page.paginator.count),
            "trail_head": trail_head,
        },
    )


@role_required(Role.COMPLIANCE_OFFICER, record_type="AuditTrail")
@require_http_methods(["POST"])
@step_up_required(return_to="audit:events")
def audit_export(request):
    """The current filter's events, newest first, as a FHIR R4 Bundle download."""
    event_filter = AuditEventFilter(request.POST, queryset=AuditEvent.objects.all())
    if not event_filter.is_valid():
        # The trail's own page, with the filter's errors beside its fields.
        return _export_refused(request)

    # The parts of one export are cut from the trail as the screen showed it:
    # the events written since (the export's own among them) would otherwise
    # push each part's window along, and two parts would share events.
    events = event_filter.qs
    up_to, refusal = _export_end(request.POST.get("up_to"))
    if refusal:
        return _export_refused(request, refusal)
    if up_to is not None:
        events = events.filter(sequence__lte=up_to)
    total = events.count()
    parts = _export_parts(total)
    part = _export_part(request.POST.get("part"), parts)
    if part is None:
        return _export_refused(
            request,
            f"There is no part {request.POST.get('part')!s:.20} of this export: "
            f"it has {parts} part(s) of at most {EXPORT_LIMIT:,} events.",
        )

    start = (part - 1) * EXPORT_LIMIT
    bundle = audit_bundle(events[start : start + EXPORT_LIMIT], total=total)
    exported = len(bundle["entry"])
    record_event(
        actor=request.user,
        action=AuditAction.AUDIT_EXPORT,
        outcome=AuditOutcome.SUCCESS,
        record_type="AuditEvent",
        fields=_filters_used(request.POST),
        purpose="compliance review",
        patient_ref=_reviewed_patient(event_filter),
        reason=f"{exported} of {total} event(s) exported as FHIR AuditEvent"
        f" (part {part} of {parts}"
        + ("" if up_to is None else f", events up to {up_to}")
        + ")",
    )

    response = HttpResponse(json.dumps(bundle), content_type="application/fhir+json")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    # The name carries the export's last event: typed into "Up to event" on
    # a fresh screen, it gives the remaining parts of the same export.
    last = f"-to-{up_to}" if up_to is not None else ""
    response["Content-Disposition"] = (
        f'attachment; filename="audit-events-{stamp}{last}-part-{part}-of-{parts}'
        '.fhir.json"'
    )
    return response


def _export_refused(request, reason: str = ""):
    """The trail's own page with a 400: the filter's errors, or ``reason``."""
    if reason:
        messages.error(request, reason)
    page = audit_events(request)
    page.status_code = 400
    return page


def _trail_head() -> int:
    """The newest event's number; 0 for an empty trail."""
    return AuditEvent.objects.aggregate(head=Max("sequence"))["head"] or 0


def _export_parts(total: int) -> int:
    """How many files of at most EXPORT_LIMIT events an export of ``total`` takes."""
    return max(1, math.ceil(total / EXPORT_LIMIT))


def _export_part(given: str | None, parts: int) -> int | None:
    """The part asked for (1 when none is), or None for one the export lacks."""
    if given in (None, ""):
        return 1
    part = _typed_number(given)
    return part if part is not None and 1 <= part <= parts else None


def _export_end(given: str | None) -> tuple[int | None, str]:
    """The last event of the export asked for, or why it cannot be.

    None with no refusal when the form gives none (an export of one part).
    A number that is not an event already written is refused rather than
    ignored: the parts of one export must all end at the same event.
    """
    if given in (None, ""):
        return None, ""
    newest = _trail_head()
    refusal = (
        f"'Up to event' must be the number of an event already in the trail, "
        f"from 1 to {newest}: keep the number of the export's first part."
    )
    number = _typed_number(given)
    if number is None:
        return None, refusal
    return (number, "") if 1 <= number <= newest else (None, refusal)


def _typed_number(given: str) -> int | None:
    """A whole number as typed: spaces around it and digits of any script
    allowed, as in the rest of the portal; None for anything else, or one of
    more digits than an event number can have."""
    text = digits_as_ascii(given).strip()
    if not is_ascii_digits(text) or len(text) > 19:
        return None
    return int(text)


def _reviewed_patient(event_filter) -> str:
    """The patient whose trail a valid filter selects, if it names one."""
    if not event_filter.is_bound or not event_filter.is_valid():
        return ""
    return str(event_filter.form.patient_ref or "")


def _filters_used(data) -> list[str]:
    return sorted(
        key
        for key, value in (data or {}).items()
        if value and key not in ("csrfmiddlewaretoken", "up_to")
    )
