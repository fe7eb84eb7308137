"""Account state changes and their audit events."""

import datetime
import logging
import secrets
from base64 import b32encode
from dataclasses import dataclass

import django_otp
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model, logout, update_session_auth_hash
from django.contrib.auth.signals import user_login_failed
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django_otp_webauthn.models import WebAuthnCredential

from accounts.models import (
    BackupCode,
    BackupCodeDevice,
    Refusal,
    TOTPAuthenticator,
    backup_code_digest,
)
from accounts.sessions import SessionStore
from audit.models import AuditAction, AuditOutcome
from audit.services import record_event
from ehr_portal import request_context
from ehr_portal.digits import is_ascii_digits
from ehr_portal.failure_pages import SESSION_ENDED_KEY

logger = logging.getLogger(__name__)

BACKUP_CODE_COUNT = 10
BACKUP_CODE_BYTES = 15  # 120 bits: enough for a keyed fast hash (ASVS V6.5.2)
SIGNED_IN_AT_SESSION_KEY = "portal_signed_in_at"
OTP_AT_SESSION_KEY = "portal_otp_at"
SESSION_END_ATTRIBUTE = "portal_session_end_action"
OTP_FAILURE_SENDER = "accounts.otp"

REFUSAL_ACTIONS = {
    Refusal.WRONG: AuditAction.OTP_FAILED,
    Refusal.THROTTLED: AuditAction.OTP_FAILED,
    Refusal.REPLAYED: AuditAction.OTP_REPLAYED,
}


UNKNOWN_USERNAME = "(unknown username)"


def record_failed_password_sign_in(username: str | None) -> None:
    """LOGIN_FAILED for a wrong username or password (None: not a username).

    Only a username that names an account is kept: people type passwords
    into the username box, and the audit trail must not collect them.
    """
    if not username or not get_user_model().objects.filter(username=username).exists():
        username = UNKNOWN_USERNAME
    record_event(
        actor=None,
        action=AuditAction.LOGIN_FAILED,
        outcome=AuditOutcome.FAILURE,
        username=username,
        purpose="password",
    )


def fold_username(request, credentials) -> str:
    """The one spelling of a username that lockout counts and sign-in uses.

    ``Nurse.Jones``, ``nurse.jones`` and `` nurse.jones `` are one account, so
    an attacker cannot get fresh failure counters by changing case or spaces.
    """
    username = (credentials or {}).get(get_user_model().USERNAME_FIELD) or ""
    return username.strip().casefold()


def _lockout_credentials(user) -> dict:
    return {get_user_model().USERNAME_FIELD: user.get_username()}


def is_locked_out(request, user) -> bool:
    return not AxesProxyHandler.is_allowed(request, _lockout_credentials(user))


def start_session_clock(request) -> None:
    """Remember when the password step succeeded: the 12-hour limit counts from it.

    A password step is a new sign-in, also in a browser already signed in as
    the same user (Django then keeps the session's data): the second factor
    is asked for again, or the password alone would restart the clock.
    """
    request.session.pop(django_otp.DEVICE_ID_SESSION_KEY, None)
    request.session.pop(OTP_AT_SESSION_KEY, None)
    request.session.pop(SESSION_ENDED_KEY, None)
    user = getattr(request, "user", None)
    if user is not None and hasattr(user, "otp_device"):
        user.otp_device = None
    now = timezone.now()
    request.session[SIGNED_IN_AT_SESSION_KEY] = now.timestamp()
    record_activity(request.session, now)


def end_session(request, action: AuditAction | None) -> None:
    """Sign the user out, recording ``action`` (None: the caller recorded why).

    Several requests of one session can find it ended at once (a page and
    its API calls, all past the idle limit; a double-clicked sign-out): only
    the request that removes the session's row records why it ended.
    """
    session_key = request.session.session_key
    if action is not None and session_key:
        removed, _ = Session.objects.filter(session_key=session_key).delete()
        if not removed:
            action = None
    setattr(request, SESSION_END_ATTRIBUTE, action)
    logout(request)
    # The fresh session says this browser's session ended, so that another
    # tab still open on it is told so, not that it never signed in.
    request.session[SESSION_ENDED_KEY] = True


