"""Accounts and groups in /admin/: every change to who may do what is audited.

The admin saves a change object, its many-to-many fields and its history row
in one transaction; the audit events are written inside it, after the save
(accounts.administration), so an audit outage undoes the whole change and
the administrator sees the 503 page instead of a success message.
"""

import unicodedata

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import router, transaction
from django.db.models import Q
from django.shortcuts import redirect
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from accounts.administration import (
    account_privileges,
    deactivate_accounts,
    delete_accounts,
    delete_groups,
    deletion_refusals,
    group_privileges,
    record_account_changed,
    record_account_created,
    record_group_saved,
    set_account_password,
)
from accounts.decorators import step_up_required
from accounts.models import User
from accounts.roles import Role
from accounts.services import reset_second_factor, unlock_account

# Where the state before a save waits for the audit write after it: the form
# is made for this one request, so nothing is shared between requests.
BEFORE_ATTRIBUTE = "portal_privileges_before"


ADMINISTRATOR_ACCOUNT_REFUSED = (
    "Only a superuser changes, deactivates, deletes or unlocks another "
    "administrator's account, or sets its password or resets its authenticator."
)


def may_manage_account(actor, user) -> bool:
    """Whether ``actor`` may change, take over or remove ``user``'s account.

    An administrator who could act on another administrator's account
    (grant it permissions, sign in as it, switch it off) could use it to
    change their own privileges or unmake a superuser: only a superuser may.
    """
    return actor.is_superuser or not (user.is_staff or user.is_superuser)


def _manageable(request, queryset) -> list:
    allowed = [user for user in queryset if may_manage_account(request.user, user)]
    if len(allowed) < len(queryset):
        messages.error(request, ADMINISTRATOR_ACCOUNT_REFUSED)
    return allowed


@admin.action(description="Reset authenticator (user enrols again at next sign-in)")
def reset_authenticator(modeladmin, request, queryset):
    allowed = _manageable(request, queryset)
    for user in allowed:
        reset_second_factor(actor=request.user, user=user)
    if allowed:
        messages.success(request, f"Authenticator reset for {len(allowed)} user(s).")


@admin.action(description="Unlock account (lift a sign-in lockout)")
def unlock(modeladmin, request, queryset):
    # Lifting another administrator's lockout would let more passwords be
    # guessed at their account.
    allowed = _manageable(request, queryset)
    for user in allowed:
        unlock_account(actor=request.user, username=user.get_username())
    if allowed:
        messages.success(request, f"Unlocked {len(allowed)} account(s).")


@admin.action(
    description="Deactivate account (ends sign-in, keeps history)",
    permissions=["change"],
)
def deactivate(modeladmin, request, queryset):
    allowed = _manageable(request, queryset)
    if allowed:
        count = deactivate_accounts(actor=request.user, users=allowed)
        messages.success(request, f"Deactivated {count} account(s).")


def _kept_from_deletion(model, permissions_needed, protected, reasons):
    """The deletion page's lists with ``reasons`` shown as protected rows.

    Django would otherwise blame a missing permission (has_delete_permission
    refused the row); a protected line keeps every row and says why.
    """
    if not reasons:
        return permissions_needed, protected
    permissions_needed = set(permissions_needed) - {str(model._meta.verbose_name)}
    return permissions_needed, [*protected, *reasons]


class AuditedActionsMixin:
    def response_action(self, request, queryset):
        # An action changes several rows and writes their events; an audit
        # outage part-way must leave none of the rows changed.
        with transaction.atomic(using=router.db_for_write(self.model)):
            return super().response_action(request, queryset)


class AuditedSaveMixin:
    """Reads the stored state before the admin saves, and audits after it.

    ``before_save`` reads what the database holds (the form has already put
    the new values on the object); ``record_saved`` writes the events once
    the row and its many-to-many fields are saved, inside the admin's
    transaction, so an audit outage undoes the change.
    """

    def before_save(self, obj):
        raise NotImplementedError

    def record_saved(self, request, form, change, before):
        raise NotImplementedError

    def save_model(self, request, obj, form, change):
        setattr(form, BEFORE_ATTRIBUTE, self.before_save(obj) if change else None)
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        self.record_saved(request, form, change, getattr(form, BEFORE_ATTRIBUTE))


