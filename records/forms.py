import datetime

from django import forms

from ehr_portal.digits import digits_as_ascii, is_ascii_digits
from records import mrn as mrn_rules
from records.models import BreakGlassReason, BreakGlassReview, NoteKind

NAME_MAX = 100


def checked_mrn(typed: str) -> str:
    """The MRN typed, as stored, or a ValidationError saying what is wrong.

    A keyboard set to another script types its own digits for the same MRN;
    look-alikes (superscripts, circled digits) are left as typed, and refused
    as not an MRN. A mistyped MRN must not reach a lookup: the check digit
    stops it here.
    """
    value = mrn_rules.normalise(digits_as_ascii(typed).strip())
    if mrn_rules.is_valid(value):
        return value
    if is_ascii_digits(value) and len(value) != mrn_rules.LENGTH:
        raise forms.ValidationError(
            f"An MRN has {mrn_rules.LENGTH} digits; this has {len(value)}."
        )
    raise forms.ValidationError(
        "This is not a valid MRN: check each digit and their order."
    )


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
        typed = self.cleaned_data["mrn"]
        return checked_mrn(typed) if typed.strip() else ""

    def clean(self):
        cleaned = super().clean()
        # Only when every field was valid: a mistyped MRN is its own error.
        if not self.errors and not any(cleaned.get(name) for name in self.fields):
            raise forms.ValidationError("Enter at least one identifier to search.")
        return cleaned

    def birth_date_text(self) -> str:
        value = self.cleaned_data.get("birth_date")
        return value.isoformat() if isinstance(value, datetime.date) else ""


class NoteForm(forms.Form):
    kind = forms.ChoiceField(choices=NoteKind.choices, initial=NoteKind.PROGRESS)
    title = forms.CharField(max_length=200)
    body = forms.CharField(max_length=20_000, widget=forms.Textarea(attrs={"rows": 6}))

    def __init__(self, *args, kinds=None, **kwargs):
        super().__init__(*args, **kwargs)
        # Offer only the kinds the writer may write (services.note_kinds_for),
        # but accept any kind: the service refuses the others, and records the
        # refusal, which a form error here would not.
        if kinds is not None:
            self.fields["kind"].widget.choices = [
                choice for choice in NoteKind.choices if choice[0] in kinds
            ]


class NoteDraftForm(forms.Form):
    """A note as the page holds it when the idle warning shows: maybe half done."""

    kind = forms.ChoiceField(choices=NoteKind.choices)
    title = forms.CharField(required=False, max_length=200, strip=False)
    body = forms.CharField(required=False, max_length=20_000, strip=False)

    def has_text(self) -> bool:
        data = self.cleaned_data
        return bool(data["title"].strip() or data["body"].strip())


class BreakGlassForm(forms.Form):
    """An emergency access request, as typed.

    The browser asks for each field; the rules themselves (a reason, 20
    characters of justification, a current code) are the service's, so that
    a request that breaks one is refused and recorded like any other.
    """

    reason = forms.CharField(
        label="Reason",
        required=False,
        widget=forms.Select(
            choices=[("", "Choose…"), *BreakGlassReason.choices],
            attrs={"required": True},
        ),
    )
    justification = forms.CharField(
        label="Justification",
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 4, "required": True, "minlength": 20, "maxlength": 2000}
        ),
        help_text="Why you need this chart now (at least 20 characters).",
    )
    one_time_code = forms.CharField(
        label="One-time code",
        required=False,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "required": True,
                "maxlength": 8,
            }
        ),
    )

    def clean_one_time_code(self):
        return digits_as_ascii(self.cleaned_data["one_time_code"])


class BreakGlassReviewForm(forms.Form):
    """The review of one access: the queue shows one per waiting row."""

    # No outcome is preselected: one click must not approve an unread review.
    outcome = forms.ChoiceField(
        label="Outcome",
        choices=[("", "Choose an outcome…"), *BreakGlassReview.choices],
        error_messages={"required": "Choose an outcome for the review."},
    )
    note = forms.CharField(
        label="Review note (optional)",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={
            "max_length": "Keep the note to at most %(limit_value)d characters "
            "(it has %(show_value)d)."
        },
    )

    def __init__(self, *args, access_id, **kwargs):
        # Ids named after the access keep each row's fields (and the labels
        # pointing at them) apart on the queue page; the names the review
        # view reads stay the same.
        super().__init__(*args, auto_id=f"review-{access_id}-%s", **kwargs)


class PatientLookupForm(forms.Form):
    mrn = forms.CharField(label="MRN", max_length=12)

    def clean_mrn(self):
        return checked_mrn(self.cleaned_data["mrn"])
