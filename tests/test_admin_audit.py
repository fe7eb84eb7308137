"""Every privilege an administrator gives or takes in /admin/ is on the record.

Driven through the admin pages as a verified administrator: flags, groups and
permissions on accounts and groups, accounts created, deleted or deactivated,
passwords set for others. An audit outage leaves everything as it was.
"""

import datetime
import zoneinfo

import pytest
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.roles import Role
from audit.models import AuditAction, AuditEvent
from records.demo import _grant_admin_permissions
from records.models import CareTeamMembership, CareTeamRole
from tests.conftest import add_to_care_team, make_user, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")

NEW_PASSWORD = "violet kestrel 48 marrow"
JOINED = datetime.datetime(2026, 1, 5, 9, 0, tzinfo=datetime.UTC)
User = get_user_model()


@pytest.fixture
def administrator(db):
    user = make_user("admin.ross", Role.ADMIN)
    User.objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
    return User.objects.get(pk=user.pk)


@pytest.fixture
def admin_client(administrator):
    return verified_client(administrator)


def fresh(user):
    return User.objects.get(pk=user.pk)


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


def permission(label: str) -> Permission:
    app_label, codename = label.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def change_form(user, **overrides) -> dict:
    """What the change page posts for ``user`` as stored, with ``overrides``."""
    User.objects.filter(pk=user.pk).update(date_joined=JOINED)
    user = fresh(user)
    # Shown, and read back, in the hospital's zone (DisplayTimeZoneMiddleware).
    joined = timezone.localtime(
        user.date_joined, zoneinfo.ZoneInfo(settings.PORTAL_TIME_ZONE)
    )
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": user.is_active,
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "groups": [group.pk for group in user.groups.all()],
        "user_permissions": [grant.pk for grant in user.user_permissions.all()],
        "date_joined_0": joined.date().isoformat(),
        "date_joined_1": joined.strftime("%H:%M:%S"),
        "last_login_0": "",
        "last_login_1": "",
    }
    data.update(overrides)
    # An unticked box is simply not posted.
    return {name: value for name, value in data.items() if value is not False}


def change_url(user) -> str:
    return f"/admin/accounts/user/{user.pk}/change/"


def test_making_a_nurse_superuser_and_physician_is_audited(admin_client, nurse):
    physician_group = Group.objects.get_or_create(name=Role.PHYSICIAN.value)[0]
    nurse_group = Group.objects.get(name=Role.NURSE.value)

    response = admin_client.post(
        change_url(nurse),
        change_form(
            nurse, is_superuser=True, groups=[nurse_group.pk, physician_group.pk]
        ),
    )

    assert response.status_code == 302
    assert fresh(nurse).is_superuser
    [event] = events(AuditAction.PRIVILEGES_CHANGED)
    assert event.actor_username == "admin.ross"
    assert event.record_type == "User"
    assert event.fields == ["is_superuser", "groups"]
    assert event.reason == (
        "account nurse.jones: is_superuser no -> yes; groups +physician"
    )


def test_taking_a_group_and_staff_status_away_reads_as_removed(admin_client, nurse):
    User.objects.filter(pk=nurse.pk).update(is_staff=True)

    admin_client.post(change_url(nurse), change_form(nurse, is_staff=False, groups=[]))

    [event] = events(AuditAction.PRIVILEGES_CHANGED)
    assert event.fields == ["is_staff", "groups"]
    assert event.reason == "account nurse.jones: is_staff yes -> no; groups -nurse"


def test_granting_a_sensitive_category_names_the_permission(admin_client, nurse):
    grant = permission("records.view_hiv")

    admin_client.post(
        change_url(nurse), change_form(nurse, user_permissions=[grant.pk])
    )

    assert fresh(nurse).has_perm("records.view_hiv")
    [event] = events(AuditAction.PRIVILEGES_CHANGED)
    assert event.fields == ["user_permissions"]
    assert event.reason == "account nurse.jones: user_permissions +records.view_hiv"


