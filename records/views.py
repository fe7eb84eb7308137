"""Patient list, search, chart pages, notes and break-the-glass.

Views parse input, ask the services (which ask the access decision and write
the audit events) and render; no PHI is read here any other way.
"""

import logging

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.decorators import clinician_required, role_required
from accounts.roles import Role
from audit.services import AuditUnavailable
from ehr_portal.failure_pages import stopped_response
from ehr_portal.request_context import current_request_id
from records import break_glass
from records.forms import (
    BreakGlassForm,
    BreakGlassReviewForm,
    NoteDraftForm,
    NoteForm,
    PatientLookupForm,
    PatientSearchForm,
)
from records.models import NoteKind
from records.services import (
    CHART_SECTIONS,
    SEARCH_WINDOW_SECONDS,
    SUMMARY_FIELDS,
    NoteRefused,
    PatientQuery,
    SearchRateExceeded,
    SearchUnavailable,
    add_note,
    chart_summary,
    discard_note_draft,
    identity_review,
    keep_note_draft,
    kept_note_draft,
    list_my_patients,
    note_kinds_for,
    open_chart,
    recent_access,
    refuse_unwritable_chart,
    search_patients,
)

PAGE_SIZE = 25

logger = logging.getLogger(__name__)


@clinician_required(record_type="PatientList")
@require_http_methods(["GET", "POST"])
def patient_list(request):
    form = PatientSearchForm(request.POST or None)
    results = None
    if request.method == "POST" and form.is_valid():
        query = PatientQuery(
            mrn=form.cleaned_data["mrn"],
            family_name=form.cleaned_data["family_name"].strip(),
            given_name=form.cleaned_data["given_name"].strip(),
            birth_date=form.birth_date_text(),
        )
        try:
            results = search_patients(request.user, query)
        except SearchRateExceeded:
            refused = render(request, "records/search_rate.html", status=429)
            refused["Retry-After"] = str(SEARCH_WINDOW_SECONDS)
            return refused
        except SearchUnavailable as error:
            return stopped_response(
                request,
                status=503,
                template="records/search_unavailable.html",
                detail=str(error),
            )

    patients = list_my_patients(request.user) if results is None else results
    return render(
        request,
        "records/patient_list.html",
        {
            "form": form,
            "patients": patients,
            "searched": results is not None,
            "request_id": current_request_id(),
        },
    )


def _open_or_refuse(request, patient_id, **kwargs):
    """open_chart, turning a refusal into a page that offers break-the-glass."""
    try:
        return open_chart(request.user, patient_id, **kwargs), None
    except PermissionDenied:
        if not request.user.is_clinician:
            raise
        response = render(
            request,
            "records/not_on_team.html",
            {"patient_id": patient_id, "request_id": current_request_id()},
            status=403,
        )
        return None, response


def _chart_context(chart, active: str) -> dict:
    return {
        "chart": chart,
        "patient": chart.patient,
        "sections": CHART_SECTIONS.values(),
        "active": active,
    }


@require_GET
def chart_summary_page(request, patient_id):
    chart, refusal = _open_or_refuse(
        request, patient_id, record_type="ChartSummary", fields=SUMMARY_FIELDS
    )
    if refusal:
        return refusal

    return render(
        request,
        "records/chart_summary.html",
        {
            **_chart_context(chart, "summary"),
            **chart_summary(chart),
            "recent_access": recent_access(chart),
        },
    )


@require_GET
def chart_section_page(request, patient_id, section):
    return _section_response(request, patient_id, section)


def _section_response(request, patient_id, section, note_form=None, status=200):
    chart_section = CHART_SECTIONS.get(section)
    if chart_section is None:
        raise Http404("No such chart section")

    chart, refusal = _open_or_refuse(
        request,
        patient_id,
        record_type=chart_section.record_type,
        fields=chart_section.fields,
    )
    if refusal:
        if note_form is not None and note_form.is_bound:
            # A note sent back for a correction, to a chart no longer open
            # to its writer: they keep the text.
            return _note_not_saved(request, patient_id, note_form, refused=True)
        return refusal

    kept_draft = None
    if chart_section.slug == "notes" and note_form is None:
        kept_draft = kept_note_draft(request.user, chart.patient)
        kinds = note_kinds_for(request.user)
        note_form = NoteForm(kinds=kinds)
        # A kept note of a kind its author may no longer write (a grant taken
        # away since) is not put in the form: saved, it would become another
        # kind of note, read by others.
        if kept_draft is not None and kept_draft.kind in kinds:
            note_form.initial = _draft_initial(kept_draft)
    page = _nearest_page(
        Paginator(chart_section.records_for(chart), PAGE_SIZE), request.GET.get("page")
    )
    return render(
        request,
        f"records/sections/{chart_section.slug}.html",
        {
            **_chart_context(chart, chart_section.slug),
            "section": chart_section,
            "page": page,
            "withheld_count": chart_section.withheld_count(chart),
            "note_form": note_form,
            "kept_draft": kept_draft,
        },
        status=status,
    )


