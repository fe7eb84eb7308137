from django.urls import path

from audit import views

app_name = "audit"

urlpatterns = [
    path("audit/", views.audit_events, name="events"),
    path("audit/export/", views.audit_export, name="export"),
]
