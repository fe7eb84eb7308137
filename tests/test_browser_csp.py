"""Every page runs under the Content-Security-Policy without a single violation."""

import pytest
from playwright.sync_api import Page

from accounts.roles import Role
from tests.conftest import add_to_care_team, current_code, make_user

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

PASSWORD = "correct horse battery 9"


def _record_violations(page: Page) -> list[str]:
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )
    return violations


def _sign_in(page: Page, base_url: str, user) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.fill("#id_token", current_code(user))
    page.click("button[type=submit]")


def test_clinician_and_compliance_pages_raise_no_csp_violation(
    live_server, browser, marker_patient
):
    physician = make_user("dr.csp", Role.PHYSICIAN)
    officer = make_user("compliance.csp", Role.COMPLIANCE_OFFICER)
    add_to_care_team(physician, marker_patient)
    chart = f"{live_server.url}/patients/{marker_patient.pk}"
    visits = {
        physician: [
            "/patients/", f"{chart}/", f"{chart}/vitals/", f"{chart}/notes/",
            "/accounts/step-up/", "/api/docs/",
        ],
        officer: ["/compliance/audit/", "/compliance/patient-access/",
                  "/compliance/break-glass/"],
    }  # fmt: skip

    for user, paths in visits.items():
        context = browser.new_context()
        page = context.new_page()
        violations = _record_violations(page)
        _sign_in(page, live_server.url, user)

        for path in paths:
            url = path if path.startswith("http") else f"{live_server.url}{path}"
            response = page.goto(url)
            page.wait_for_load_state("networkidle")

            assert response.status == 200, url
            policy = response.headers["content-security-policy"]
            assert (
                "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy
            )

        assert violations == [], violations
        context.close()


def test_swagger_ui_renders_under_the_policy(live_server, browser):
    physician = make_user("dr.docs", Role.PHYSICIAN)
    page = browser.new_context().new_page()
    violations = _record_violations(page)
    _sign_in(page, live_server.url, physician)

    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)

    assert "EHR Portal API" in page.inner_text(".swagger-ui .info .title")
    assert violations == [], violations


def test_a_chart_cannot_be_framed_by_another_site(live_server, browser, tmp_path):
    physician = make_user("dr.frame", Role.PHYSICIAN)
    page = browser.new_context().new_page()
    _sign_in(page, live_server.url, physician)
    blocked: list[str] = []
    page.on(
        "console",
        lambda message: (
            blocked.append(message.text) if "frame-ancestors" in message.text else None
        ),
    )

    page.set_content(f'<iframe id="chart" src="{live_server.url}/patients/"></iframe>')
    page.wait_for_timeout(1500)

    frame = page.frame_locator("#chart")
    assert frame.locator("h2").count() == 0
    assert blocked, "the browser should report the refused frame"


@pytest.mark.parametrize("width", [1280, 390])
def test_pages_do_not_scroll_sideways(live_server, browser, marker_patient, width):
    from audit.models import AuditAction, AuditOutcome
    from audit.services import record_event

    physician = make_user("dr.layout", Role.PHYSICIAN)
    officer = make_user("compliance.layout", Role.COMPLIANCE_OFFICER)
    add_to_care_team(physician, marker_patient)
    for _ in range(3):
        record_event(
            actor=physician, action=AuditAction.VIEWED,
            outcome=AuditOutcome.SUCCESS, patient_ref=marker_patient.pk,
            record_type="ChartSummary", fields=("mrn", "given_name", "family_name"),
            reason="care team member (attending physician)",
        )  # fmt: skip
    chart = f"/patients/{marker_patient.pk}"
    visits = {
        physician: [f"{chart}/", f"{chart}/labs/"],
        officer: ["/compliance/audit/"],
    }

    for user, paths in visits.items():
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        _sign_in(page, live_server.url, user)
        for path in paths:
            page.goto(f"{live_server.url}{path}")
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, f"{path} at {width} px is {overflow} px too wide"
        context.close()


def test_a_form_sent_back_with_an_error_puts_the_keyboard_on_it(
    live_server, browser, marker_patient
):
    physician = make_user("dr.focus", Role.PHYSICIAN)
    page = browser.new_context().new_page()
    violations = _record_violations(page)
    _sign_in(page, live_server.url, physician)

    page.goto(f"{live_server.url}/patients/")
    page.fill("#id_mrn", "12")
    page.click("button:has-text('Search')")
    page.wait_for_load_state("networkidle")

    assert page.evaluate("document.activeElement.id") == "id_mrn"
    assert "An MRN has 8 digits" in page.content()
    assert violations == []