def session_end_due(session, now: datetime.datetime) -> AuditAction | None:
    """Why a signed-in session must end at ``now``, or None while it may go on.

    SESSION_EXPIRED past its absolute lifetime, IDLE_LOGOUT after the idle
    limit without a request from its user (45 CFR 164.312(a)(2)(iii)).
    ``session`` is a request's session or a stored session's decoded data.
    """
    signed_in_at = session.get(SIGNED_IN_AT_SESSION_KEY)
    if signed_in_at is None:
        # A signed-in session without a start time predates this rule, or
        # was tampered with: fail closed.
        return AuditAction.SESSION_EXPIRED
    if (
        now.timestamp() - float(signed_in_at)
        >= settings.SESSION_ABSOLUTE_LIFETIME_SECONDS
    ):
        return AuditAction.SESSION_EXPIRED

    last = last_activity(session)
    idle_limit = datetime.timedelta(seconds=settings.SESSION_SECURITY_EXPIRE_AFTER)
    if last is not None and now - last >= idle_limit:
        return AuditAction.IDLE_LOGOUT
    return None


ABANDONED_SESSION_REASON = "no request since the limit: ended by the session sweep"


def end_abandoned_sessions(now: datetime.datetime | None = None) -> int:
    """End and record the signed-in sessions whose browser never came back.

    The idle sign-out happens on a session's next request; a browser closed
    or lost makes none, and its session's end would never be recorded.
    Celery beat runs this every minute. Each session is removed and its end
    recorded in one transaction: if the audit write fails the session stays
    for the next run, so an end is never lost (at worst recorded twice).
    Returns how many sessions it ended; the run's events share a request id.
    """
    with request_context.own_request_id():
        return _end_abandoned_sessions(now or timezone.now())


def _end_abandoned_sessions(now: datetime.datetime) -> int:
    idle_limit = datetime.timedelta(seconds=settings.SESSION_SECURITY_EXPIRE_AFTER)
    # A session is saved on every request that counts as activity, which
    # sets its expiry SESSION_COOKIE_AGE ahead: one whose expiry is nearer
    # than that minus the idle limit has had no such request since.
    quiet_since = (
        now - idle_limit + datetime.timedelta(seconds=settings.SESSION_COOKIE_AGE)
    )
    store = SessionStore()
    ended = 0
    for stored in Session.objects.filter(expire_date__lte=quiet_since).iterator():
        data = store.decode(stored.session_data)
        user_id = data.get(auth.SESSION_KEY)
        action = session_end_due(data, now) if user_id is not None else None
        if action is None:
            continue
        with transaction.atomic():
            removed, _ = Session.objects.filter(
                session_key=stored.session_key, session_data=stored.session_data
            ).delete()
            if not removed:
                # Ended or used by a request since it was read.
                continue
            record_event(
                actor=_session_owner(user_id), action=action,
                outcome=AuditOutcome.SUCCESS, reason=ABANDONED_SESSION_REASON,
            )  # fmt: skip
        ended += 1

    if ended:
        logger.info("Ended %d abandoned session(s)", ended)
    # Django's own expiry for what is left (anonymous sessions among them).
    SessionStore.clear_expired()
    return ended


def _session_owner(user_id):
    user = get_user_model().objects.filter(pk=user_id).first()
    # The account may have been deleted since: the event still says whose
    # session it was.
    return user if user is not None else f"system:deleted-user-{user_id}"


def _device_for_token(user, token: str):
    if is_ascii_digits(token):
        devices = TOTPAuthenticator.objects.filter(user=user, confirmed=True)
    else:
        devices = BackupCodeDevice.objects.filter(user=user, confirmed=True)
    return devices.select_for_update().first()


def _count_failure_toward_lockout(request, user) -> None:
    # A wrong code is a failed sign-in for django-axes: guessing codes with a
    # stolen password meets the same 5-failure lock as guessing passwords.
    user_login_failed.send(
        sender=OTP_FAILURE_SENDER,
        credentials=_lockout_credentials(user),
        request=request,
    )


def _mark_verified(request, device) -> None:
    django_otp.login(request, device)
    # django_otp.login() keeps the session key; a new one stops a session id
    # captured before the second factor from inheriting the verified state.
    request.session.cycle_key()
    request.session[OTP_AT_SESSION_KEY] = timezone.now().timestamp()


def _accept_second_factor(request, device, *, action, purpose: str) -> None:
    """The session is verified, the lockout count cleared, and the event written."""
    user = request.user
    _mark_verified(request, device)
    AxesProxyHandler.reset_attempts(username=user.get_username())
    record_event(
        actor=user, action=action, outcome=AuditOutcome.SUCCESS, purpose=purpose
    )


