from django.urls import path

from records import views

app_name = "records"

urlpatterns = [
    path("", views.patient_list, name="patient_list"),
    path("<record_id:patient_id>/", views.chart_summary_page, name="chart"),
    path(
        "<record_id:patient_id>/emergency-access/",
        views.break_glass_request,
        name="break_glass_request",
    ),
    path("<record_id:patient_id>/notes/new/", views.note_create, name="note_create"),
    # Asked for by the page itself when the idle warning shows: passive for
    # the idle clock (settings.SESSION_SECURITY_PASSIVE_URL_NAMES).
    path(
        "<record_id:patient_id>/notes/draft/", views.note_draft_keep, name="note_draft"
    ),
    path(
        "<record_id:patient_id>/notes/draft/discard/",
        views.note_draft_discard,
        name="note_draft_discard",
    ),
    path(
        "<record_id:patient_id>/<slug:section>/",
        views.chart_section_page,
        name="chart_section",
    ),
]

compliance_urlpatterns = [
    path("break-glass/", views.break_glass_queue, name="break_glass_queue"),
    path(
        "break-glass/<record_id:access_id>/review/",
        views.break_glass_review,
        name="break_glass_review",
    ),
    path("patient-access/", views.patient_access_report, name="patient_access_report"),
]
