import datetime

from django import forms

from records import mrn as mrn_rules

NAME_MAX = 100


class PatientSearchForm(forms.Form):
    """Exact-match search; sent by POST so nothing typed here lands in a URL."""

    mrn = forms.CharField(label="MRN", max_length=12, required=False)
    family_name = forms.CharField(
        label="Family name", max_length=NAME_MAX, required=False
    )
    given_name = forms.CharField(
        label="Given name", max_length=NAME_MAX, required=False
    )
    birth_date = forms.DateField(
        label="Birth date",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def clean_mrn(self):
        value = self.cleaned_data["mrn"].strip()
        # A mistyped MRN must not reach a lookup: the check digit stops it here.
        if value and not mrn_rules.is_valid(value):
            raise forms.ValidationError(
                "This is not a valid MRN: check each digit and their order."
            )
        return mrn_rules.normalise(value)

    def clean(self):
        cleaned = super().clean()
        if not any(cleaned.get(name) for name in self.fields):
            raise forms.ValidationError("Enter at least one identifier to search.")
        return cleaned

    def birth_date_text(self) -> str:
        value = self.cleaned_data.get("birth_date")
        return value.isoformat() if isinstance(value, datetime.date) else ""
