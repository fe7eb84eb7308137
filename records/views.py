"""Patient list, search and chart pages; every PHI read goes through services."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods

from records.forms import PatientSearchForm
from records.services import (
    CHART_SECTIONS,
    SUMMARY_FIELDS,
    PatientQuery,
    chart_summary,
    get_chart_for,
    list_my_patients,
    search_patients,
)

PAGE_SIZE = 25


@login_required
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
        results = search_patients(request.user, query)

    patients = list_my_patients(request.user) if results is None else results
    return render(
        request,
        "records/patient_list.html",
        {"form": form, "patients": patients, "searched": results is not None},
    )


@login_required
@require_GET
def chart_summary_page(request, patient_id):
    patient = get_chart_for(
        request.user, patient_id, record_type="ChartSummary", fields=SUMMARY_FIELDS
    )
    return render(
        request,
        "records/chart_summary.html",
        {
            "patient": patient,
            "sections": CHART_SECTIONS.values(),
            "active": "summary",
            **chart_summary(patient),
        },
    )


@login_required
@require_GET
def chart_section_page(request, patient_id, section):
    chart_section = CHART_SECTIONS.get(section)
    if chart_section is None:
        raise Http404("No such chart section")

    patient = get_chart_for(
        request.user,
        patient_id,
        record_type=chart_section.record_type,
        fields=chart_section.fields,
    )
    page = Paginator(chart_section.records_for(patient), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        f"records/sections/{chart_section.slug}.html",
        {
            "patient": patient,
            "sections": CHART_SECTIONS.values(),
            "section": chart_section,
            "active": chart_section.slug,
            "page": page,
        },
    )
