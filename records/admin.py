"""Admin for care relationships; patients appear by opaque id, never by name."""

from django.contrib import admin

from records.models import Admission, CareTeamMembership, Unit, UnitAssignment


@admin.register(CareTeamMembership)
class CareTeamMembershipAdmin(admin.ModelAdmin):
    list_display = ("member", "role", "patient_id", "starts_on", "ends_on")
    list_filter = ("role",)
    raw_id_fields = ("patient", "member")


@admin.register(Unit)
class UnitAdmin(admin.ModelAdmin):
    list_display = ("code", "name")


@admin.register(UnitAssignment)
class UnitAssignmentAdmin(admin.ModelAdmin):
    list_display = ("member", "unit", "starts_on", "ends_on")
    raw_id_fields = ("member",)


@admin.register(Admission)
class AdmissionAdmin(admin.ModelAdmin):
    list_display = ("patient_id", "unit", "admitted_at", "discharged_at")
    raw_id_fields = ("patient",)
