"""The authorization matrix: every route × every role × every care relation.

The expected outcomes come from docs/ACCESS.md, the rule book people read, so
a route missing from it, or a view that forgets the access decision, fails here.
"""

import datetime
import re
import uuid
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from accounts.roles import Role
from audit.models import AuditAction, AuditEvent
from records.models import (
    Admission,
    BreakGlassAccess,
    BreakGlassReason,
    Unit,
    UnitAssignment,
)
from tests.conftest import add_to_care_team, make_user, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")

RULE_BOOK = Path(__file__).resolve().parents[1] / "docs" / "ACCESS.md"
ROLES = [role.value for role in Role]
RELATIONS = ["on team", "unit", "off team", "glass", "glass expired", "ended"]
NURSE_UNIT_RELATIONS = [
    "unit, admission planned", "unit, discharge planned", "unit, discharged",
]  # fmt: skip
SECTIONS = [
    "encounters", "conditions", "medications", "allergies", "immunizations",
    "vitals", "labs", "observations", "procedures", "notes",
]  # fmt: skip


def _tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Each markdown table under its '## heading', as a list of row dicts."""
    tables, heading, header = {}, None, None
    for line in text.splitlines():
        if line.startswith("## "):
            heading, header = line[3:].strip(), None
        elif line.startswith("|") and heading:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set("".join(cells)) <= set("-: "):
                tables.setdefault(heading, []).append(
                    dict(zip(header, cells, strict=True))
                )
    return tables


RULES = _tables(RULE_BOOK.read_text())
ROUTES = {row["route"]: row for row in RULES["Routes"]}
PATIENT_RULES = {
    (row["role"], row["relation"]): row
    for row in RULES["Patient routes: role × relation"]
}
GLOBAL_RULES = {row["route"]: row for row in RULES["Global routes × role"]}


def _route_names(patterns, namespace=None):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = pattern.namespace or namespace
            if inner == "admin":
                yield "admin:index"
                continue
            yield from _route_names(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern):
            yield f"{namespace}:{pattern.name}" if namespace else pattern.name


def test_every_route_is_in_the_rule_book():
    served = set(_route_names(get_resolver().url_patterns))

    assert served == set(ROUTES), "document new routes in docs/ACCESS.md"


def test_every_role_and_relation_has_a_rule():
    for role in (Role.PHYSICIAN, Role.NURSE):
        for relation in RELATIONS:
            assert (role.value, relation) in PATIENT_RULES
    for relation in NURSE_UNIT_RELATIONS:
        assert (Role.NURSE.value, relation) in PATIENT_RULES
    for route, row in ROUTES.items():
        if row["scope"] == "global":
            assert set(ROLES) <= set(GLOBAL_RULES[route]), route


@pytest.fixture
def world(marker_patient):
    users = {role: make_user(f"matrix.{role}", Role(role)) for role in ROLES}
    users["admin"].is_staff = True
    users["admin"].save()
    return users, marker_patient


def _establish(relation: str, user, patient) -> None:
    today = timezone.localdate()
    now = timezone.now()
    if relation == "on team":
        add_to_care_team(user, patient)
    elif relation == "ended":
        add_to_care_team(
            user, patient,
            starts_on=today - datetime.timedelta(days=90),
            ends_on=today - datetime.timedelta(days=1),
        )  # fmt: skip
    elif relation.startswith("unit"):
        unit = Unit.objects.create(code="4west", name="4 West")
        UnitAssignment.objects.create(unit=unit, member=user)
        day, hour = datetime.timedelta(days=1), datetime.timedelta(hours=1)
        admitted, discharged = {
            "unit": (now - day, None),
            "unit, admission planned": (now + day, None),
            "unit, discharge planned": (now - day, now + day),
            "unit, discharged": (now - 3 * day, now - hour),
        }[relation]
        Admission.objects.create(
            patient=patient, unit=unit, admitted_at=admitted, discharged_at=discharged
        )
    elif relation in ("glass", "glass expired"):
        started = now if relation == "glass" else now - datetime.timedelta(hours=2)
        BreakGlassAccess.objects.create(
            clinician=user, patient=patient, reason=BreakGlassReason.EMERGENCY,
            justification="Unconscious in the emergency department",
            started_at=started, expires_at=started + datetime.timedelta(minutes=60),
        )  # fmt: skip


def _patient_requests(patient) -> list[tuple[str, str, str]]:
    """(kind, method, url) for every patient-scoped route, every section."""
    requests = [("read", "GET", reverse("records:chart", args=[patient.pk]))]
    requests += [
        ("read", "GET", reverse("records:chart_section", args=[patient.pk, section]))
        for section in SECTIONS
    ]
    requests.append(
        ("write", "POST", reverse("records:note_create", args=[patient.pk]))
    )
    requests.append(("write", "POST", reverse("records:note_draft", args=[patient.pk])))
    requests.append(
        ("emergency", "GET", reverse("records:break_glass_request", args=[patient.pk]))
    )
    kinds = {
        ROUTES[name]["kind"] for name in ROUTES if ROUTES[name]["scope"] == "patient"
    }
    assert kinds == {kind for kind, _, _ in requests}
    return requests


def _phi(patient) -> list[str]:
    return [
        patient.given_name, patient.family_name, patient.mrn, patient.mrn_display,
        patient.birth_date.strftime("%-d %b %Y"), patient.address,
    ]  # fmt: skip


NOTE = {"kind": "progress", "title": "Matrix note", "body": "Seen on the ward."}


def _send(client, method: str, url: str, data=None):
    if method == "GET":
        return client.get(url)
    if method == "JSON" or url.startswith("/api/"):
        return client.post(url, data or NOTE, content_type="application/json")
    return client.post(url, data or NOTE)


@pytest.mark.parametrize("role, relation", sorted(PATIENT_RULES))
def test_patient_routes_follow_the_rule_book(world, role, relation):
    users, patient = world
    user = users[role]
    _establish(relation, user, patient)
    client = verified_client(user)
    rules = PATIENT_RULES[(role, relation)]

    for kind, method, url in _patient_requests(patient):
        denials_before = AuditEvent.objects.filter(
            action=AuditAction.ACCESS_DENIED
        ).count()
        response = _send(client, method, url)
        denials = AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED).count()

        if rules[kind] == "allow":
            assert response.status_code in (200, 201, 302), (url, response.status_code)
            assert denials == denials_before, url
        else:
            assert response.status_code == 403, (url, response.status_code)
            body = response.content.decode()
            assert not [value for value in _phi(patient) if value in body], url
            assert denials == denials_before + 1, url
            denial = AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED).last()
            assert denial.actor_id == user.pk and denial.reason, url


@pytest.mark.parametrize("role", ROLES)
def test_global_routes_follow_the_rule_book(world, role):
    users, patient = world
    client = verified_client(users[role])
    access = BreakGlassAccess.objects.create(
        clinician=users["physician"], patient=patient, reason=BreakGlassReason.OTHER,
        justification="Covering the night shift for the ward",
        expires_at=timezone.now() + datetime.timedelta(minutes=60),
    )  # fmt: skip
    urls = {
        "home": reverse("home"),
        "session_security_ping": reverse("session_security_ping"),
        "accounts:step_up": reverse("accounts:step_up"),
        "accounts:password_change": reverse("accounts:password_change"),
        "accounts:passkeys": reverse("accounts:passkeys"),
        "records:patient_list": reverse("records:patient_list"),
        "audit:events": reverse("audit:events"),
        "audit:export": reverse("audit:export"),
        "review:break_glass_queue": reverse("review:break_glass_queue"),
        "review:break_glass_review": reverse(
            "review:break_glass_review", args=[access.pk]
        ),
        "review:patient_access_report": reverse("review:patient_access_report"),
        "records:note_draft_discard": reverse(
            "records:note_draft_discard", args=[patient.pk]
        ),
        "admin:index": reverse("admin:index"),
        "api:patient_list": reverse("api:patient_list"),
        "api:patient_search": reverse("api:patient_search"),
        "api_schema": reverse("api_schema"),
        "api_docs": reverse("api_docs"),
    }
    posted = {
        "audit:export": {"action": AuditAction.VIEWED},
        "review:break_glass_review": {"outcome": "appropriate", "note": ""},
        "api:patient_search": {"family_name": "Nobody"},
    }
    assert set(urls) == set(GLOBAL_RULES)

    for route, url in urls.items():
        before = AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED).count()
        method = ROUTES[route]["method"]
        response = _send(client, method, url, posted.get(route))
        after = AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED).count()

        if GLOBAL_RULES[route][role] == "allow":
            assert response.status_code in (200, 302), (route, response.status_code)
            assert after == before, route
        else:
            assert response.status_code == 403, (route, response.status_code)
            assert after == before + 1, route


@pytest.mark.parametrize("role, relation", sorted(PATIENT_RULES))
def test_lists_and_search_show_only_reachable_patients(world, role, relation):
    users, patient = world
    user = users[role]
    _establish(relation, user, patient)
    client = verified_client(user)
    # Break-the-glass opens one chart, never the lists.
    reachable = (
        relation != "glass" and PATIENT_RULES[(role, relation)]["read"] == "allow"
    )
    chart_link = f"/patients/{patient.pk}/"

    listing = client.get("/patients/")
    searches = [
        client.post("/patients/", {"mrn": patient.mrn}),
        client.post("/patients/", {"family_name": patient.family_name}),
        client.post("/patients/", {"birth_date": patient.birth_date.isoformat()}),
    ]

    # The form echoes what was typed; nothing else about the patient may show.
    untyped = [
        patient.given_name,
        patient.mrn_display,
        patient.birth_date.strftime("%-d %b %Y"),
    ]
    for response in [listing, *searches]:
        body = response.content.decode()
        assert (chart_link in body) == reachable
        if not reachable:
            assert not [value for value in untyped if value in body]


def test_guessed_patient_ids_are_all_not_found(world):
    users, _patient = world
    client = verified_client(users["physician"])

    statuses = {
        client.get(f"/patients/{uuid.uuid4()}/").status_code for _ in range(1000)
    }

    assert statuses == {404}


def test_sensitive_categories_are_named_in_the_rule_book():
    text = RULE_BOOK.read_text()

    for permission in re.findall(r"records\.view_\w+", text):
        codename = permission.split(".")[1]
        from records.models import Patient

        assert codename in {name for name, _ in Patient._meta.permissions}