def test_many_permissions_at_once_are_told_in_full_over_several_events(
    admin_client, nurse
):
    grants = list(Permission.objects.order_by("pk")[:40])

    admin_client.post(
        change_url(nurse),
        change_form(nurse, user_permissions=[grant.pk for grant in grants]),
    )

    written = events(AuditAction.PRIVILEGES_CHANGED)
    assert len(written) > 1
    assert all(len(event.reason) <= 255 for event in written)
    assert written[0].reason.startswith(f"account nurse.jones (1/{len(written)}): ")
    told = " ".join(event.reason for event in written)
    for grant in grants:
        assert f"+{grant.content_type.app_label}.{grant.codename}" in told


def test_details_only_are_recorded_by_name_not_value(admin_client, nurse):
    admin_client.post(change_url(nurse), change_form(nurse, email="n.jones@ward.test"))

    assert not events(AuditAction.PRIVILEGES_CHANGED)
    [event] = events(AuditAction.ACCOUNT_UPDATED)
    assert event.fields == ["email"]
    assert event.reason == "account nurse.jones"


def test_saving_without_a_change_writes_no_event(admin_client, nurse):
    response = admin_client.post(change_url(nurse), change_form(nurse))

    assert response.status_code == 302
    assert not events(AuditAction.PRIVILEGES_CHANGED)
    assert not events(AuditAction.ACCOUNT_UPDATED)


def test_an_audit_outage_leaves_the_account_unchanged(
    admin_client, nurse, audit_outage
):
    physician_group = Group.objects.get_or_create(name=Role.PHYSICIAN.value)[0]
    data = change_form(nurse, is_superuser=True, groups=[physician_group.pk])

    response = admin_client.post(change_url(nurse), data)

    assert response.status_code == 503
    stored = fresh(nurse)
    assert not stored.is_superuser
    assert set(stored.groups.values_list("name", flat=True)) == {"nurse"}
    assert not LogEntry.objects.filter(object_id=str(nurse.pk)).exists()


def test_creating_an_account_is_audited(admin_client):
    response = admin_client.post(
        "/admin/accounts/user/add/",
        {
            "username": "nurse.new",
            "usable_password": "true",
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
        },
    )

    assert response.status_code == 302
    [event] = events(AuditAction.USER_CREATED)
    assert event.actor_username == "admin.ross"
    assert event.fields == ["username", "password", "is_active"]
    assert event.reason == "account nurse.new: is_active yes"
    assert NEW_PASSWORD not in event.reason


def test_an_audit_outage_creates_no_account(admin_client, audit_outage):
    response = admin_client.post(
        "/admin/accounts/user/add/",
        {
            "username": "nurse.new",
            "usable_password": "true",
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
        },
    )

    assert response.status_code == 503
    assert not User.objects.filter(username="nurse.new").exists()


def group_form(group, **overrides) -> dict:
    data = {
        "name": group.name,
        "permissions": [grant.pk for grant in group.permissions.all()],
    }
    data.update(overrides)
    return data


def save_group(client, group, **overrides):
    """Post the group's change page with ``overrides``, as the admin does."""
    return client.post(
        f"/admin/auth/group/{group.pk}/change/", group_form(group, **overrides)
    )


def test_a_group_permission_change_is_audited(admin_client, physician):
    group = Group.objects.get(name=Role.PHYSICIAN.value)
    grant = permission("records.view_psychotherapy")

    response = save_group(admin_client, group, permissions=[grant.pk])

    assert response.status_code == 302
    [event] = events(AuditAction.PRIVILEGES_CHANGED)
    assert (event.record_type, event.fields) == ("Group", ["permissions"])
    assert event.reason == (
        "group physician (1 members): permissions +records.view_psychotherapy"
    )


def test_renaming_a_group_is_audited(admin_client, physician):
    group = Group.objects.create(name="hiv_clinic")
    physician.groups.add(group)

    save_group(admin_client, group, name="hiv_team")

    [event] = events(AuditAction.PRIVILEGES_CHANGED)
    assert event.fields == ["name"]
    assert event.reason == "group hiv_team (1 members): name hiv_clinic -> hiv_team"


