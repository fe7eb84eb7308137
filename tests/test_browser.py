"""The chart-access story end to end, in headless Chromium against a live server.

A physician on the care team signs in with both factors, finds a patient imported
from a real Synthea bundle and reads each chart tab; a nurse off the care team is
refused without seeing who the patient is; a compliance officer finds both in the
audit trail. Nothing the browser asks for may leave the live server.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.utils.dateformat import format as format_date
from playwright.sync_api import BrowserContext, Page, expect

from records.fhir_import import FHIR_ID_SYSTEM
from records.models import Patient
from records.services import find_patient_by_identifier
from records.views import PAGE_SIZE
from tests.conftest import add_to_care_team, current_code

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

PASSWORD = "correct horse battery 9"
BUNDLE_PREFIX = "Bennie663_Raynor401_"


@dataclass(frozen=True)
class ChartTab:
    title: str
    resource_type: str
    describe: Callable[[dict], str]
    category: str = ""

    def descriptions_in(self, bundle: dict) -> list[str]:
        """What the bundle says this tab should list, one text per record."""
        return [
            self.describe(resource)
            for resource in _resources(bundle, self.resource_type)
            if not self.category or self.category in _category_codes(resource)
        ]


CHART_TABS = (
    ChartTab("Encounters", "Encounter", lambda r: r["type"][0]["text"]),
    ChartTab("Conditions", "Condition", lambda r: r["code"]["text"]),
    ChartTab(
        "Medications",
        "MedicationRequest",
        lambda r: r["medicationCodeableConcept"]["text"],
    ),
    ChartTab("Allergies", "AllergyIntolerance", lambda r: r["code"]["text"]),
    ChartTab("Immunizations", "Immunization", lambda r: r["vaccineCode"]["text"]),
    ChartTab("Vital signs", "Observation", lambda r: r["code"]["text"], "vital-signs"),
    ChartTab(
        "Laboratory results",
        "Observation",
        lambda r: r["code"]["text"],
        "laboratory",
    ),
)


def _resources(bundle: dict, resource_type: str) -> list[dict]:
    return [
        entry["resource"]
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == resource_type
    ]


def _category_codes(resource: dict) -> set[str]:
    return {
        coding.get("code")
        for concept in resource.get("category") or []
        for coding in concept.get("coding") or []
    }


@dataclass(frozen=True)
class ImportedPatient:
    record: Patient
    bundle: dict

    @property
    def birth_date_shown(self) -> str:
        return format_date(self.record.birth_date, "j M Y")

    @property
    def chart_path(self) -> str:
        return f"/patients/{self.record.pk}/"

    @property
    def identity_strings(self) -> tuple[str, ...]:
        """Every way the band or a list could give the patient away."""
        return (
            self.record.family_name,
            self.record.given_name,
            self.record.birth_date.isoformat(),
            self.birth_date_shown,
            self.record.mrn,
            self.record.mrn_display,
        )


@pytest.fixture
def imported_patient(synthea_bundles) -> ImportedPatient:
    path = next(p for p in synthea_bundles if p.name.startswith(BUNDLE_PREFIX))
    call_command("import_fhir", str(path))

    bundle = json.loads(path.read_text())
    fhir_id = _resources(bundle, "Patient")[0]["id"]
    record = find_patient_by_identifier(FHIR_ID_SYSTEM, fhir_id)
    assert record is not None
    return ImportedPatient(record=record, bundle=bundle)


def _record_requests(context: BrowserContext, seen: list[str]) -> None:
    context.on("request", lambda request: seen.append(request.url))


def _sign_in(page: Page, base_url: str, user) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(f"{base_url}/accounts/verify/?next=%2F")

    page.get_by_label("One-time code").fill(current_code(user))
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def _expect_patient_band(page: Page, patient: ImportedPatient) -> None:
    band = page.get_by_role("region", name="Patient")
    expect(band).to_contain_text(patient.record.display_name)
    expect(band).to_contain_text(patient.birth_date_shown)
    expect(band).to_contain_text(patient.record.mrn_display)


def _expect_tab_lists_the_bundle(
    page: Page, tab: ChartTab, patient: ImportedPatient
) -> None:
    expected = tab.descriptions_in(patient.bundle)
    assert expected, f"the bundle has nothing for {tab.title}"

    page.get_by_role("navigation", name="Chart sections").get_by_role(
        "link", name=tab.title, exact=True
    ).click()

    expect(page.get_by_role("heading", level=2)).to_contain_text(tab.title)
    _expect_patient_band(page, patient)
    expect(page.locator("h2 .count")).to_have_text(str(len(expected)))
    rows = page.locator("table.data tbody tr")
    expect(rows).to_have_count(min(len(expected), PAGE_SIZE))
    shown = {text.strip() for text in rows.locator("td:nth-child(2)").all_inner_texts()}
    assert shown <= set(expected), tab.title
    if len(expected) <= PAGE_SIZE:
        assert shown == set(expected), tab.title


def _physician_finds_and_reads_the_chart(
    page: Page, base_url: str, physician, patient: ImportedPatient
) -> None:
    _sign_in(page, base_url, physician)
    expect(page).to_have_url(f"{base_url}/patients/")

    page.get_by_label("Family name").fill(patient.record.family_name)
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", name="Search results")).to_be_visible()
    expect(page.locator("h2 .count")).to_have_text("1")
    assert patient.record.family_name not in page.url

    page.get_by_role("link", name=patient.record.display_name).click()
    expect(page).to_have_url(f"{base_url}{patient.chart_path}")
    _expect_patient_band(page, patient)

    for tab in CHART_TABS:
        _expect_tab_lists_the_bundle(page, tab, patient)


def _nurse_is_refused_without_identity(
    page: Page, base_url: str, nurse, patient: ImportedPatient
) -> None:
    _sign_in(page, base_url, nurse)

    response = page.goto(f"{base_url}{patient.chart_path}")

    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="Access denied")).to_be_visible()
    for rendered in (response.text(), page.content()):
        for identity in patient.identity_strings:
            assert identity not in rendered


def _audit_rows(page: Page) -> list[dict[str, str]]:
    """The audit table's rows, each keyed by its column headings."""
    table = page.locator("table.audit")
    # textContent, not innerText: the stylesheet shows headings in capitals.
    headings = [text.strip() for text in table.locator("thead th").all_text_contents()]
    rows = table.locator("tbody tr").evaluate_all(
        "rows => rows.map(row => Array.from(row.cells, cell => cell.innerText.trim()))"
    )
    return [dict(zip(headings, cells, strict=True)) for cells in rows]


