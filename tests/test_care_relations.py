"""Care relations hold clinicians of the matching role, never twice at once.

The rule lives in the models' clean(), so the admin form and any other
caller of full_clean() refuse the same rows with the same message.
"""

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.roles import Role
from audit.models import AuditAction, AuditEvent
from records.models import CareTeamMembership, CareTeamRole, Unit, UnitAssignment
from tests.conftest import add_to_care_team, make_user, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")

NOT_A_CLINICIAN = "holds neither the physician nor the nurse role"
ALREADY_ON_THE_TEAM = "already on this patient"
TODAY = timezone.localdate()
YESTERDAY = TODAY - datetime.timedelta(days=1)


@pytest.fixture
def admin_client(db):
    administrator = make_user("admin.ross", Role.ADMIN)
    administrator.is_staff = administrator.is_superuser = True
    administrator.save()
    return verified_client(administrator)


@pytest.fixture
def unit(db):
    return Unit.objects.create(code="4-west", name="4 West")


def _add_through_the_admin(client, patient, member):
    return client.post(
        "/admin/records/careteammembership/add/",
        {
            "patient": str(patient.pk), "member": str(member.pk), "role": "nurse",
            "starts_on": str(TODAY), "ends_on": "",
        },
    )  # fmt: skip


def _care_relation_events():
    return AuditEvent.objects.filter(action=AuditAction.CARE_RELATION_CHANGED)


def test_the_admin_refuses_a_care_team_member_without_a_clinical_role(
    admin_client, compliance_officer, marker_patient
):
    response = _add_through_the_admin(admin_client, marker_patient, compliance_officer)

    assert response.status_code == 200
    assert f"compliance.lee {NOT_A_CLINICIAN}" in response.content.decode()
    assert not CareTeamMembership.objects.exists()
    assert not _care_relation_events().exists()


def test_the_admin_refuses_a_second_membership_for_the_same_days(
    admin_client, nurse, marker_patient
):
    add_to_care_team(nurse, marker_patient)

    response = _add_through_the_admin(admin_client, marker_patient, nurse)

    assert response.status_code == 200
    assert ALREADY_ON_THE_TEAM in response.content.decode()
    assert CareTeamMembership.objects.count() == 1
    assert not _care_relation_events().exists()


def test_the_admin_accepts_a_membership_after_the_last_one_ended(
    admin_client, nurse, marker_patient
):
    add_to_care_team(nurse, marker_patient, ends_on=YESTERDAY)

    response = _add_through_the_admin(admin_client, marker_patient, nurse)

    assert response.status_code == 302
    assert CareTeamMembership.objects.count() == 2


def test_another_role_on_the_same_team_is_still_a_duplicate(physician, marker_patient):
    add_to_care_team(physician, marker_patient)
    consulting = CareTeamMembership(
        member=physician, patient=marker_patient, role=CareTeamRole.CONSULTING
    )

    with pytest.raises(ValidationError, match=ALREADY_ON_THE_TEAM):
        consulting.full_clean()


def test_ending_a_membership_is_not_a_duplicate_of_itself(nurse, marker_patient):
    membership = add_to_care_team(nurse, marker_patient)
    membership.ends_on = TODAY

    membership.full_clean()


def test_a_unit_assignment_needs_a_clinician(export_staff, unit):
    assignment = UnitAssignment(unit=unit, member=export_staff)

    with pytest.raises(ValidationError, match=f"export.kim {NOT_A_CLINICIAN}"):
        assignment.full_clean()


def test_a_unit_assignment_twice_for_the_same_days_is_refused(nurse, unit):
    UnitAssignment.objects.create(unit=unit, member=nurse, starts_on=YESTERDAY)
    again = UnitAssignment(unit=unit, member=nurse, ends_on=TODAY)

    with pytest.raises(ValidationError, match="already assigned to this unit"):
        again.full_clean()


def test_a_care_team_role_of_another_profession_is_refused(
    nurse, physician, marker_patient
):
    nurse_as_attending = CareTeamMembership(
        member=nurse, patient=marker_patient, role=CareTeamRole.ATTENDING
    )
    physician_as_nurse = CareTeamMembership(
        member=physician, patient=marker_patient, role=CareTeamRole.PRIMARY_NURSE
    )

    with pytest.raises(ValidationError, match="does not hold the physician role"):
        nurse_as_attending.full_clean()
    with pytest.raises(ValidationError, match="does not hold the nurse role"):
        physician_as_nurse.full_clean()


def test_a_unit_assignment_is_for_nurses(physician, unit):
    # Only nurses reach charts through their unit: a physician's row there
    # would grant nothing while reading as if it did.
    assignment = UnitAssignment(unit=unit, member=physician)

    with pytest.raises(ValidationError, match="which a unit assignment needs"):
        assignment.full_clean()


def test_an_end_before_the_start_is_explained_not_reported_as_a_constraint(
    admin_client, nurse, marker_patient
):
    page = admin_client.get("/admin/records/careteammembership/add/").content.decode()
    response = admin_client.post(
        "/admin/records/careteammembership/add/",
        {
            "patient": str(marker_patient.pk), "member": str(nurse.pk),
            "role": "nurse", "starts_on": str(TODAY), "ends_on": str(YESTERDAY),
        },
    )  # fmt: skip

    assert "The last day of access, included" in page
    assert response.status_code == 200
    body = response.content.decode()
    assert "The end comes before the start" in body
    assert "is violated" not in body
    assert not CareTeamMembership.objects.exists()


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_two_administrators_saving_the_same_relation_at_once_make_one(
    nurse, marker_patient
):
    import threading
    import time

    from django.db import connections, transaction

    first_checked = threading.Event()
    outcomes = []

    def add(hold_open: bool) -> None:
        membership = CareTeamMembership(
            member=nurse, patient=marker_patient, role=CareTeamRole.NURSE,
            starts_on=TODAY,
        )  # fmt: skip
        try:
            with transaction.atomic():
                membership.full_clean()
                membership.save()
                if hold_open:
                    # The second check runs while this row is uncommitted.
                    first_checked.set()
                    time.sleep(0.5)
            outcomes.append("added")
        except ValidationError:
            outcomes.append("refused")
        finally:
            connections.close_all()

    first = threading.Thread(target=add, args=(True,))
    second = threading.Thread(target=add, args=(False,))
    first.start()
    assert first_checked.wait(10)
    second.start()
    first.join(20)
    second.join(20)

    assert sorted(outcomes) == ["added", "refused"]
    assert CareTeamMembership.objects.filter(member=nurse).count() == 1


@pytest.mark.django_db(databases="__all__")
@pytest.mark.parametrize(
    "starts, ends, member",
    [
        (-3, None, True),
        (0, 0, True),
        (-3, 0, True),
        (-3, -1, False),
        (1, None, False),
        (1, 5, False),
    ],
)
def test_a_membership_counts_from_its_first_day_to_its_last(
    physician, marker_patient, starts, ends, member
):
    from records.access import has_care_team_membership

    today = timezone.localdate()
    CareTeamMembership.objects.create(
        member=physician, patient=marker_patient, role=CareTeamRole.ATTENDING,
        starts_on=today + datetime.timedelta(days=starts),
        ends_on=None if ends is None else today + datetime.timedelta(days=ends),
    )  # fmt: skip

    assert has_care_team_membership(physician, marker_patient) is member
    # The same answer as the queryset the admin and the lists use.
    assert member == (
        CareTeamMembership.objects.active_on(today)
        .filter(member=physician, patient=marker_patient)
        .exists()
    )
