"""What administrators change about accounts and groups in /admin/, on the record.

Django's admin keeps its own history (django_admin_log) in the clinical
database, where rows can be edited or removed; who gave whom which privileges
belongs in the write-once trail. Every function here runs inside a transaction
of the clinical database and writes its events last: a change that fails
writes no event, and an audit outage (AuditUnavailable) rolls the change back,
so nothing changes that the trail does not show.

Events name accounts by username and groups by name (staff, never patients),
list the attributes that changed, and never carry a password or its hash.
"""

import logging
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from audit.models import AuditAction, AuditOutcome
from audit.services import record_change_events, record_event

logger = logging.getLogger(__name__)

ACCOUNT_RECORD = "User"
GROUP_RECORD = "Group"
REASON_LIMIT = 255
FLAGS = ("is_active", "is_staff", "is_superuser")
# Compared to name what changed; their values never reach the trail.
DETAILS = ("first_name", "last_name", "email", "last_login", "date_joined")


class AccountHasHistory(Exception):
    """An account that has signed in is deactivated, never deleted."""


@dataclass(frozen=True)
class AccountPrivileges:
    """What an account may do, as stored: its flags, role groups and own grants."""

    username: str
    is_active: bool
    is_staff: bool
    is_superuser: bool
    groups: frozenset[str]
    user_permissions: frozenset[str]
    details: tuple = ()


@dataclass(frozen=True)
class GroupPrivileges:
    name: str
    permissions: frozenset[str]
    members: int


def _permission_names(permissions) -> frozenset[str]:
    pairs = permissions.values_list("content_type__app_label", "codename")
    return frozenset(f"{app_label}.{codename}" for app_label, codename in pairs)


def account_privileges(user) -> AccountPrivileges:
    """The account as the database holds it.

    Read afresh rather than from ``user``: by the time the admin saves, its
    form has already written the new values onto the instance.
    """
    stored = get_user_model().objects.get(pk=user.pk)
    return AccountPrivileges(
        username=stored.get_username(),
        is_active=stored.is_active,
        is_staff=stored.is_staff,
        is_superuser=stored.is_superuser,
        groups=frozenset(stored.groups.values_list("name", flat=True)),
        user_permissions=_permission_names(stored.user_permissions.all()),
        details=tuple(getattr(stored, name) for name in DETAILS),
    )


def group_privileges(group) -> GroupPrivileges:
    stored = Group.objects.get(pk=group.pk)
    return GroupPrivileges(
        name=stored.name,
        permissions=_permission_names(stored.permissions.all()),
        members=stored.user_set.count(),
    )


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _set_changes(attribute: str, before, after) -> list[tuple[str, str]]:
    added = [(attribute, f"{attribute} +{name}") for name in sorted(after - before)]
    removed = [(attribute, f"{attribute} -{name}") for name in sorted(before - after)]
    return added + removed


def account_changes(
    before: AccountPrivileges, after: AccountPrivileges
) -> list[tuple[str, str]]:
    """(attribute, description) for each difference.

    Flags read ``is_superuser no -> yes``; groups and permissions read
    ``groups +physician`` or ``user_permissions -records.view_hiv``.
    """
    changes = []
    if before.username != after.username:
        changes.append(("username", f"username {before.username} -> {after.username}"))
    for flag in FLAGS:
        old, new = getattr(before, flag), getattr(after, flag)
        if old != new:
            changes.append((flag, f"{flag} {_yes_no(old)} -> {_yes_no(new)}"))
    changes += _set_changes("groups", before.groups, after.groups)
    changes += _set_changes(
        "user_permissions", before.user_permissions, after.user_permissions
    )
    return changes


def account_held(privileges: AccountPrivileges) -> list[tuple[str, str]]:
    """(attribute, description) for what an account holds, when it comes or goes."""
    held = [(flag, f"{flag} yes") for flag in FLAGS if getattr(privileges, flag)]
    held += [("groups", f"groups {name}") for name in sorted(privileges.groups)]
    held += [
        ("user_permissions", f"user_permissions {name}")
        for name in sorted(privileges.user_permissions)
    ]
    return held