def verify_second_factor(request, token: str, *, step_up: bool = False) -> bool:
    """Check a one-time or backup code for the signed-in user.

    On success the session is marked verified under a new key and the
    lockout counter is cleared; on failure the refusal is audited and
    counted toward the account lockout. ``step_up`` records a repeated
    check before a sensitive action (STEP_UP) rather than a sign-in.
    """
    user = request.user
    token = token.strip()
    with transaction.atomic():
        device = _device_for_token(user, token)
        accepted = device is not None and device.verify_token(token)

    if not accepted:
        refusal = device.last_refusal if device is not None else Refusal.WRONG
        # The page tells a throttled user to wait rather than to retype.
        request.otp_refusal = refusal
        record_event(
            actor=user,
            action=REFUSAL_ACTIONS[refusal],
            outcome=AuditOutcome.FAILURE,
            purpose=_factor_name(device),
            reason=f"{refusal.value} (step-up)" if step_up else refusal.value,
        )
        _count_failure_toward_lockout(request, user)
        return False

    _accept_second_factor(
        request,
        device,
        action=AuditAction.STEP_UP if step_up else AuditAction.OTP_VERIFIED,
        purpose=_factor_name(device),
    )
    return True


def seconds_since_otp(session) -> float | None:
    verified_at = session.get(OTP_AT_SESSION_KEY)
    if verified_at is None:
        return None
    return timezone.now().timestamp() - float(verified_at)


def _factor_name(device) -> str:
    return "backup_code" if isinstance(device, BackupCodeDevice) else "totp"


def has_confirmed_device(user) -> bool:
    return TOTPAuthenticator.objects.filter(user=user, confirmed=True).exists()


def pending_authenticator(user) -> TOTPAuthenticator:
    """The unconfirmed authenticator being enrolled, made on first request.

    Reloading the enrolment page keeps the same secret, so a QR code already
    scanned stays valid.
    """
    device = TOTPAuthenticator.objects.filter(user=user, confirmed=False).first()
    if device is None:
        device = TOTPAuthenticator.objects.create(
            user=user, name="Authenticator app", confirmed=False
        )
    return device


def new_backup_code() -> str:
    text = b32encode(secrets.token_bytes(BACKUP_CODE_BYTES)).decode("ascii").lower()
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def issue_backup_codes(user) -> list[str]:
    """Replace the user's backup codes; the plaintext exists only in the reply."""
    BackupCodeDevice.objects.filter(user=user).delete()
    device = BackupCodeDevice.objects.create(
        user=user, name="Backup codes", confirmed=True
    )
    codes = [new_backup_code() for _ in range(BACKUP_CODE_COUNT)]
    BackupCode.objects.bulk_create(
        BackupCode(device=device, digest=backup_code_digest(code)) for code in codes
    )
    return codes


@dataclass(frozen=True)
class Enrolment:
    confirmed: bool
    backup_codes: tuple[str, ...] = ()


def confirm_enrolment(request, token: str) -> Enrolment:
    """Confirm the pending authenticator with a code it produced."""
    user = request.user
    with transaction.atomic():
        device = (
            TOTPAuthenticator.objects.filter(user=user, confirmed=False)
            .select_for_update()
            .first()
        )
        accepted = device is not None and device.verify_token(token.strip())
        if accepted:
            TOTPAuthenticator.objects.filter(user=user, confirmed=True).delete()
            device.confirmed = True
            device.save()
            codes = issue_backup_codes(user)

    if not accepted:
        record_event(
            actor=user,
            action=AuditAction.OTP_FAILED,
            outcome=AuditOutcome.FAILURE,
            purpose="enrolment",
            reason=device.last_refusal.value if device else Refusal.WRONG.value,
        )
        _count_failure_toward_lockout(request, user)
        return Enrolment(confirmed=False)

    _accept_second_factor(
        request, device, action=AuditAction.MFA_ENROLLED, purpose="totp"
    )
    return Enrolment(confirmed=True, backup_codes=tuple(codes))


def renew_factor_stamp(user) -> None:
    """End every session of ``user`` but the current one (see User.factor_stamp)."""
    user.factor_stamp = secrets.token_hex(16)
    user.save(update_fields=["factor_stamp"])


def reset_second_factor(*, actor, user) -> None:
    """An administrator removes a user's authenticator, backup codes and passkeys.

    The user enrols again at the next sign-in; every session of the user
    ends at its next request.
    """
    with transaction.atomic():
        TOTPAuthenticator.objects.filter(user=user).delete()
        BackupCodeDevice.objects.filter(user=user).delete()
        WebAuthnCredential.objects.filter(user=user).delete()
        renew_factor_stamp(user)
    record_event(
        actor=actor,
        action=AuditAction.MFA_RESET,
        outcome=AuditOutcome.SUCCESS,
        reason=f"account {user.get_username()}",
    )
    logger.info("Second factor reset for user %s by user %s", user.pk, actor.pk)