def test_a_role_group_keeps_its_name_and_cannot_be_deleted(admin_client, physician):
    group = Group.objects.get(name=Role.PHYSICIAN.value)

    page = admin_client.get(f"/admin/auth/group/{group.pk}/change/").content.decode()
    renamed = save_group(admin_client, group, name="doctors")
    deleted = admin_client.post(
        f"/admin/auth/group/{group.pk}/delete/", {"post": "yes"}
    )

    assert 'name="name"' not in page
    assert renamed.status_code == 302
    assert deleted.status_code == 302
    told = admin_client.get(deleted.url).content.decode()
    assert "never deleted: that would take the role from everyone" in told
    bulk = admin_client.post(
        "/admin/auth/group/",
        {"action": "delete_selected", "_selected_action": [group.pk], "post": "yes"},
    )
    assert "never deleted" in bulk.content.decode()
    assert "permission to delete the following types" not in bulk.content.decode()
    assert Group.objects.get(pk=group.pk).name == Role.PHYSICIAN.value
    assert fresh(physician).has_role(Role.PHYSICIAN)
    assert not events(AuditAction.PRIVILEGES_CHANGED)
    assert not events(AuditAction.GROUP_DELETED)


@pytest.mark.parametrize(
    "name",
    [
        Role.EXPORT_STAFF.value,
        "EXPORT_STAFF",
        " Export_Staff ",
        "export\u200b_staff",
        "export staff",
        "export\u00a0staff",
        "\u0435xport_staff",
        "expo\u0301rt-staff",
        "export.staff",
        "exportstaff",
        "export_staff\u3164",
        "exp\u0585rt_staff",
        "export_\u0455ta\u0192\u0192",
    ],
)
def test_no_other_group_takes_a_roles_name(admin_client, name):
    # As if the role's own group had gone: the name still belongs to the role.
    Group.objects.filter(name=Role.EXPORT_STAFF.value).delete()
    clerks = Group.objects.create(name="ward_clerks")

    created = admin_client.post("/admin/auth/group/add/", {"name": name})
    renamed = save_group(admin_client, clerks, name=name)

    for response in (created, renamed):
        assert response.status_code == 200
        assert "name of one of the portal&#x27;s roles" in response.content.decode()
    assert (
        list(
            Group.objects.values_list("name", flat=True).filter(name__icontains="staff")
        )
        == []
    )
    assert not events(AuditAction.GROUP_CREATED)


def test_an_administrator_cannot_turn_their_own_group_into_a_clinical_role(
    admin_client, administrator, marker_patient
):
    own = administrator.groups.get(name=Role.ADMIN.value)

    page = admin_client.get(f"/admin/auth/group/{own.pk}/change/").content.decode()
    renamed = save_group(admin_client, own, name=Role.PHYSICIAN.value)
    granted = save_group(
        admin_client, own, permissions=[permission("records.view_hiv").pk]
    )
    deleted = admin_client.post(f"/admin/auth/group/{own.pk}/delete/", {"post": "yes"})

    assert "changed by another administrator, never by yourself" in page
    assert (renamed.status_code, granted.status_code) == (403, 403)
    assert deleted.status_code == 302
    own.refresh_from_db()
    assert own.name == Role.ADMIN.value
    assert not own.permissions.exists()
    assert not fresh(administrator).is_clinician
    chart = admin_client.get(f"/patients/{marker_patient.pk}/")
    assert chart.status_code == 403


def test_an_audit_outage_leaves_the_group_unchanged(
    admin_client, physician, audit_outage
):
    group = Group.objects.get(name=Role.PHYSICIAN.value)
    grant = permission("records.view_genetic")

    response = save_group(admin_client, group, permissions=[grant.pk])

    assert response.status_code == 503
    assert not group.permissions.exists()


