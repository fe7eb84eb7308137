from django import forms
from django.contrib.auth.forms import AuthenticationForm


class SignInForm(AuthenticationForm):
    """Username and password; the username is folded like the lockout counter."""

    def clean_username(self):
        return (self.cleaned_data.get("username") or "").strip().casefold()


class OneTimeCodeForm(forms.Form):
    token = forms.CharField(
        label="One-time code",
        min_length=6,
        max_length=8,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "pattern": "[0-9]*",
                "autofocus": True,
            }
        ),
    )

    def clean_token(self):
        token = self.cleaned_data["token"].strip()
        if not token.isdigit():
            raise forms.ValidationError("Enter the digits shown by your authenticator.")
        return token