def _compliance_officer_sees_view_and_denial(
    page: Page, base_url: str, officer, physician, nurse, patient: ImportedPatient
) -> None:
    _sign_in(page, base_url, officer)

    page.goto(f"{base_url}/compliance/audit/")
    expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()

    seen = {
        (row["User"].split()[0], row["Action"])
        for row in _audit_rows(page)
        if row["Patient MRN"] == patient.record.mrn_display
    }
    assert (physician.username, "Viewed") in seen
    assert (nurse.username, "Access denied") in seen


def test_physician_reads_imported_chart_nurse_off_team_is_refused_and_both_audited(
    page,
    new_context,
    live_server,
    physician,
    nurse,
    compliance_officer,
    imported_patient,
):
    assert urlsplit(live_server.url).hostname == "127.0.0.1"
    add_to_care_team(physician, imported_patient.record)

    requested: list[str] = []
    _record_requests(page.context, requested)

    _physician_finds_and_reads_the_chart(
        page, live_server.url, physician, imported_patient
    )

    nurse_page = new_context().new_page()
    _record_requests(nurse_page.context, requested)
    _nurse_is_refused_without_identity(
        nurse_page, live_server.url, nurse, imported_patient
    )

    officer_page = new_context().new_page()
    _record_requests(officer_page.context, requested)
    _compliance_officer_sees_view_and_denial(
        officer_page,
        live_server.url,
        compliance_officer,
        physician,
        nurse,
        imported_patient,
    )

    live_origin = urlsplit(live_server.url)[:2]

    assert requested
    assert [url for url in requested if urlsplit(url)[:2] != live_origin] == []
