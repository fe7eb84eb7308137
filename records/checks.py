"""The ``hipaa`` system checks owned by records: the state of the encryption keys."""

from django.conf import settings
from django.core import checks

from records import crypto


@checks.register("hipaa")
def check_encryption_keys(app_configs=None, **kwargs):
    """Warn about an old current key, unwrapped keys, or an unfinished rotation."""
    try:
        ring = crypto.keyring()
    except crypto.KeyringUnavailable as error:
        return [checks.Error(str(error), id="hipaa.E201")]

    found = []
    age = ring.current_key_age()
    limit = settings.PORTAL_KEY_MAX_AGE_DAYS
    if age is None or age.days >= limit:
        found.append(
            checks.Warning(
                f"the current data key is older than {limit} days "
                "(or its age is unknown)",
                hint="run manage.py rotate_keys",
                id="hipaa.W202",
            )
        )
    if not ring.wrapped:
        found.append(
            checks.Warning(
                "the keyring holds data keys that no master key wraps",
                hint="run manage.py rotate_keys to wrap them",
                id="hipaa.W203",
            )
        )
    if ring.rotation:
        found.append(
            checks.Warning(
                "a key rotation was started and not finished",
                hint="run manage.py rotate_keys to resume it",
                id="hipaa.W204",
            )
        )
    if ring.superseded:
        found.append(
            checks.Warning(
                "the keyring in use was re-wrapped under a new master key into "
                f"{ring.superseded['keyring']}",
                hint="point PORTAL_KEYRING_FILE and the master key settings at the "
                "new pair and restart (README, Replacing the master key)",
                id="hipaa.W205",
            )
        )
    return found
