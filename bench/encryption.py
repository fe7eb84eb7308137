"""Encryption at rest, measured side by side in one run (not a test).

    .venv/bin/python bench/encryption.py [--patients 2000] [--rows 6000] [--repeat 200]

Runs in a throwaway data folder with throwaway SQLite databases. The plain
twin models exist only here (tables made by the schema editor, no migration).
Prints one table: encrypted, plain, and their ratio. Targets from the design:
a whole chart read at most 1.1x plain; rotation at least 2,000 rows/s.
"""

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["PORTAL_MODE"] = "development"
os.environ["PORTAL_DATA_DIR"] = tempfile.mkdtemp(prefix="ehr-bench-")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("AUDIT_DATABASE_URL", None)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ehr_portal.settings")
os.environ.setdefault("PORTAL_LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, models, transaction  # noqa: E402
from django.template import Context, Template  # noqa: E402

from records import crypto  # noqa: E402
from records.key_rotation import rotate_keys  # noqa: E402
from records.models import (  # noqa: E402
    Condition,
    Encounter,
    Observation,
    Patient,
    PatientSource,
)
from records.services import register_patient  # noqa: E402


# The plain twins carry every column the real models carry (indexes, source
# keys, sensitivity, category...), in clear, so that the ratio measures the
# encryption and nothing else.
class PlainPatient(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    mrn = models.TextField()
    mrn_index = models.CharField(max_length=64, default="")
    given_name = models.TextField()
    given_name_index = models.CharField(max_length=64, default="")
    family_name = models.TextField(db_index=True)
    family_name_index = models.CharField(max_length=64, default="")
    birth_date = models.DateField()
    birth_date_index = models.CharField(max_length=64, default="")
    sex = models.TextField()
    deceased_on = models.DateField(null=True)
    address = models.TextField()
    telecom = models.TextField()
    source = models.CharField(max_length=8, default="demo")
    created_at = models.DateTimeField(null=True)

    class Meta:
        app_label = "records"
        db_table = "bench_plain_patient"

    def __str__(self):
        return f"Plain patient {self.pk}"


def _plain_record(name: str, extra: dict):
    attributes = {
        "__module__": __name__,
        "id": models.UUIDField(primary_key=True, default=uuid.uuid4),
        "patient": models.ForeignKey(PlainPatient, models.CASCADE, related_name="+"),
        "source_key": models.CharField(max_length=64, default=""),
        "occurred_at": models.DateTimeField(null=True),
        "status": models.CharField(max_length=32, default=""),
        "code": models.TextField(default=""),
        "description": models.TextField(default=""),
        "sensitivity": models.CharField(max_length=16, default=""),
        "Meta": type("Meta", (), {"app_label": "records", "db_table": f"bench_{name}"}),
        "__str__": lambda self: f"{name} {self.pk}",
        **extra,
    }
    return type(f"Plain{name.title()}", (models.Model,), attributes)


PlainEncounter = _plain_record(
    "encounter",
    {
        "ended_at": models.DateTimeField(null=True),
        "encounter_class": models.CharField(max_length=16, default=""),
        "reason": models.TextField(default=""),
    },
)
PlainCondition = _plain_record(
    "condition", {"abated_at": models.DateTimeField(null=True)}
)
PlainObservation = _plain_record(
    "observation",
    {
        "category": models.CharField(max_length=16, default="other"),
        "value": models.TextField(default=""),
    },
)

CHART_SHAPE = {"encounters": 40, "conditions": 20, "observations": 240}


def timed_side_by_side(first, second, repeat: int) -> tuple[float, float]:
    """Median seconds per call of two functions, run alternately.

    Alternating puts both under the same background load, which on a shared
    2-core machine moves more than the difference being measured.
    """
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for function, bucket in ((first, samples[0]), (second, samples[1])):
            start = time.perf_counter()
            function()
            bucket.append(time.perf_counter() - start)
    return statistics.median(samples[0]), statistics.median(samples[1])


def timed(function, repeat: int) -> float:
    """Median seconds per call over ``repeat`` runs of ``function``."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def per_op(function, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        function()
    return (time.perf_counter() - start) / count


def seed_chart():
    now = datetime.datetime.now(tz=datetime.UTC)
    patient = register_patient(
        given_name="Benchgiven", family_name="Benchfamily",
        birth_date=datetime.date(1960, 1, 1), source=PatientSource.DEMO,
        address="1 Bench Road, Springfield", telecom="phone: 555-0100",
    )  # fmt: skip
    plain = PlainPatient.objects.create(
        mrn=patient.mrn, given_name="Benchgiven", family_name="Benchfamily",
        birth_date=datetime.date(1960, 1, 1), sex="", telecom="phone: 555-0100",
        address="1 Bench Road, Springfield",
    )  # fmt: skip
    for number in range(CHART_SHAPE["encounters"]):
        values = dict(
            occurred_at=now, code="185349003", status="finished",
            description="Encounter for check up", reason="Routine",
        )  # fmt: skip
        Encounter.objects.create(patient=patient, source_key=f"e{number}", **values)
        PlainEncounter.objects.create(patient=plain, **values)
    for number in range(CHART_SHAPE["conditions"]):
        values = dict(occurred_at=now, code="44054006", description="Diabetes",
                      status="active")  # fmt: skip
        Condition.objects.create(patient=patient, source_key=f"c{number}", **values)
        PlainCondition.objects.create(patient=plain, **values)
    for number in range(CHART_SHAPE["observations"]):
        values = dict(
            occurred_at=now, code="8480-6", status="final",
            description="Systolic blood pressure", value="120 mm[Hg]",
        )  # fmt: skip
        Observation.objects.create(patient=patient, source_key=f"o{number}", **values)
        PlainObservation.objects.create(patient=plain, **values)
    return patient.pk, plain.pk


def read_chart(patient_model, record_models, patient_id, fields) -> int:
    """Load the patient and every record, touching every field a chart shows."""
    touched = 0
    patient = patient_model.objects.get(pk=patient_id)
    for name in ("mrn", "given_name", "family_name", "birth_date", "address"):
        touched += bool(getattr(patient, name))
    for model, shown in zip(record_models, fields, strict=True):
        for record in model.objects.filter(patient_id=patient_id).order_by(
            "-occurred_at"
        ):
            for name in shown:
                touched += bool(getattr(record, name))
    return touched


# Each section shows its own columns, as the portal's section pages do. An
# earlier version asked every record for every column, which sent Django's
# template engine down its slow missing-attribute path 320 times a page: a
# cost of the models' class depth, not of encryption, and one no page has.
CHART_PAGE = Template(
    "<h1>{{ patient.family_name }}, {{ patient.given_name }}</h1>"
    "<p>{{ patient.birth_date|date:'j M Y' }} {{ patient.mrn }}</p>"
    "<table>{% for record in encounters %}<tr>"
    "<td>{{ record.occurred_at|date:'j M Y' }}</td><td>{{ record.description }}</td>"
    "<td>{{ record.code }}</td><td>{{ record.reason }}</td>"
    "</tr>{% endfor %}</table>"
    "<table>{% for record in conditions %}<tr>"
    "<td>{{ record.occurred_at|date:'j M Y' }}</td><td>{{ record.description }}</td>"
    "<td>{{ record.code }}</td>"
    "</tr>{% endfor %}</table>"
    "<table>{% for record in observations %}<tr>"
    "<td>{{ record.occurred_at|date:'j M Y' }}</td><td>{{ record.description }}</td>"
    "<td>{{ record.code }}</td><td>{{ record.value }}</td>"
    "</tr>{% endfor %}</table>"
)


def render_chart(patient_model, record_models, patient_id, fields) -> str:
    """The same chart as an HTML page: what a clinician's browser receives."""
    patient = patient_model.objects.get(pk=patient_id)
    encounters, conditions, observations = (
        list(model.objects.filter(patient_id=patient_id).order_by("-occurred_at"))
        for model in record_models
    )
    return CHART_PAGE.render(
        Context({
            "patient": patient, "encounters": encounters,
            "conditions": conditions, "observations": observations,
        })
    )  # fmt: skip


def seed_search(count: int) -> None:
    with transaction.atomic():
        for number in range(count):
            register_patient(
                given_name=f"Given{number}", family_name=f"Family{number}",
                birth_date=datetime.date(1940 + number % 60, 1, 1),
                source=PatientSource.DEMO,
            )  # fmt: skip
            PlainPatient.objects.create(
                mrn=str(number), given_name=f"Given{number}",
                family_name=f"Family{number}", birth_date=datetime.date(1960, 1, 1),
                sex="", address="", telecom="",
            )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument(
        "--repeat", type=int, default=200,
        help="chart reads and pages timed, each way (the median is reported)",
    )  # fmt: skip
    options = parser.parse_args()

    call_command("migrate", verbosity=0)
    call_command("migrate", database="audit", verbosity=0)
    with connection.schema_editor() as editor:
        for model in (PlainPatient, PlainEncounter, PlainCondition, PlainObservation):
            editor.create_model(model)

    rows = []
    aad = b"records_observation.value:bench"
    token = crypto.seal("120 mm[Hg] systolic", aad)
    seal_s = per_op(lambda: crypto.seal("120 mm[Hg] systolic", aad), 20000)
    open_s = per_op(lambda: crypto.open_sealed(token, aad), 20000)
    rows.append(("encrypt one field", seal_s * 1e6, None, "us"))
    rows.append(("decrypt one field", open_s * 1e6, None, "us"))

    encrypted_id, plain_id = seed_chart()
    shown = [("description", "reason", "code"), ("description", "code"),
             ("description", "value", "code")]  # fmt: skip
    encrypted_models = (Patient, [Encounter, Condition, Observation], encrypted_id)
    plain_models = (
        PlainPatient,
        [PlainEncounter, PlainCondition, PlainObservation],
        plain_id,
    )
    size = 1 + sum(CHART_SHAPE.values())
    for label, reader in (("read", read_chart), ("page", render_chart)):
        encrypted, plain = timed_side_by_side(
            lambda reader=reader: reader(*encrypted_models, shown),
            lambda reader=reader: reader(*plain_models, shown),
            options.repeat,
        )
        rows.append((f"whole chart {label} ({size} rows)", encrypted * 1e3,
                     plain * 1e3, "ms"))  # fmt: skip

    seed_search(options.patients)
    numbers = list(range(0, options.patients, max(1, options.patients // 200)))

    def encrypted_search():
        for number in numbers:
            tags = crypto.blind_index_candidates("family", f"Family{number}")
            found = list(Patient.objects.filter(family_name_index__in=tags))
            assert found[0].family_name == f"Family{number}"

    def plain_search():
        for number in numbers:
            found = list(PlainPatient.objects.filter(family_name=f"Family{number}"))
            assert found[0].family_name == f"Family{number}"

    enc_search = timed(encrypted_search, 5) / len(numbers)
    plain_search_s = timed(plain_search, 5) / len(numbers)
    rows.append((
        f"search by family name ({options.patients} patients)",
        enc_search * 1e6, plain_search_s * 1e6, "us",
    ))  # fmt: skip

    seed_rows(encrypted_id, options.rows)
    total = sum(
        model.objects.count() for model in (Patient, Encounter, Condition, Observation)
    )
    grace = settings.PORTAL_KEYRING_REFRESH_SECONDS
    start = time.perf_counter()
    progress = rotate_keys(batch_size=500)
    # The grace wait for other processes is a fixed pause, not per-row work.
    elapsed = time.perf_counter() - start - grace
    rows.append((
        "rotation (verification pass included)",
        progress.rows_resealed / elapsed, None, f"rows/s, {total} rows",
    ))  # fmt: skip

    print_table(rows)


def seed_rows(patient_id, count: int) -> None:
    now = datetime.datetime.now(tz=datetime.UTC)
    with transaction.atomic():
        for number in range(count):
            Observation.objects.create(
                patient_id=patient_id, source_key=f"r{number}", occurred_at=now,
                code="8310-5", description="Body temperature", value="37.0 Cel",
            )  # fmt: skip


def print_table(rows) -> None:
    print(f"{'measure':<44} {'encrypted':>12} {'plain':>12} {'ratio':>7}  unit")
    for name, encrypted, plain, unit in rows:
        plain_text = f"{plain:12.2f}" if plain is not None else f"{'-':>12}"
        ratio = f"{encrypted / plain:6.3f}x" if plain else f"{'-':>7}"
        print(f"{name:<44} {encrypted:12.2f} {plain_text} {ratio}  {unit}")
    print("targets: whole chart page <= 1.10x plain; rotation >= 2000 rows/s")


if __name__ == "__main__":
    try:
        main()
    finally:
        # The throwaway folder holds the bench's keys and databases.
        shutil.rmtree(os.environ["PORTAL_DATA_DIR"], ignore_errors=True)