def test_creating_and_deleting_a_group_is_audited(admin_client):
    grant = permission("records.view_hiv")
    admin_client.post(
        "/admin/auth/group/add/", {"name": "hiv_clinic", "permissions": [grant.pk]}
    )
    group = Group.objects.get(name="hiv_clinic")

    admin_client.post(f"/admin/auth/group/{group.pk}/delete/", {"post": "yes"})

    assert not Group.objects.filter(name="hiv_clinic").exists()
    [created] = events(AuditAction.GROUP_CREATED)
    assert created.reason == (
        "group hiv_clinic (0 members): permissions records.view_hiv"
    )
    [deleted] = events(AuditAction.GROUP_DELETED)
    assert deleted.reason == created.reason


def delete_selected(client, *users):
    return client.post(
        "/admin/accounts/user/",
        {
            "action": "delete_selected",
            "_selected_action": [user.pk for user in users],
            "post": "yes",
        },
    )


def test_an_account_that_never_signed_in_can_be_deleted_on_the_record(
    admin_client,
):
    mistake = make_user("nurse.typo", Role.NURSE)

    delete_selected(admin_client, mistake)

    assert not User.objects.filter(username="nurse.typo").exists()
    [event] = events(AuditAction.USER_DELETED)
    assert event.actor_username == "admin.ross"
    assert event.reason == "account nurse.typo: is_active yes; groups nurse"


def test_an_account_that_signed_in_is_not_deleted(admin_client, nurse):
    User.objects.filter(pk=nurse.pk).update(last_login=timezone.now())

    response = delete_selected(admin_client, nurse)

    assert response.status_code == 200
    assert "deactivated, not deleted" in response.content.decode()
    assert User.objects.filter(pk=nurse.pk).exists()
    assert not events(AuditAction.USER_DELETED)


def test_an_account_on_a_care_team_is_protected(admin_client, nurse, marker_patient):
    add_to_care_team(nurse, marker_patient)

    response = delete_selected(admin_client, nurse)

    assert response.status_code == 200
    assert User.objects.filter(pk=nurse.pk).exists()
    assert CareTeamMembership.objects.filter(member=nurse).exists()
    assert not events(AuditAction.USER_DELETED)


def test_an_audit_outage_deletes_nothing(admin_client, audit_outage):
    mistake = make_user("nurse.typo", Role.NURSE)

    response = delete_selected(admin_client, mistake)

    assert response.status_code == 503
    assert User.objects.filter(pk=mistake.pk).exists()


def test_deactivating_ends_the_sessions_and_is_audited(admin_client, nurse):
    nurse_session = verified_client(nurse)
    assert nurse_session.get("/patients/").status_code == 200

    admin_client.post(
        "/admin/accounts/user/",
        {"action": "deactivate", "_selected_action": [nurse.pk]},
    )

    assert not fresh(nurse).is_active
    assert nurse_session.get("/patients/").url.startswith("/accounts/login/")
    [event] = events(AuditAction.PRIVILEGES_CHANGED)
    assert (event.fields, event.reason) == (
        ["is_active"],
        "account nurse.jones: is_active yes -> no",
    )


def test_an_audit_outage_deactivates_no_one(admin_client, nurse, audit_outage):
    response = admin_client.post(
        "/admin/accounts/user/",
        {"action": "deactivate", "_selected_action": [nurse.pk]},
    )

    assert response.status_code == 503
    assert fresh(nurse).is_active


def password_url(user) -> str:
    return f"/admin/accounts/user/{user.pk}/password/"


def set_password(client, user):
    return client.post(
        password_url(user),
        {
            "usable_password": "true",
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
        },
    )


def test_setting_a_password_ends_the_users_sessions_and_is_audited(
    admin_client, administrator, nurse
):
    nurse_session = verified_client(nurse)
    assert nurse_session.get("/patients/").status_code == 200

    response = set_password(admin_client, nurse)

    assert response.status_code == 302
    assert fresh(nurse).check_password(NEW_PASSWORD)
    assert nurse_session.get("/patients/").url.startswith("/accounts/login/")
    assert admin_client.get("/admin/").status_code == 200
    [event] = events(AuditAction.PASSWORD_SET)
    assert event.actor_id == administrator.pk
    assert (event.fields, event.reason) == (["password"], "account nurse.jones")


