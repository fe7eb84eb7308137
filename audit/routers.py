"""Keep the audit trail in its own database and nothing else there."""

AUDIT_APP = "audit"
AUDIT_DATABASE = "audit"


class AuditRouter:
    def db_for_read(self, model, **hints):
        if model._meta.app_label == AUDIT_APP:
            return AUDIT_DATABASE
        return None

    def db_for_write(self, model, **hints):
        return self.db_for_read(model, **hints)

    def allow_relation(self, obj1, obj2, **hints):
        labels = {obj1._meta.app_label, obj2._meta.app_label}
        if AUDIT_APP in labels:
            return labels == {AUDIT_APP}
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if app_label == AUDIT_APP:
            return db == AUDIT_DATABASE
        return db != AUDIT_DATABASE
