"""The audit trail: one row per access, sign-in or change, never edited.

45 CFR 164.312(b) asks for records of activity in systems holding ePHI. Rows
live in their own database and are refused any update or delete by the model,
its queryset and database triggers; audit.chain links them by keyed hashes.
"""

from django.db import models
from django.utils import timezone


class AuditAction(models.TextChoices):
    VIEWED = "VIEWED", "Viewed"
    ACCESS_DENIED = "DENIED", "Access denied"
    PATIENT_LIST = "PATIENT_LIST", "Patient list viewed"
    PATIENT_SEARCH = "PATIENT_SEARCH", "Patient search"
    LOGIN = "LOGIN", "Signed in (password)"
    LOGIN_FAILED = "LOGIN_FAILED", "Sign-in failed"
    OTP_VERIFIED = "OTP_VERIFIED", "One-time code accepted"
    OTP_FAILED = "OTP_FAILED", "One-time code refused"
    OTP_REPLAYED = "OTP_REPLAYED", "One-time code reused"
    MFA_ENROLLED = "MFA_ENROLLED", "Authenticator enrolled"
    MFA_RESET = "MFA_RESET", "Authenticator reset by an administrator"
    STEP_UP = "STEP_UP", "Identity confirmed again (step-up)"
    PASSWORD_CHANGED = "PASSWORD_CHANGED", "Password changed"
    PASSWORD_CHANGE_FAILED = "PASSWORD_CHANGE_FAILED", "Password change refused"
    LOGOUT = "LOGOUT", "Signed out"
    IDLE_LOGOUT = "IDLE_LOGOUT", "Signed out after inactivity"
    SESSION_EXPIRED = "SESSION_EXPIRED", "Signed out at the session's time limit"
    LOCKOUT = "LOCKOUT", "Account locked out"
    UNLOCK = "UNLOCK", "Account unlocked by an administrator"
    USER_CREATED = "USER_CREATED", "Account created by an administrator"
    USER_DELETED = "USER_DELETED", "Account deleted by an administrator"
    ACCOUNT_UPDATED = "ACCOUNT_UPDATED", "Account details changed by an administrator"
    PRIVILEGES_CHANGED = (
        "PRIVILEGES_CHANGED",
        "Privileges changed by an administrator",
    )
    PASSWORD_SET = "PASSWORD_SET", "Password set by an administrator"
    GROUP_CREATED = "GROUP_CREATED", "Group created by an administrator"
    GROUP_DELETED = "GROUP_DELETED", "Group deleted by an administrator"
    AUDIT_QUERY = "AUDIT_QUERY", "Audit trail queried"
    AUDIT_EXPORT = "AUDIT_EXPORT", "Audit trail exported (FHIR)"
    FHIR_IMPORT = "FHIR_IMPORT", "FHIR bundle imported"
    FHIR_IMPORT_FAILED = "FHIR_IMPORT_FAILED", "FHIR bundle refused"
    DEMO_SEEDED = "DEMO_SEEDED", "Demo data seeded"
    NOTE_CREATED = "NOTE_CREATED", "Note written"
    NOTE_DRAFT_KEPT = "NOTE_DRAFT_KEPT", "Unsent note kept at the idle warning"
    NOTE_DRAFT_DISCARDED = "NOTE_DRAFT_DISCARDED", "Kept unsent note discarded"
    BREAK_GLASS = "BREAK_GLASS", "Break-the-glass access"
    BREAK_GLASS_REFUSED = "BREAK_GLASS_REFUSED", "Break-the-glass refused"
    BREAK_GLASS_REVIEWED = "BREAK_GLASS_REVIEWED", "Break-the-glass reviewed"
    IDENTITY_REVIEWED = "IDENTITY_REVIEWED", "Patient identity reviewed"
    RECORD_CREATED = "RECORD_CREATED", "Clinical record created"
    CARE_RELATION_CHANGED = (
        "CARE_RELATION_CHANGED",
        "Care team, unit assignment or admission changed",
    )
    RECORD_RECLASSIFIED = "RECORD_RECLASSIFIED", "Clinical record's category changed"
    KEY_ROTATION_STARTED = "KEY_ROTATION_STARTED", "New encryption key made current"
    KEYS_ROTATED = "KEYS_ROTATED", "Encryption keys rotated"
    INTEGRITY_FAILURE = "INTEGRITY_FAILURE", "Stored value failed its integrity check"
    KEYS_UNAVAILABLE = "KEYS_UNAVAILABLE", "Encryption keys could not be loaded"
    MASTER_KEY_REPLACED = (
        "MASTER_KEY_REPLACED",
        "Keyring re-wrapped by a new master key",
    )