def test_disabling_a_password_is_audited_as_such(admin_client, nurse):
    admin_client.post(
        password_url(nurse), {"usable_password": "false", "unset-password": "1"}
    )

    assert not fresh(nurse).has_usable_password()
    [event] = events(AuditAction.PASSWORD_SET)
    assert event.reason == "account nurse.jones: password sign-in disabled"


def test_setting_a_password_needs_a_recent_code(administrator, nurse):
    stale = verified_client(
        administrator, code_entered_at=timezone.now() - datetime.timedelta(minutes=6)
    )

    response = set_password(stale, nurse)

    assert response.status_code == 302
    assert response.url.startswith("/accounts/step-up/")
    assert not fresh(nurse).check_password(NEW_PASSWORD)
    assert not events(AuditAction.PASSWORD_SET)


def test_an_audit_outage_keeps_the_old_password(admin_client, nurse, audit_outage):
    response = set_password(admin_client, nurse)

    assert response.status_code == 503
    assert not fresh(nurse).check_password(NEW_PASSWORD)


def test_an_administrators_own_password_goes_to_the_portal_page(
    admin_client, administrator
):
    for url in ("/admin/password_change/", password_url(administrator)):
        shown = admin_client.get(url)
        posted = admin_client.post(
            url,
            {
                "old_password": "correct horse battery 9",
                "new_password1": NEW_PASSWORD,
                "new_password2": NEW_PASSWORD,
                "usable_password": "true",
                "password1": NEW_PASSWORD,
                "password2": NEW_PASSWORD,
            },
        )

        assert shown.url == "/accounts/password/", url
        assert posted.url == "/accounts/password/", url
    assert not fresh(administrator).check_password(NEW_PASSWORD)
    assert not events(AuditAction.PASSWORD_CHANGED)
    assert not events(AuditAction.PASSWORD_SET)


def test_a_privilege_change_exports_as_a_security_roles_change(admin_client, nurse):
    from audit.fhir import audit_event_resource

    admin_client.post(change_url(nurse), change_form(nurse, is_staff=True))

    [event] = events(AuditAction.PRIVILEGES_CHANGED)
    resource = audit_event_resource(event)
    assert (resource["action"], resource["type"]["code"]) == ("U", "110136")


def _care_team_form(patient, member) -> dict:
    return {
        "patient": str(patient.pk), "member": str(member.pk), "role": "nurse",
        "starts_on": str(timezone.localdate()), "ends_on": "",
    }  # fmt: skip


def test_adding_someone_to_a_care_team_is_audited(admin_client, nurse, marker_patient):
    response = admin_client.post(
        "/admin/records/careteammembership/add/", _care_team_form(marker_patient, nurse)
    )

    assert response.status_code == 302
    [event] = AuditEvent.objects.filter(action=AuditAction.CARE_RELATION_CHANGED)
    assert event.patient_ref == str(marker_patient.pk)
    assert event.record_type == "CareTeamMembership"
    assert event.reason.startswith("added: care team: nurse.jones as nurse")
    assert marker_patient.family_name not in event.reason


def test_removing_someone_from_a_care_team_is_audited(
    admin_client, nurse, marker_patient
):
    membership = add_to_care_team(nurse, marker_patient)

    admin_client.post(
        f"/admin/records/careteammembership/{membership.pk}/delete/", {"post": "yes"}
    )

    [event] = AuditEvent.objects.filter(action=AuditAction.CARE_RELATION_CHANGED)
    assert event.reason.startswith("removed: care team: nurse.jones")
    assert not CareTeamMembership.objects.exists()


def test_an_audit_outage_gives_no_one_a_chart(
    admin_client, nurse, marker_patient, audit_outage
):
    response = admin_client.post(
        "/admin/records/careteammembership/add/", _care_team_form(marker_patient, nurse)
    )

    assert response.status_code == 503
    assert not CareTeamMembership.objects.exists()