def group_changes(
    before: GroupPrivileges, after: GroupPrivileges
) -> list[tuple[str, str]]:
    changes = []
    if before.name != after.name:
        changes.append(("name", f"name {before.name} -> {after.name}"))
    changes += _set_changes("permissions", before.permissions, after.permissions)
    return changes


def group_held(privileges: GroupPrivileges) -> list[tuple[str, str]]:
    return [
        ("permissions", f"permissions {name}")
        for name in sorted(privileges.permissions)
    ]


def _reasons(subject: str, descriptions: list[str]) -> list[str]:
    """The descriptions in as few reasons as the column holds, each naming the subject.

    A long change (dozens of permissions at once) becomes several events
    marked (1/3), (2/3)... rather than one reason cut short.
    """
    parts, current = [], []
    for description in descriptions:
        candidate = "; ".join([*current, description])
        if current and len(f"{subject} (99/99): {candidate}") > REASON_LIMIT:
            parts.append(current)
            current = [description]
        else:
            current.append(description)
    parts.append(current)

    if len(parts) == 1:
        return [f"{subject}: {'; '.join(parts[0])}" if parts[0] else subject]
    return [
        f"{subject} ({number}/{len(parts)}): {'; '.join(part)}"
        for number, part in enumerate(parts, start=1)
    ]


def _attribute_names(changes, other_fields=()) -> list[str]:
    names = [*other_fields, *(attribute for attribute, _ in changes)]
    return list(dict.fromkeys(names))


def changed_details(before: AccountPrivileges, after: AccountPrivileges) -> list[str]:
    return [
        name
        for name, old, new in zip(DETAILS, before.details, after.details, strict=True)
        if old != new
    ]


def _write(*, actor, action, record_type, subject, fields, descriptions):
    record_change_events(
        actor=actor,
        action=action,
        entries=[
            (record_type, fields, reason) for reason in _reasons(subject, descriptions)
        ],
    )


def record_account_created(*, actor, user) -> None:
    """An administrator added an account (call inside the saving transaction)."""
    after = account_privileges(user)
    changes = account_held(after)
    fields = ["username", *(["password"] if user.has_usable_password() else [])]

    _write(
        actor=actor,
        action=AuditAction.USER_CREATED,
        record_type=ACCOUNT_RECORD,
        subject=f"account {after.username}",
        fields=_attribute_names(changes, fields),
        descriptions=[description for _, description in changes],
    )
    logger.info("Account %s created by user %s", user.pk, actor.pk)


def record_account_changed(*, actor, user, before) -> None:
    """An administrator saved an account (call inside the saving transaction).

    ``before`` is account_privileges() read before the save. A change to the
    username, flags, groups or permissions is PRIVILEGES_CHANGED; a change to
    details alone (names, e-mail) is ACCOUNT_UPDATED, naming the fields but
    never their values.
    """
    after = account_privileges(user)
    changes = account_changes(before, after)
    fields = _attribute_names(changes) + changed_details(before, after)
    if not fields:
        return

    _write(
        actor=actor,
        action=AuditAction.PRIVILEGES_CHANGED
        if changes
        else AuditAction.ACCOUNT_UPDATED,
        record_type=ACCOUNT_RECORD,
        subject=f"account {after.username}",
        fields=fields,
        descriptions=[description for _, description in changes],
    )
    logger.info("Account %s changed by user %s", user.pk, actor.pk)