def unlock_account(*, actor, username: str) -> int:
    """An administrator lifts a lockout before its cool-off ends."""
    folded = username.strip().casefold()
    cleared = AxesProxyHandler.reset_attempts(username=folded)
    record_event(
        actor=actor,
        action=AuditAction.UNLOCK,
        outcome=AuditOutcome.SUCCESS,
        username=None,
        reason=f"account {folded}",
    )
    return cleared


def lockout_ends_at(username: str):
    """When the current lock on ``username`` lifts, or None if none is known."""
    latest = AccessAttempt.objects.filter(
        username=username.strip().casefold()
    ).aggregate(latest=Max("attempt_time"))["latest"]
    cool_off = get_cool_off()
    if latest is None or cool_off is None:
        return None
    return latest + cool_off


# django-session-security's key and format (naive UTC), so its script and
# ours read the same value.
ACTIVITY_SESSION_KEY = "_session_security"
ACTIVITY_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def last_activity(session) -> datetime.datetime | None:
    text = session.get(ACTIVITY_SESSION_KEY)
    try:
        naive = datetime.datetime.strptime(text, ACTIVITY_FORMAT)
    except (TypeError, ValueError):
        return None
    return naive.replace(tzinfo=datetime.UTC)


def record_activity(session, when: datetime.datetime) -> None:
    utc = when.astimezone(datetime.UTC).replace(tzinfo=None)
    session[ACTIVITY_SESSION_KEY] = utc.strftime(ACTIVITY_FORMAT)


def idle_seconds(session) -> int | None:
    last = last_activity(session)
    if last is None:
        return None
    return max(0, int((timezone.now() - last).total_seconds()))


def report_client_activity(session, idle_for: int) -> None:
    """A page reports the user moved or typed ``idle_for`` seconds ago.

    Only ever moves the last activity forward to what the page saw, never
    past now, so a tab left alone keeps nothing alive.
    """
    last = last_activity(session)
    reported = timezone.now() - datetime.timedelta(seconds=max(0, idle_for))
    if last is None or reported > last:
        record_activity(session, reported)


def change_password(request, form, token: str) -> bool:
    """Save a password change that carries the current password and a code.

    ``form`` is a bound, valid PasswordChangeForm (it checked the current
    password and the validators). Other sessions of the user end at their
    next request (Django's session hash); this one continues.
    """
    if not verify_second_factor(request, token, step_up=True):
        record_event(
            actor=request.user,
            action=AuditAction.PASSWORD_CHANGE_FAILED,
            outcome=AuditOutcome.FAILURE,
            reason="one-time code refused",
        )
        return False

    # The event is written inside the save's transaction: if the trail cannot
    # take it, the old password stays (fail closed).
    with transaction.atomic():
        user = form.save()
        record_event(
            actor=user,
            action=AuditAction.PASSWORD_CHANGED,
            outcome=AuditOutcome.SUCCESS,
        )
    update_session_auth_hash(request, user)
    logger.info("Password changed for user %s", user.pk)
    return True


def refuse_password_change(request) -> None:
    """A wrong current password at the change form: audited and counted.

    Otherwise anyone at an unattended, signed-in workstation could guess the
    password there without limit and without a trace.
    """
    record_event(
        actor=request.user,
        action=AuditAction.PASSWORD_CHANGE_FAILED,
        outcome=AuditOutcome.FAILURE,
        reason="current password wrong",
    )
    _count_failure_toward_lockout(request, request.user)


def record_passkey_verified(request, device) -> None:
    """A passkey stood in for the one-time code: the same state as a code."""
    _accept_second_factor(
        request, device, action=AuditAction.OTP_VERIFIED, purpose="passkey"
    )


def record_passkey_refused(request, code: str) -> None:
    user = request.user
    if not user.is_authenticated:
        return
    record_event(
        actor=user,
        action=AuditAction.OTP_FAILED,
        outcome=AuditOutcome.FAILURE,
        purpose="passkey",
        reason=code[:64],
    )
    _count_failure_toward_lockout(request, user)


def record_passkey_added(request) -> None:
    """A new passkey ends the user's other sessions; this one continues."""
    renew_factor_stamp(request.user)
    update_session_auth_hash(request, request.user)
    record_event(
        actor=request.user,
        action=AuditAction.MFA_ENROLLED,
        outcome=AuditOutcome.SUCCESS,
        purpose="passkey",
    )
