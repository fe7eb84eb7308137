import datetime

import django_filters
from django import forms
from django.conf import settings
from django.utils.module_loading import import_string

from audit.models import AuditAction, AuditEvent
from ehr_portal.digits import digits_as_ascii


def _patient_lookup():
    return import_string(settings.AUDIT_PATIENT_LOOKUP)


class AuditFilterForm(forms.Form):
    """Refuses filters it cannot apply, so a review never silently sees too much."""

    # The patient the filter names, once it is valid: a review of one
    # patient's accesses is itself an access to that patient's trail.
    patient_ref: str | None = None

    def clean_patient_mrn(self):
        # Digits of another script are the same MRN, as in the patient search.
        mrn = digits_as_ascii(self.cleaned_data.get("patient_mrn") or "").strip()
        if not mrn:
            return mrn
        self.patient_ref = _patient_lookup()(mrn)
        if self.patient_ref is None:
            raise forms.ValidationError(
                "No patient has this MRN: check each digit and their order."
            )
        return mrn

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("occurred_from"), cleaned.get("occurred_to")
        if start and end and start > end:
            raise forms.ValidationError("'From' is later than 'To'.")
        return cleaned


class AuditEventFilter(django_filters.FilterSet):
    """Filters for the compliance screen; the patient is given by MRN."""

    # No name or MRN is longer: a longer one is refused as such, rather than
    # sent to SQLite, whose LIKE refuses a pattern of tens of thousands of
    # characters as an error the screen would show as an outage.
    username = django_filters.CharFilter(
        field_name="actor_username", lookup_expr="iexact", label="User",
        max_length=150,
    )  # fmt: skip
    patient_mrn = django_filters.CharFilter(
        method="filter_patient", label="Patient MRN", max_length=40
    )
    action = django_filters.ChoiceFilter(choices=AuditAction.choices)
    # Days in UTC, as the screen shows every time: the clinical pages' zone
    # (PORTAL_TIME_ZONE) would move part of each day into the next one.
    occurred_from = django_filters.DateFilter(
        method="filter_from",
        label="From (UTC)",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    occurred_to = django_filters.DateFilter(
        method="filter_to",
        label="To (UTC)",
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    class Meta:
        model = AuditEvent
        form = AuditFilterForm
        fields = ["username", "patient_mrn", "action", "occurred_from", "occurred_to"]

    def filter_from(self, queryset, name, value):
        return queryset.filter(occurred_at__gte=_utc_midnight(value))

    def filter_to(self, queryset, name, value):
        if value == datetime.date.max:
            # The last day there is: no midnight after it, and nothing to leave out.
            return queryset
        return queryset.filter(
            occurred_at__lt=_utc_midnight(value + datetime.timedelta(days=1))
        )

    def filter_patient(self, queryset, name, value):
        # The form looked the patient up when it checked the MRN.
        patient_ref = self.form.patient_ref
        if patient_ref is None:
            return queryset.none()
        return queryset.filter(patient_ref=patient_ref)


def _utc_midnight(day: datetime.date) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time.min, tzinfo=datetime.UTC)