def set_account_password(*, actor, form):
    """An administrator sets (or disables) another user's password.

    ``form`` is a bound, valid AdminPasswordChangeForm. The password is part
    of the session hash (User._get_session_auth_hash), so every session of
    that user ends at its next request. Returns the user.
    """
    with transaction.atomic():
        user = form.save()
        usable = user.has_usable_password()
        record_event(
            actor=actor,
            action=AuditAction.PASSWORD_SET,
            outcome=AuditOutcome.SUCCESS,
            record_type=ACCOUNT_RECORD,
            fields=["password"],
            reason=f"account {user.get_username()}"
            + ("" if usable else ": password sign-in disabled"),
        )

    logger.info("Password set for user %s by user %s", user.pk, actor.pk)
    return user


def deletion_refusals(users) -> list[str]:
    """Why some of ``users`` cannot be deleted: they have signed in.

    The trail names such an account by its id, and Django's admin history of
    it would go with the row; deactivating keeps both and still ends its
    sessions. Clinical rows that name a user (care teams, break-the-glass)
    PROTECT it as well.
    """
    return [
        f"{user.get_username()}: has signed in, so it is deactivated, not deleted"
        for user in users
        if user.last_login is not None
    ]


def delete_accounts(*, actor, users) -> int:
    """Delete accounts that never signed in (one created by mistake)."""
    users = list(users)
    if deletion_refusals(users):
        raise AccountHasHistory("an account that has signed in is deactivated")

    with transaction.atomic():
        entries = []
        for user in users:
            held = account_held(account_privileges(user))
            reasons = _reasons(
                f"account {user.get_username()}", [text for _, text in held]
            )
            entries += [(ACCOUNT_RECORD, ["username"], reason) for reason in reasons]
            user.delete()
        record_change_events(
            actor=actor, action=AuditAction.USER_DELETED, entries=entries
        )

    logger.info("%s account(s) deleted by user %s", len(users), actor.pk)
    return len(users)


def deactivate_accounts(*, actor, users) -> int:
    """Take sign-in away from accounts, keeping them and their history.

    An inactive user is signed out at the next request (Django's model
    backend gives no user for an inactive account).
    """
    with transaction.atomic():
        entries = []
        for user in users:
            if not user.is_active:
                continue
            user.is_active = False
            user.save(update_fields=["is_active"])
            entries.append(
                (
                    ACCOUNT_RECORD,
                    ["is_active"],
                    f"account {user.get_username()}: is_active yes -> no",
                )
            )
        record_change_events(
            actor=actor, action=AuditAction.PRIVILEGES_CHANGED, entries=entries
        )

    logger.info("%s account(s) deactivated by user %s", len(entries), actor.pk)
    return len(entries)


def _group_subject(privileges: GroupPrivileges) -> str:
    return f"group {privileges.name} ({privileges.members} members)"


def record_group_saved(*, actor, group, before) -> None:
    """An administrator added or saved a group (call inside the saving transaction).

    Roles are groups by name, so renaming one changes what its members may do.
    """
    after = group_privileges(group)
    changes = group_held(after) if before is None else group_changes(before, after)
    if before is not None and not changes:
        return

    _write(
        actor=actor,
        action=AuditAction.GROUP_CREATED
        if before is None
        else AuditAction.PRIVILEGES_CHANGED,
        record_type=GROUP_RECORD,
        subject=_group_subject(after),
        fields=_attribute_names(changes, ["name"] if before is None else []),
        descriptions=[description for _, description in changes],
    )
    logger.info("Group %s saved by user %s", group.pk, actor.pk)


def delete_groups(*, actor, groups) -> int:
    """Delete groups; their members lose what the groups gave them."""
    groups = list(groups)
    with transaction.atomic():
        entries = []
        for group in groups:
            held = group_privileges(group)
            descriptions = [text for _, text in group_held(held)]
            entries += [
                (GROUP_RECORD, ["name"], reason)
                for reason in _reasons(_group_subject(held), descriptions)
            ]
            group.delete()
        record_change_events(
            actor=actor, action=AuditAction.GROUP_DELETED, entries=entries
        )

    logger.info("%s group(s) deleted by user %s", len(groups), actor.pk)
    return len(groups)
