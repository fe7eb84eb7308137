import enum
import hmac
import secrets
from base64 import b32encode
from functools import cached_property
from urllib.parse import quote, urlencode

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import connections, models, router
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django_otp.models import Device, ThrottlingMixin, TimestampMixin
from django_otp.oath import hotp

from accounts.roles import Role
from ehr_portal.digits import is_ascii_digits
from records import crypto
from records.fields import EncryptedTextField, SealedModel

# The user's groups, each with the records app's permissions it grants (none:
# NULL), then the records app's permissions granted to the user directly.
ROLES_AND_RECORD_GRANTS = """
    SELECT g.name, granted.codename
    FROM accounts_user_groups AS member
    JOIN auth_group AS g ON g.id = member.group_id
    LEFT JOIN (
        SELECT gp.group_id, p.codename
        FROM auth_group_permissions AS gp
        JOIN auth_permission AS p ON p.id = gp.permission_id
        JOIN django_content_type AS ct ON ct.id = p.content_type_id
        WHERE ct.app_label = 'records'
    ) AS granted ON granted.group_id = g.id
    WHERE member.user_id = %s
    UNION ALL
    SELECT NULL, p.codename
    FROM accounts_user_user_permissions AS up
    JOIN auth_permission AS p ON p.id = up.permission_id
    JOIN django_content_type AS ct ON ct.id = p.content_type_id
    WHERE up.user_id = %s AND ct.app_label = 'records'
"""

TOTP_STEP_SECONDS = 30
TOTP_DIGITS = 6
SEED_BYTES = 20
BACKUP_CODE_PURPOSE = "accounts.backup_code"


def connection_for(model):
    return connections[router.db_for_read(model)]


class User(AbstractUser):
    """A portal user; what they may do comes from their role groups."""

    # Changed whenever a sign-in factor is added or removed. It is part of the
    # session hash, so every other session of the user ends at its next
    # request, as Django does for a password change (ASVS V7.4.3).
    factor_stamp = models.CharField(max_length=32, blank=True, default="")

    def _get_session_auth_hash(self, secret=None):
        key_salt = "accounts.User.session_auth_hash"
        return salted_hmac(
            key_salt,
            f"{self.password}\x00{self.factor_stamp}",
            secret=secret,
            algorithm="sha256",
        ).hexdigest()

    @cached_property
    def _roles_and_record_grants(self) -> tuple[frozenset[Role], frozenset[str]]:
        # Both are asked on every chart open: one short query, written out
        # whole, costs a fraction of the two the ORM builds for them.
        with connection_for(type(self)).cursor() as cursor:
            cursor.execute(ROLES_AND_RECORD_GRANTS, [self.pk, self.pk])
            rows = cursor.fetchall()
        names = {name for name, _codename in rows if name is not None}
        roles = frozenset(role for role in Role if role.value in names)
        return roles, frozenset(codename for _name, codename in rows if codename)

    @property
    def roles(self) -> frozenset[Role]:
        return self._roles_and_record_grants[0]

    @property
    def record_grants(self) -> frozenset[str]:
        """Codenames of the records app's permissions held, alone or by a group.

        What ``has_perm`` would answer for them, for an active user who is
        not a superuser (records.sensitivity asks only about those).
        """
        return self._roles_and_record_grants[1]

    def has_role(self, role: Role) -> bool:
        return role in self.roles

    @property
    def is_clinician(self) -> bool:
        """Treats patients: a clinical role, and no hand in administering the portal.

        Separation of duties: an account that assigns care teams must not
        open what it assigns, whatever clinical role it also holds.
        """
        if Role.ADMIN in self.roles:
            return False
        return any(role.is_clinician for role in self.roles)

    @property
    def primary_role(self) -> Role | None:
        for role in Role:
            if role in self.roles:
                return role
        return None


class Refusal(enum.Enum):
    """Why a device refused a code; the audit trail tells these apart."""

    WRONG = "wrong"
    REPLAYED = "replayed"
    THROTTLED = "throttled"


class RefusingThrottleMixin(ThrottlingMixin):
    """django-otp's growing delays, remembering why the last code was refused."""

    last_refusal: Refusal | None = None

    class Meta:
        abstract = True

    def get_throttle_factor(self) -> int:
        return getattr(settings, "OTP_TOTP_THROTTLE_FACTOR", 1)

    def _throttled(self) -> bool:
        self.last_refusal = None
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            self.last_refusal = Refusal.THROTTLED
        return not allowed


def new_device_id() -> int:
    """A random 62-bit key, known before the first save.

    The sealed seed's associated data names its row, so the row id must
    exist before the seed is sealed; django-otp's persistent ids need an
    integer ``id``.
    """
    return secrets.randbits(62) + 1


