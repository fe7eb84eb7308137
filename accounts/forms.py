from django import forms
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm
from django.core.exceptions import ValidationError

from accounts.services import BACKUP_CODE_BYTES, record_failed_password_sign_in
from ehr_portal.digits import digits_as_ascii, is_ascii_digits

BACKUP_CODE_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz234567-")
# Base32 letters in a backup code: eight for every five bytes.
BACKUP_CODE_LETTERS = BACKUP_CODE_BYTES * 8 // 5


class SignInForm(AuthenticationForm):
    """Username and password; the username is folded like the lockout counter."""

    # Django's own message says both fields may be case-sensitive; here only
    # the password is.
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": (
            "Please enter a correct username and password. The password is "
            "case-sensitive; the username is not."
        ),
    }

    def _refuse(self, username: str | None):
        record_failed_password_sign_in(username)
        # A field left empty is said so; anything else is a wrong name or
        # password, with no hint which. Spaces are a password (they count
        # in one), but no name.
        blank = [
            name
            for name, text in (
                ("username", (self.data.get("username") or "").strip()),
                ("password", self.data.get("password") or ""),
            )
            if not text
        ]
        if blank:
            raise ValidationError(f"Enter your {' and '.join(blank)}.", code="blank")
        raise self.get_invalid_login_error()

    def clean_username(self):
        return (self.cleaned_data.get("username") or "").strip().casefold()

    def clean(self):
        # A name no account can have is refused as a wrong name, and audited
        # like one: one longer than any account's (Django sets the field's
        # max_length without its validator, and django-axes then fails to
        # store it, a server error on PostgreSQL), or one the field itself
        # refused (a NUL character), which Django would pass over in silence.
        username = self.cleaned_data.get("username") or ""
        if "username" in self.errors:
            self._refuse(None)
        if "password" in self.errors:
            # Empty, or holding a NUL: no account's password, and Django
            # would again answer with no message at all.
            self._refuse(username)
        if len(username) > self.fields["username"].max_length:
            self._refuse(username)
        return super().clean()


class OneTimeCodeForm(forms.Form):
    """A six-digit authenticator code or, at the sign-in step, a backup code."""

    allow_backup_code = True

    # No min_length: a short code gets the same plain message as any other
    # that is not one, from clean_token, rather than Django's count of
    # characters.
    token = forms.CharField(
        label="One-time code",
        max_length=40,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "autofocus": True,
                "spellcheck": "false",
            }
        ),
    )

    def clean_token(self):
        token = digits_as_ascii("".join(self.cleaned_data["token"].split()).casefold())
        if is_ascii_digits(token) and len(token) == 6:
            return token
        # Only something shaped like a backup code is tried as one: six
        # letters are no code at all, refused as such and not counted as a
        # wrong code toward the lock.
        if (
            self.allow_backup_code
            and set(token) <= BACKUP_CODE_CHARACTERS
            and len(token.replace("-", "")) == BACKUP_CODE_LETTERS
        ):
            return token
        raise forms.ValidationError("Enter the six digits shown by your authenticator.")


class EnrolmentCodeForm(OneTimeCodeForm):
    allow_backup_code = False


class PasswordChangeWithCodeForm(PasswordChangeForm):
    """The current password, the new one twice, and a current one-time code."""

    token = forms.CharField(
        label="One-time code",
        min_length=6,
        max_length=6,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code"}),
    )

    def clean_token(self):
        token = digits_as_ascii(self.cleaned_data["token"].strip())
        if not is_ascii_digits(token):
            raise forms.ValidationError("Enter the six digits from your authenticator.")
        return token
