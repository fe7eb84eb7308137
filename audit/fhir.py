"""Audit events as FHIR R4 AuditEvent resources, for disclosure to other systems.

Codes follow the R4 AuditEvent profile: DICOM event types, the HL7 action
and outcome codes. Every resource and the bundle are validated by
fhir.resources before they leave the portal.
"""

from collections.abc import Iterable

from django.utils import timezone
from fhir.resources.R4B.bundle import Bundle

from audit.models import AuditAction, AuditEvent, AuditOutcome

DICOM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
USER_SYSTEM = "urn:ehr-portal:user"
PATIENT_SYSTEM = "urn:ehr-portal:patient-ref"

EXPORT_LIMIT = 10_000

# action -> (FHIR action code, DICOM event type code, its display)
EVENT_TYPES = {
    AuditAction.VIEWED: ("R", "110110", "Patient Record"),
    AuditAction.ACCESS_DENIED: ("R", "110110", "Patient Record"),
    AuditAction.PATIENT_LIST: ("E", "110112", "Query"),
    AuditAction.PATIENT_SEARCH: ("E", "110112", "Query"),
    AuditAction.LOGIN: ("E", "110114", "User Authentication"),
    AuditAction.LOGIN_FAILED: ("E", "110114", "User Authentication"),
    AuditAction.OTP_VERIFIED: ("E", "110114", "User Authentication"),
    AuditAction.OTP_FAILED: ("E", "110114", "User Authentication"),
    AuditAction.LOGOUT: ("E", "110114", "User Authentication"),
    AuditAction.LOCKOUT: ("E", "110114", "User Authentication"),
    AuditAction.AUDIT_QUERY: ("R", "110101", "Audit Log Used"),
    AuditAction.AUDIT_EXPORT: ("R", "110106", "Export"),
    AuditAction.FHIR_IMPORT: ("C", "110107", "Import"),
    AuditAction.FHIR_IMPORT_FAILED: ("C", "110107", "Import"),
    AuditAction.RECORD_CREATED: ("C", "110110", "Patient Record"),
    AuditAction.USER_CREATED: ("C", "110137", "User Security Attributes Changed"),
    AuditAction.USER_DELETED: ("D", "110137", "User Security Attributes Changed"),
    AuditAction.ACCOUNT_UPDATED: ("U", "110137", "User Security Attributes Changed"),
    AuditAction.PASSWORD_SET: ("U", "110137", "User Security Attributes Changed"),
    AuditAction.PRIVILEGES_CHANGED: ("U", "110136", "Security Roles Changed"),
    AuditAction.GROUP_CREATED: ("C", "110136", "Security Roles Changed"),
    AuditAction.GROUP_DELETED: ("D", "110136", "Security Roles Changed"),
}
DEFAULT_TYPE = ("E", "110100", "Application Activity")

OUTCOMES = {
    AuditOutcome.SUCCESS: "0",
    AuditOutcome.DENIED: "4",
    AuditOutcome.FAILURE: "8",
}


def audit_event_resource(event: AuditEvent) -> dict:
    """One event as a FHIR R4 AuditEvent (a plain dict, validated with its bundle)."""
    action_code, type_code, type_display = EVENT_TYPES.get(event.action, DEFAULT_TYPE)
    resource = {
        "resourceType": "AuditEvent",
        "id": f"audit-{event.sequence}",
        "type": {"system": DICOM, "code": type_code, "display": type_display},
        "subtype": [{"system": "urn:ehr-portal:audit-action", "code": event.action}],
        "action": action_code,
        "recorded": event.occurred_at.isoformat(),
        "outcome": OUTCOMES.get(event.outcome, "8"),
        "agent": [_agent(event)],
        "source": {
            "site": "EHR Portal",
            "observer": {"display": "EHR Portal"},
            "type": [
                {"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}
            ],
        },
        "entity": _entities(event),
    }
    if event.reason:
        resource["outcomeDesc"] = event.reason
    if event.purpose:
        resource["purposeOfEvent"] = [{"text": event.purpose}]
    return resource


def _agent(event: AuditEvent) -> dict:
    agent = {
        "who": {
            "identifier": {"system": USER_SYSTEM, "value": event.actor_username},
            "display": event.actor_username,
        },
        "requestor": True,
    }
    if event.actor_role:
        agent["role"] = [{"text": event.actor_role}]
    if event.ip_address:
        agent["network"] = {"address": event.ip_address, "type": "2"}
    if event.device_fingerprint:
        agent["altId"] = f"device:{event.device_fingerprint}"
    return agent


def _entities(event: AuditEvent) -> list[dict]:
    entities = []
    if event.patient_ref:
        entities.append(
            {
                "what": {
                    "identifier": {"system": PATIENT_SYSTEM, "value": event.patient_ref}
                },
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    details = [
        ("sequence", str(event.sequence)),
        ("chain_hash", event.chain_hash),
        ("request_id", event.request_id),
        ("fields", ",".join(event.fields)),
    ]
    entities.append(
        {
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "name": event.record_type or "AuditEvent",
            "detail": [
                {"type": name, "valueString": value} for name, value in details if value
            ],
        }
    )
    return entities


def audit_bundle(events: Iterable[AuditEvent], total: int) -> dict:
    """A searchset Bundle of ``events``, validated as FHIR R4; ``total`` matches."""
    document = {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": timezone.now().isoformat(),
        "total": total,
        "entry": [
            {"resource": audit_event_resource(event), "search": {"mode": "match"}}
            for event in events
        ],
    }
    Bundle.model_validate(document)
    return document
