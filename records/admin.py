"""Admin for care relationships; patients appear by opaque id, never by name."""

from django.contrib import admin

from accounts.admin import AuditedActionsMixin, AuditedSaveMixin
from records.models import Admission, CareTeamMembership, Unit, UnitAssignment
from records.services import record_care_relation_change


class CareRelationAdmin(AuditedActionsMixin, AuditedSaveMixin, admin.ModelAdmin):
    """Who may open which chart: every change is audited, or is not made."""

    def before_save(self, obj):
        return type(obj).objects.get(pk=obj.pk)

    def record_saved(self, request, form, change, before):
        record_care_relation_change(
            actor=request.user, relation=form.instance,
            what="changed" if change else "added",
            fields=form.changed_data, before=before,
        )  # fmt: skip

    def delete_model(self, request, obj):
        record_care_relation_change(actor=request.user, relation=obj, what="removed")
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for relation in queryset:
            record_care_relation_change(
                actor=request.user, relation=relation, what="removed"
            )
        super().delete_queryset(request, queryset)


ENDS_ON_HELP = (
    "The last day of access, included: access ends when this day is over. "
    "To end it at once, set yesterday, or delete the row if it began today "
    "(both are audited)."
)


class DatedRelationAdmin(CareRelationAdmin):
    """A relation that lasts from one day to another, both days included."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "ends_on" and field is not None:
            field.help_text = ENDS_ON_HELP
        return field


@admin.register(CareTeamMembership)
class CareTeamMembershipAdmin(DatedRelationAdmin):
    list_display = ("member", "role", "patient_id", "starts_on", "ends_on")
    list_filter = ("role",)
    raw_id_fields = ("patient", "member")


@admin.register(Unit)
class UnitAdmin(admin.ModelAdmin):
    list_display = ("code", "name")


@admin.register(UnitAssignment)
class UnitAssignmentAdmin(DatedRelationAdmin):
    list_display = ("member", "unit", "starts_on", "ends_on")
    raw_id_fields = ("member",)


@admin.register(Admission)
class AdmissionAdmin(CareRelationAdmin):
    list_display = ("patient_id", "unit", "admitted_at", "discharged_at")
    raw_id_fields = ("patient",)
