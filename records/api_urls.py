from django.urls import path

from records import api

app_name = "api"

urlpatterns = [
    path("patients/", api.patient_list, name="patient_list"),
    path("patients/search/", api.patient_search, name="patient_search"),
    path("patients/<record_id:patient_id>/", api.patient_detail, name="patient_detail"),
    path("patients/<record_id:patient_id>/notes/", api.note_create, name="note_create"),
    path(
        "patients/<record_id:patient_id>/<slug:section>/",
        api.chart_section,
        name="chart_section",
    ),
]