def _draft_initial(draft) -> dict:
    return {"kind": draft.kind, "title": draft.title, "body": draft.body}


@require_POST
def note_create(request, patient_id):
    form = NoteForm(request.POST, kinds=note_kinds_for(request.user))
    try:
        return _save_note(request, patient_id, form)
    except AuditUnavailable:
        # Fail closed, but give the clinician back what they typed, and
        # nothing from the chart: a note is not retyped from memory.
        logger.error("Note not saved: the audit trail is unavailable")
        return _note_not_saved(request, patient_id, form, refused=False)


def _nearest_page(paginator: Paginator, asked: str | None):
    """The page asked for, or the one nearest it: 0 or -3 give the first
    page, a page past the end the last (Django's get_page gives the last for
    both), and anything that is not a number the first."""
    text = (asked or "").strip()
    try:
        number = int(text)
    except ValueError:
        # Too many digits for int() is far past the end; anything else is
        # not a page number at all.
        number = paginator.num_pages if text.isdigit() else 1
    return paginator.get_page(max(1, min(number, paginator.num_pages)))


def _save_note(request, patient_id, form):
    if not form.is_valid():
        # Show the form again with what was typed: a clinician's note is not
        # thrown away for one field too long.
        return _section_response(request, patient_id, "notes", form, status=400)

    try:
        add_note(author=request.user, patient_id=patient_id, **form.cleaned_data)
    except PermissionDenied:
        # Refused (and audited) by the access decision: a care relation that
        # ended while the note was being written loses no text either.
        return _note_not_saved(request, patient_id, form, refused=True)
    except NoteRefused as refusal:
        form.add_error("kind", str(refusal).capitalize() + ".")
        return _section_response(request, patient_id, "notes", form, status=403)
    messages.success(request, "Note saved.")
    return redirect("records:chart_section", patient_id=patient_id, section="notes")


def _note_not_saved(request, patient_id, form, *, refused: bool):
    return _typed_note_page(
        request, patient_id, form.data, why="refused" if refused else "audit"
    )


def _typed_note_page(request, patient_id, typed, *, why: str):
    # What was typed, as sent: the form may not have validated. The page
    # shows nothing from the chart.
    return render(
        request,
        "note_not_saved.html",
        {
            "patient_id": patient_id,
            "why": why,
            # The label of a kind the portal knows; anything else sent is left out.
            "kind": dict(NoteKind.choices).get(typed.get("kind", ""), ""),
            "title": typed.get("title", ""),
            "body": typed.get("body", ""),
            "request_id": current_request_id(),
        },
        status=503 if why == "audit" else 403,
    )


def _note_sent_after_sign_out(request, patient_id):
    # Called by the sign-in check for a note that arrives once the session
    # has ended: nobody is signed in to add it, but the clinician who typed
    # it gets it back instead of a sign-in page that drops it.
    logger.info("Note not saved: it arrived after the session had ended")
    return _typed_note_page(request, patient_id, request.POST, why="signed_out")


note_create.when_signed_out = _note_sent_after_sign_out


@clinician_required(record_type="NoteDraft")
@require_POST
def note_draft_keep(request, patient_id):
    """Keep the note the page holds, as the idle warning shows (idle.js)."""
    try:
        refuse_unwritable_chart(request.user, patient_id, record_type="NoteDraft")
    except PermissionDenied:
        return JsonResponse({"kept": False}, status=403)
    except Http404:
        return JsonResponse({"kept": False}, status=404)
    form = NoteDraftForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"kept": False, "errors": form.errors}, status=400)
    if not form.has_text():
        # The form was emptied since a note was kept: nothing is to come back.
        discard_note_draft(author=request.user, patient_id=patient_id)
        return JsonResponse({"kept": False})
    try:
        keep_note_draft(author=request.user, patient_id=patient_id, **form.cleaned_data)
    except (PermissionDenied, NoteRefused):
        return JsonResponse({"kept": False}, status=403)
    except AuditUnavailable:
        logger.error("Unsent note not kept: the audit trail is unavailable")
        return JsonResponse({"kept": False}, status=503)
    return JsonResponse({"kept": True})