def test_moving_a_membership_leaves_the_loss_of_access_on_the_old_chart(
    admin_client, nurse, physician, marker_patient
):
    from records.models import PatientSource
    from records.services import register_patient

    other = register_patient(
        given_name="Movedgiven", family_name="Movedfamily",
        birth_date=marker_patient.birth_date, source=PatientSource.DEMO,
    )  # fmt: skip
    membership = add_to_care_team(nurse, marker_patient)

    admin_client.post(
        f"/admin/records/careteammembership/{membership.pk}/change/",
        {**_care_team_form(other, physician), "role": "attending"},
    )

    changes = AuditEvent.objects.filter(action=AuditAction.CARE_RELATION_CHANGED)
    by_patient = {event.patient_ref: event.reason for event in changes}
    assert set(by_patient) == {str(marker_patient.pk), str(other.pk)}
    assert by_patient[str(marker_patient.pk)].startswith(
        "moved to another patient: care team: nurse.jones as nurse"
    )
    assert "-> care team: dr.house as attending" in by_patient[str(other.pk)]


def test_an_administrator_cannot_change_what_their_own_account_may_do(
    admin_client, administrator, marker_patient
):
    physician_group = Group.objects.get_or_create(name=Role.PHYSICIAN.value)[0]
    held = set(administrator.groups.all())

    page = admin_client.get(change_url(administrator)).content.decode()
    response = admin_client.post(
        change_url(administrator),
        change_form(administrator, groups=[physician_group.pk], is_superuser=False),
    )

    assert 'name="groups"' not in page
    assert "changed by another administrator, never by yourself" in page
    assert response.status_code == 302
    assert set(fresh(administrator).groups.all()) == held
    assert fresh(administrator).is_superuser
    assert not events(AuditAction.PRIVILEGES_CHANGED)


def test_an_administrator_with_a_clinical_role_still_reads_no_chart(
    administrator, marker_patient
):
    # Given the role by another administrator: the account still administers.
    physician_group = Group.objects.get_or_create(name=Role.PHYSICIAN.value)[0]
    administrator.groups.add(physician_group)
    CareTeamMembership.objects.create(
        member=administrator, patient=marker_patient, role=CareTeamRole.ATTENDING
    )
    client = verified_client(fresh(administrator))

    chart = client.get(f"/patients/{marker_patient.pk}/")
    patients = client.get("/patients/")

    assert chart.status_code == 403
    assert marker_patient.family_name not in chart.content.decode()
    assert marker_patient.family_name not in patients.content.decode()
    membership = CareTeamMembership(
        member=fresh(administrator), patient=marker_patient,
        role=CareTeamRole.CONSULTING, starts_on=timezone.localdate(),
    )  # fmt: skip
    with pytest.raises(ValidationError, match="administers the portal"):
        membership.full_clean()


def test_the_audit_screen_names_the_details_an_administrator_changed(
    admin_client, nurse, compliance_officer
):
    admin_client.post(change_url(nurse), change_form(nurse, email="new@ward.test"))

    body = verified_client(compliance_officer).get("/compliance/audit/")

    # Which detail changed, never its value.
    assert "fields: email" in body.content.decode()
    assert "new@ward.test" not in body.content.decode()


@pytest.fixture
def staff_administrator(db):
    """An administrator as the demo makes one: staff, admin role, no superuser."""
    user = make_user("admin.kim", Role.ADMIN)
    User.objects.filter(pk=user.pk).update(is_staff=True)
    user = fresh(user)
    _grant_admin_permissions(user)
    return fresh(user)