# What an account may do: read-only on one's own page in the admin.
OWN_PRIVILEGES_NOTICE = (
    "What your own account may do (active, staff, superuser, groups, "
    "permissions) is changed by another administrator, never by yourself."
)
OWN_PRIVILEGE_FIELDS = (
    "is_active", "is_staff", "is_superuser", "groups", "user_permissions",
)  # fmt: skip
# Only a superuser makes or unmakes administrators (staff status, superuser
# status, the admin role): otherwise one administrator could make a second
# account and have it change what the first may do.
ADMINISTRATOR_FIELDS = ("is_staff", "is_superuser")
ONLY_SUPERUSERS_MAKE_ADMINISTRATORS = (
    "Only a superuser gives or takes the administrator role."
)


@admin.register(User)
class PortalUserAdmin(AuditedActionsMixin, AuditedSaveMixin, UserAdmin):
    actions = [reset_authenticator, unlock, deactivate]
    # Set by sign-ins and creation, never by hand; the form would also round
    # them to whole seconds and report them as changed.
    readonly_fields = ("last_login", "date_joined")

    def get_readonly_fields(self, request, obj=None):
        # Separation of duties: no one changes what their own account may do.
        # An administrator who gave themself a clinical role could then put
        # themself on a care team and read charts; another administrator must
        # make such a change, and it is audited under that one's name.
        readonly = super().get_readonly_fields(request, obj)
        if obj is not None and obj.pk == request.user.pk:
            return (*readonly, *OWN_PRIVILEGE_FIELDS)
        if not request.user.is_superuser:
            return (*readonly, *ADMINISTRATOR_FIELDS)
        return readonly

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if request.user.is_superuser or "groups" not in form.base_fields:
            return form

        class AdministratorRoleStaysForm(form):
            def clean_groups(self):
                groups = self.cleaned_data["groups"]
                held = self.instance.pk and self.instance.has_role(Role.ADMIN)
                given = any(group.name == Role.ADMIN.value for group in groups)
                if bool(held) != given:
                    raise ValidationError(ONLY_SUPERUSERS_MAKE_ADMINISTRATORS)
                return groups

        return AdministratorRoleStaysForm

    def _guarded(self, request, user) -> bool:
        # One's own account has rules of its own (get_readonly_fields).
        return user.pk != request.user.pk and not may_manage_account(request.user, user)

    def has_change_permission(self, request, obj=None):
        if obj is not None and self._guarded(request, obj):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and self._guarded(request, obj):
            return False
        return super().has_delete_permission(request, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "GET":
            user = self.get_object(request, unquote(object_id))
            if user is not None and user.pk == request.user.pk:
                messages.info(request, OWN_PRIVILEGES_NOTICE)
            elif user is not None and self._guarded(request, user):
                messages.info(request, ADMINISTRATOR_ACCOUNT_REFUSED)
        return super().change_view(request, object_id, form_url, extra_context)

    def delete_view(self, request, object_id, extra_context=None):
        # Another administrator's account: its page says why, rather than
        # Django's bare 403.
        user = self.get_object(request, unquote(object_id))
        if user is not None and self._guarded(request, user):
            return redirect("admin:accounts_user_change", user.pk)
        return super().delete_view(request, object_id, extra_context)

    def before_save(self, obj):
        return account_privileges(obj)

    def record_saved(self, request, form, change, before):
        # Groups and permissions are saved after the row: only now is the
        # whole change in the database to compare.
        if change:
            record_account_changed(
                actor=request.user, user=form.instance, before=before
            )
        else:
            record_account_created(actor=request.user, user=form.instance)

    def get_deleted_objects(self, objs, request):
        deleted, counts, permissions_needed, protected = super().get_deleted_objects(
            objs, request
        )
        # Shown on the confirmation page like a PROTECTed row: nothing is
        # deleted, and the page names the accounts to deactivate instead.
        protected = [*protected, *deletion_refusals(objs)]
        guarded = [
            f"account {user.get_username()}: {ADMINISTRATOR_ACCOUNT_REFUSED}"
            for user in objs
            if self._guarded(request, user)
        ]
        permissions_needed, protected = _kept_from_deletion(
            User, permissions_needed, protected, guarded
        )
        return deleted, counts, permissions_needed, protected

    def delete_model(self, request, obj):
        delete_accounts(actor=request.user, users=[obj])

    def delete_queryset(self, request, queryset):
        delete_accounts(actor=request.user, users=queryset)

    @method_decorator(sensitive_post_parameters())
    def user_change_password(self, request, id, form_url=""):
        """Set another user's password; one's own is changed at /accounts/password/.

        Django's form here asks for no current password, so for one's own
        account it would skip the current password and the code.
        """
        user = self.get_object(request, unquote(id))
        if user is not None and user.pk == request.user.pk:
            return redirect("accounts:password_change")
        if user is not None and not may_manage_account(request.user, user):
            # The account's page, where the reason is shown.
            return redirect("admin:accounts_user_change", user.pk)
        return self._set_another_users_password(request, id, form_url, user)

    @method_decorator(step_up_required)
    def _set_another_users_password(self, request, id, form_url, user):
        # Taking over another account needs a code from the last five
        # minutes, not only a session left open.
        if request.method != "POST" or user is None:
            return super().user_change_password(request, id, form_url)
        if not self.has_change_permission(request, user):
            return super().user_change_password(request, id, form_url)

        form = self.change_password_form(user, request.POST)
        confirmed = form.is_valid() and (
            form.cleaned_data["set_usable_password"] or "unset-password" in request.POST
        )
        if not confirmed:
            # Django's view shows the errors or the conflicting-choice message.
            return super().user_change_password(request, id, form_url)

        with transaction.atomic(using=router.db_for_write(self.model)):
            user = set_account_password(actor=request.user, form=form)
            self.log_change(
                request, user, self.construct_change_message(request, form, None)
            )
        messages.success(
            request,
            "Password set; the user's sessions have ended."
            if user.has_usable_password()
            else "Password sign-in disabled; the user's sessions have ended.",
        )
        return redirect("admin:accounts_user_change", user.pk)


admin.site.unregister(Group)

# A role is a group's name (accounts.models.User.roles): renaming a group is
# giving or taking a role from every member at once, so role groups keep
# their names and no other group may take one.
ROLE_NAMES = frozenset(Role.values)
ROLE_NAME_TAKEN = (
    "This is the name of one of the portal's roles. Roles are given by adding "
    "people to the role's own group, not by naming another group after it."
)
OWN_GROUP_NOTICE = (
    "You belong to this group: what it may do is changed by another "
    "administrator, never by yourself."
)
ROLE_GROUP_STAYS = (
    "A role's own group is never deleted: that would take the role from "
    "everyone in it at once. Take people out of the group instead."
)


class PortalGroupForm(forms.ModelForm):
    class Meta:
        model = Group
        fields = ("name", "permissions")

    def clean_name(self):
        name = self.cleaned_data["name"]
        if _reads_as_a_role(name):
            raise ValidationError(ROLE_NAME_TAKEN)
        return name


# Letters of other scripts drawn like Latin ones in the admin's fonts.
LOOK_ALIKES = str.maketrans({
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x",
    "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "һ": "h", "ո": "n", "α": "a",
    "ο": "o", "ν": "v", "ι": "i", "ρ": "p", "τ": "t", "κ": "k", "ı": "i",
})  # fmt: skip


def _latin_skeleton(name: str) -> tuple[str, bool]:
    """The Latin letters and digits a reader sees in ``name``, and whether more.

    Case, width, accents and invisible marks are set aside and look-alike
    letters of other scripts read as Latin; whatever else is left out of the
    skeleton, and the flag says something was.
    """
    decomposed = unicodedata.normalize("NFKD", name).casefold()
    kept = "".join(
        ch for ch in decomposed if unicodedata.category(ch) not in ("Cf", "Mn")
    )
    read = kept.translate(LOOK_ALIKES)
    skeleton = "".join(ch for ch in read if ch.isascii() and ch.isalnum())
    other = any(not ch.isascii() and not ch.isspace() for ch in read)
    return skeleton, other


def _reads_as_a_role(name: str) -> bool:
    """Whether ``name`` would pass for a role's name in a list of groups.

    "PHYSICIAN", "export staff", a zero-width space, a Cyrillic "а" in
    "admin" or a filler character give no role, but beside the real group
    they read as it. A name with letters of other scripts counts when its
    Latin letters are the role's with one or two left out: a look-alike
    letter no table lists is what would leave that gap.
    """
    skeleton, other = _latin_skeleton(name)
    for role in ROLE_SKELETONS:
        if skeleton == role:
            return True
        if other and 0 < len(role) - len(skeleton) <= 2 and _within(skeleton, role):
            return True
    return False


def _within(part: str, whole: str) -> bool:
    """Whether ``part``'s letters appear in ``whole`` in the same order."""
    letters = iter(whole)
    return all(letter in letters for letter in part)


ROLE_SKELETONS = frozenset(_latin_skeleton(name)[0] for name in ROLE_NAMES)


ADMINISTRATORS_GROUP_NOTICE = (
    "Administrators belong to this group: only a superuser changes what it "
    "may do, as only a superuser changes another administrator's account."
)


def _is_member(user, group) -> bool:
    return user.groups.filter(pk=group.pk).exists()


def _holds_administrators(group) -> bool:
    return group.user_set.filter(Q(is_staff=True) | Q(is_superuser=True)).exists()


@admin.register(Group)
class PortalGroupAdmin(AuditedActionsMixin, AuditedSaveMixin, GroupAdmin):
    form = PortalGroupForm

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        if obj is not None and obj.name in ROLE_NAMES:
            return (*readonly, "name")
        return readonly

    def has_change_permission(self, request, obj=None):
        # Separation of duties, as for accounts: an administrator who could
        # change their own group could rename it into a clinical role or grant
        # it what administrators must not have, and one who could change a
        # group of other administrators could widen or strip what they may do.
        if obj is not None and self._why_kept(request, obj, renaming=False):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        # Deleting a role group takes the role from everyone at once.
        if obj is not None and self._why_kept(request, obj):
            return False
        return super().has_delete_permission(request, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        group = self.get_object(request, unquote(object_id))
        why = group and self._why_kept(request, group, renaming=False)
        if request.method == "GET" and why:
            messages.info(request, why)
        return super().change_view(request, object_id, form_url, extra_context)

    def _why_kept(self, request, group, *, renaming=True) -> str | None:
        """Why ``group`` may not be deleted (or, renaming=False, changed) here."""
        if renaming and group.name in ROLE_NAMES:
            return ROLE_GROUP_STAYS
        if _is_member(request.user, group):
            return OWN_GROUP_NOTICE
        if not request.user.is_superuser and _holds_administrators(group):
            return ADMINISTRATORS_GROUP_NOTICE
        return None

    def delete_view(self, request, object_id, extra_context=None):
        # Said in words on the group's page, rather than Django's bare 403.
        group = self.get_object(request, unquote(object_id))
        why = group and self._why_kept(request, group)
        if why:
            # The group's page says why it cannot be changed; a role group
            # that can be changed needs the reason it cannot be deleted.
            if not self._why_kept(request, group, renaming=False):
                messages.error(request, why)
            return redirect("admin:auth_group_change", group.pk)
        return super().delete_view(request, object_id, extra_context)

    def get_deleted_objects(self, objs, request):
        deleted, counts, permissions_needed, protected = super().get_deleted_objects(
            objs, request
        )
        # The bulk action's page would blame "related objects" otherwise; a
        # protected line keeps every group and says why.
        kept = [
            f"group {group.name}: {why}"
            for group in objs
            if (why := self._why_kept(request, group))
        ]
        permissions_needed, protected = _kept_from_deletion(
            Group, permissions_needed, protected, kept
        )
        return deleted, counts, permissions_needed, protected

    def before_save(self, obj):
        return group_privileges(obj)

    def record_saved(self, request, form, change, before):
        record_group_saved(actor=request.user, group=form.instance, before=before)

    def delete_model(self, request, obj):
        delete_groups(actor=request.user, groups=[obj])

    def delete_queryset(self, request, queryset):
        delete_groups(actor=request.user, groups=queryset)
