"""The portal with its chart-open audit write replaced by a no-op: the bench's baseline.

Only bench/audit_bench.py loads this module, to measure what the audit write
costs; the portal itself has no switch that turns auditing off.
"""

from ehr_portal.wsgi import application  # noqa: F401
from records import services


def _no_audit(**kwargs):
    return None


services.record_event = _no_audit