def test_only_a_superuser_makes_an_administrator(staff_administrator, nurse):
    client = verified_client(staff_administrator)
    admin_group = Group.objects.get(name=Role.ADMIN.value)
    nurse_group = Group.objects.get(name=Role.NURSE.value)

    flags = client.post(
        change_url(nurse), change_form(nurse, is_staff=True, is_superuser=True)
    )
    role = client.post(
        change_url(nurse), change_form(nurse, groups=[nurse_group.pk, admin_group.pk])
    )

    assert flags.status_code == 302
    assert role.status_code == 200
    assert "Only a superuser gives or takes the administrator role" in (
        role.content.decode()
    )
    nurse = fresh(nurse)
    assert not (nurse.is_staff or nurse.is_superuser)
    assert not nurse.has_role(Role.ADMIN)
    assert not events(AuditAction.PRIVILEGES_CHANGED)


def test_one_administrator_cannot_have_another_unmade_or_taken_over(
    staff_administrator,
):
    other = make_user("admin.lee", Role.ADMIN)
    User.objects.filter(pk=other.pk).update(is_staff=True)
    _grant_admin_permissions(fresh(other))
    physician_group = Group.objects.get_or_create(name=Role.PHYSICIAN.value)[0]
    client = verified_client(staff_administrator)

    page = client.get(change_url(other)).content.decode()
    unmade = client.post(
        change_url(other),
        change_form(other, groups=[physician_group.pk], user_permissions=[]),
    )
    switched_off = client.post(change_url(other), change_form(other, is_active=False))
    password = set_password(client, other)
    actions = [
        client.post(
            "/admin/accounts/user/",
            {"action": action, "_selected_action": [other.pk], "post": "yes"},
            follow=True,
        ).content.decode()
        for action in (
            "reset_authenticator", "deactivate", "delete_selected", "unlock"
        )
    ]  # fmt: skip
    deleted = client.post(f"/admin/accounts/user/{other.pk}/delete/", {"post": "yes"})

    assert "Only a superuser changes, deactivates, deletes" in page
    assert (unmade.status_code, switched_off.status_code) == (403, 403)
    assert password.status_code == 302
    assert deleted.status_code == 302
    told = client.get(deleted.url).content.decode()
    assert told.count("Only a superuser changes, deactivates, deletes") == 1
    for answer in actions:
        assert "Only a superuser changes, deactivates, deletes" in answer
    other = fresh(other)
    assert other.is_active and other.has_role(Role.ADMIN)
    assert not other.has_role(Role.PHYSICIAN)
    assert other.user_permissions.exists()
    assert not other.check_password(NEW_PASSWORD)
    assert other.totpauthenticator_set.filter(confirmed=True).exists()
    assert not events(AuditAction.PRIVILEGES_CHANGED)
    assert not events(AuditAction.PASSWORD_SET)


def test_a_superuser_still_manages_administrators(admin_client, staff_administrator):
    response = admin_client.post(
        change_url(staff_administrator),
        change_form(staff_administrator, is_active=False),
    )

    assert response.status_code == 302
    assert not fresh(staff_administrator).is_active


def test_a_group_of_other_administrators_is_changed_by_a_superuser_only(
    staff_administrator, admin_client
):
    other = make_user("admin.lee", Role.ADMIN)
    User.objects.filter(pk=other.pk).update(is_staff=True)
    helpers = Group.objects.create(name="admin_helpers")
    other.groups.add(helpers)
    grant = permission("accounts.change_user")
    client = verified_client(staff_administrator)

    page = client.get(f"/admin/auth/group/{helpers.pk}/change/").content.decode()
    refused = save_group(client, helpers, permissions=[grant.pk])
    allowed = save_group(admin_client, helpers, permissions=[grant.pk])

    assert "only a superuser changes what it may do" in page
    assert (refused.status_code, allowed.status_code) == (403, 302)
    assert list(helpers.permissions.all()) == [grant]
    [event] = events(AuditAction.PRIVILEGES_CHANGED)
    assert event.actor_username == "admin.ross"


@pytest.mark.parametrize("name", ["Pédiatrie", "Урология", "export staff room"])
def test_ordinary_group_names_are_still_accepted(admin_client, name):
    response = admin_client.post("/admin/auth/group/add/", {"name": name})

    assert response.status_code == 302
    assert Group.objects.filter(name=name).exists()