def new_seed_hex() -> str:
    return secrets.token_bytes(SEED_BYTES).hex()


def current_unix_time() -> float:
    # Through django.utils.timezone so that a test can travel in time.
    return timezone.now().timestamp()


class TOTPAuthenticator(TimestampMixin, RefusingThrottleMixin, Device, SealedModel):
    """An authenticator app (RFC 6238), its seed sealed with the field keyring.

    django-otp's own TOTPDevice keeps the seed in clear, so a database dump
    would let anyone mint codes. ``last_t`` refuses a code whose time step is
    not newer than the last one accepted, across processes and restarts.
    """

    id = models.BigIntegerField(primary_key=True, default=new_device_id)
    key = EncryptedTextField(default=new_seed_hex)
    tolerance = models.PositiveSmallIntegerField(default=1)
    last_t = models.BigIntegerField(default=-1)

    class Meta(Device.Meta):
        verbose_name = "authenticator app"

    @property
    def bin_key(self) -> bytes:
        return bytes.fromhex(self.key)

    def current_step(self) -> int:
        return int(current_unix_time() // TOTP_STEP_SECONDS)

    def code_at(self, step: int) -> str:
        return f"{hotp(self.bin_key, step, TOTP_DIGITS):0{TOTP_DIGITS}d}"

    def current_code(self) -> str:
        return self.code_at(self.current_step())

    def _matching_step(self, token: str) -> int | None:
        now = self.current_step()
        # The current step first, then one step either side at most.
        for offset in sorted(range(-self.tolerance, self.tolerance + 1), key=abs):
            if hmac.compare_digest(self.code_at(now + offset), token):
                return now + offset
        return None

    def verify_token(self, token) -> bool:
        if self._throttled():
            return False

        token = str(token).strip()
        step = self._matching_step(token) if is_ascii_digits(token) else None
        if step is not None and step > self.last_t:
            self.last_t = step
            self.throttle_reset(commit=False)
            self.set_last_used_timestamp(commit=False)
            self.save()
            return True

        self.last_refusal = Refusal.WRONG if step is None else Refusal.REPLAYED
        self.throttle_increment(commit=True)
        return False

    def provisioning_uri(self) -> str:
        """The otpauth:// URI an authenticator app reads from the QR code."""
        issuer = getattr(settings, "OTP_TOTP_ISSUER", "EHR Portal")
        label = quote(f"{issuer}:{self.user.get_username()}")
        query = urlencode(
            {
                "secret": self.base32_secret(),
                "issuer": issuer,
                "algorithm": "SHA1",
                "digits": TOTP_DIGITS,
                "period": TOTP_STEP_SECONDS,
            }
        )
        return f"otpauth://totp/{label}?{query}"

    def base32_secret(self) -> str:
        return b32encode(self.bin_key).decode("ascii")


def normalise_backup_code(token: str) -> str:
    return "".join(ch for ch in str(token).casefold() if ch.isalnum())


def backup_code_digest(token: str) -> str:
    """HMAC-SHA-256 of a normalised code under the keyring's non-rotating tag key.

    Codes carry 120 bits, so a keyed fast hash is enough (ASVS V6.5.2) and
    a code can be found by its digest without trying each stored one. The
    plaintext is never kept, so the digest could not be rebuilt under a new
    index key: it uses the key that does not rotate.
    """
    return crypto.dedupe_tag(BACKUP_CODE_PURPOSE, normalise_backup_code(token))


class BackupCodeDevice(RefusingThrottleMixin, Device):
    """A user's set of single-use backup codes, stored as keyed digests only."""

    class Meta(Device.Meta):
        verbose_name = "backup code set"

    def verify_token(self, token) -> bool:
        if self._throttled():
            return False

        digest = backup_code_digest(token)
        # A conditional update: two requests racing with one code cannot
        # both see it unused.
        used = self.codes.filter(digest=digest, used_at__isnull=True).update(
            used_at=timezone.now()
        )
        if used:
            self.throttle_reset(commit=True)
            return True

        spent = self.codes.filter(digest=digest).exists()
        self.last_refusal = Refusal.REPLAYED if spent else Refusal.WRONG
        self.throttle_increment(commit=True)
        return False

    def remaining(self) -> int:
        return self.codes.filter(used_at__isnull=True).count()


class BackupCode(models.Model):
    device = models.ForeignKey(
        BackupCodeDevice, on_delete=models.CASCADE, related_name="codes"
    )
    digest = models.CharField(max_length=64, unique=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"Backup code {self.pk}"
