"""Roles are Django groups; this enumeration is the only place their names live."""

from django.db import models


class Role(models.TextChoices):
    PHYSICIAN = "physician", "Physician"
    NURSE = "nurse", "Nurse"
    COMPLIANCE_OFFICER = "compliance_officer", "Compliance officer"
    EXPORT_STAFF = "export_staff", "Export staff"
    ADMIN = "admin", "Administrator"

    @property
    def is_clinician(self) -> bool:
        return self in CLINICAL_ROLES


CLINICAL_ROLES = frozenset({Role.PHYSICIAN, Role.NURSE})