@clinician_required(record_type="NoteDraft")
@require_POST
def note_draft_discard(request, patient_id):
    # An audit outage stops this as any write (AuditFailClosedMiddleware).
    if discard_note_draft(author=request.user, patient_id=patient_id):
        messages.info(request, "The kept note was discarded.")
    return redirect("records:chart_section", patient_id=patient_id, section="notes")


@clinician_required(record_type="BreakGlassAccess")
@require_http_methods(["GET", "POST"])
def break_glass_request(request, patient_id):
    # A request sent for nobody is refused and recorded by the service, as
    # any refused request is; only the form page needs the check here.
    if request.method == "GET":
        break_glass.refuse_unknown_patient(request.user, patient_id)
    if break_glass.already_has_access(request.user, patient_id):
        messages.info(request, "You already have access to this chart.")
        return redirect("records:chart", patient_id=patient_id)

    form = BreakGlassForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            break_glass.request_access(
                request,
                patient_id=patient_id,
                reason=form.cleaned_data["reason"],
                justification=form.cleaned_data["justification"],
                one_time_code=form.cleaned_data["one_time_code"],
            )
        except break_glass.BreakGlassRefused as refusal:
            form.add_error(None, f"Emergency access refused: {refusal}.")
        else:
            return redirect("records:chart", patient_id=patient_id)
    elif request.method == "POST":
        break_glass.refuse_unreadable_request(request.user, patient_id)

    return render(
        request,
        "records/break_glass_request.html",
        {"form": form, "patient_id": patient_id},
    )


@role_required(Role.COMPLIANCE_OFFICER, record_type="BreakGlassAccess")
@require_GET
def break_glass_queue(request):
    return _review_queue_page(request)


def _review_queue_page(request, sent=None, sent_for=None, status=200):
    # ``sent`` is a review that did not validate, shown again on its own
    # row with what the officer typed.
    waiting, reviewed = break_glass.review_queue(request.user)
    target = next((access for access in waiting if access.pk == sent_for), None)
    if sent is not None and (target is None or target.clinician_id == request.user.pk):
        # Reviewed meanwhile (in another tab, by another officer), no such
        # access, or the officer's own: there is no form to show it on.
        refusal = break_glass.refuse_review(reviewer=request.user, access_id=sent_for)
        messages.error(request, f"Not recorded: {refusal}.")
    rows = [
        (
            access,
            sent
            if sent is not None and access.pk == sent_for
            else BreakGlassReviewForm(access_id=access.pk),
        )
        for access in waiting
    ]
    return render(
        request,
        "records/break_glass_queue.html",
        {"waiting": waiting, "rows": rows, "reviewed": reviewed},
        status=status,
    )


@role_required(Role.COMPLIANCE_OFFICER, record_type="BreakGlassAccess")
@require_POST
def break_glass_review(request, access_id):
    form = BreakGlassReviewForm(request.POST, access_id=access_id)
    if form.is_valid():
        try:
            break_glass.review(
                reviewer=request.user,
                access_id=access_id,
                outcome=form.cleaned_data["outcome"],
                note=form.cleaned_data["note"],
            )
        except break_glass.BreakGlassRefused as refusal:
            messages.error(request, f"Not recorded: {refusal}.")
        else:
            messages.success(request, "Review recorded.")
        return redirect("review:break_glass_queue")
    return _review_queue_page(request, sent=form, sent_for=access_id, status=400)


@role_required(Role.COMPLIANCE_OFFICER, record_type="PatientIdentity")
@require_http_methods(["GET", "POST"])
def patient_access_report(request):
    form = PatientLookupForm(request.POST or None)
    report = None
    if request.method == "POST" and form.is_valid():
        report = identity_review(request.user, form.cleaned_data["mrn"])
        if report is None:
            form.add_error("mrn", "No patient has this MRN.")
    return render(
        request,
        "records/patient_access_report.html",
        {"form": form, "report": report, "request_id": current_request_id()},
    )
