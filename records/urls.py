from django.urls import path

from records import views

app_name = "records"

urlpatterns = [
    path("", views.patient_list, name="patient_list"),
    path("<uuid:patient_id>/", views.chart_summary_page, name="chart"),
    path(
        "<uuid:patient_id>/<slug:section>/",
        views.chart_section_page,
        name="chart_section",
    ),
]