# What a chart's "recent access" panel lists, on every open of the chart.
CHART_ACCESS_ACTIONS = (AuditAction.VIEWED, AuditAction.NOTE_CREATED)


class AuditOutcome(models.TextChoices):
    SUCCESS = "success", "Success"
    DENIED = "denied", "Denied"
    FAILURE = "failure", "Failure"


class WriteOnceError(Exception):
    """Raised on any attempt to change or remove an audit event."""


class WriteOnceQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise WriteOnceError("audit events cannot be updated")

    def delete(self):
        raise WriteOnceError("audit events cannot be deleted")

    def bulk_update(self, objs, fields, batch_size=None):
        raise WriteOnceError("audit events cannot be updated")

    def update_or_create(self, *args, **kwargs):
        raise WriteOnceError("audit events cannot be updated")


class WriteOnceModel(models.Model):
    """A row of the audit database: inserted once, never changed or removed."""

    objects = WriteOnceQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise WriteOnceError("audit events cannot be updated")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise WriteOnceError("audit events cannot be deleted")


class ChainKeyFingerprint(WriteOnceModel):
    """Which chain key the trail is sealed with, without the key itself.

    Recorded by the first writer. A process started with another key (a
    mistyped PORTAL_AUDIT_CHAIN_KEY, a file from another deployment) then
    writes nothing, where it would otherwise seal events no verification with
    the right key can accept. The fingerprint is an HMAC of a fixed text
    under the key, so it tells nothing about the key.
    """

    # One row at most: every row takes slot 1, which is unique. Without it,
    # the writer role (which may INSERT) could record a second key beside the
    # first and have a process holding that key accepted.
    slot = models.PositiveSmallIntegerField(default=1, unique=True)
    fingerprint = models.CharField(max_length=64, unique=True)
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(slot=1), name="audit_one_chain_key"
            ),
        ]

    def __str__(self):
        return f"Chain key {self.fingerprint[:12]}"


class AuditEvent(WriteOnceModel):
    # Given out by audit.chain inside the insert transaction: gap-free, in
    # commit order. chain_hash is the HMAC over this event and the one before.
    sequence = models.BigIntegerField(unique=True)
    chain_hash = models.CharField(max_length=64)
    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    actor_username = models.CharField(max_length=150, db_index=True)
    actor_role = models.CharField(max_length=32, blank=True, default="")
    # No ``choices`` on these columns: the writer validates against the
    # enumerations, and a new action then needs no migration of the trail.
    action = models.CharField(max_length=32)
    outcome = models.CharField(max_length=16)
    # An opaque reference (the patient's UUID), never a name or MRN.
    patient_ref = models.CharField(max_length=64, blank=True, default="")
    record_type = models.CharField(max_length=64, blank=True, default="")
    fields = models.JSONField(default=list, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    device_fingerprint = models.CharField(max_length=64, blank=True, default="")
    purpose = models.CharField(max_length=255, blank=True, default="")
    reason = models.CharField(max_length=255, blank=True, default="")
    request_id = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["patient_ref", "-occurred_at"]),
            models.Index(fields=["action", "-occurred_at"]),
            # The chart's "recent access" panel reads a patient's newest events
            # on every open: in chain order, this index answers it in a few
            # rows however many times the chart has been opened before.
            models.Index(
                fields=["patient_ref", "-sequence"], name="audit_patient_recent_idx"
            ),
            # The panel's own index, holding only the actions it lists: the
            # newest ten are its first ten entries. Without statistics (a
            # trail that has not been analysed yet) PostgreSQL otherwise
            # combined two indexes and sorted every event of the patient.
            models.Index(
                fields=["patient_ref", "-sequence"],
                name="audit_chart_access_idx",
                condition=models.Q(action__in=[a.value for a in CHART_ACCESS_ACTIONS]),
            ),
        ]

    def __str__(self):
        return f"Audit event {self.pk}"

    @property
    def action_label(self) -> str:
        try:
            return AuditAction(self.action).label
        except ValueError:
            return self.action
