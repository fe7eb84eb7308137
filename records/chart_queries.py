"""Chart queries compiled to SQL once per shape, then run for any patient.

Every chart open runs the same summary queries, differing only in the
patient and in the sensitivity categories the reader may see. Building
those QuerySets and compiling them cost the portal more CPU than the
database spent answering them (bench/audit_bench.py). A ``CompiledChartQuery``
keeps the ORM as the one definition of what a query means: it builds the
QuerySet once with stand-in values, compiles it, notes where each stand-in
sits among the parameters, and from then on sends the same SQL with the
real patient and categories in those places.

Only plain model rows are supported (no select_related, annotations or
prefetching): anything else is refused when the query is first compiled.
"""

import logging
import uuid
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import EmptyResultSet, ImproperlyConfigured
from django.db import connections, router
from django.db.models import QuerySet

from records.fields import SealedModel, load_together

logger = logging.getLogger(__name__)

# What stands in a parameter's place: the patient, the n-th visible
# category, or a value of the query's own (a status, a category).
_PATIENT = "patient"
_CATEGORY = "category"
_CONSTANT = "constant"


@dataclass(frozen=True)
class _Compiled:
    sql: str
    slots: tuple[tuple[str, Any], ...]
    attnames: tuple[str, ...]
    # Column position -> (converters, expression), as Django applies them.
    converters: dict
    # Django's preparation of a patient id for this database (UUID or hex).
    prepare_patient: Callable


# The query matches nothing whatever the values (an empty IN list).
_NOTHING = object()


class CompiledChartQuery:
    """A fixed-shape query over one patient's rows of ``model``.

    ``build(patient_id, categories)`` returns the QuerySet; it is called only
    to compile, with stand-ins. Compiled SQL is kept per database connection
    (its converters belong to it) and per number of categories (an IN list
    has one placeholder per value).
    """

    def __init__(
        self,
        model: type,
        build: Callable[[Any, list[str]], QuerySet],
        *,
        patient_field: str = "patient",
    ):
        self.model = model
        self.build = build
        # The field holding the patient: a relation, the patient's own key,
        # or the audit trail's reference.
        field = model._meta.get_field(patient_field)
        self.patient_field = field.target_field if field.is_relation else field
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def run(self, patient_id, categories: Collection[str] = ()) -> list:
        categories = list(categories)
        compiled, connection = self._for(len(categories))
        if compiled is _NOTHING:
            return []

        parameters = []
        for kind, value in compiled.slots:
            if kind == _PATIENT:
                parameters.append(compiled.prepare_patient(patient_id, connection))
            elif kind == _CATEGORY:
                parameters.append(categories[value])
            else:
                parameters.append(value)
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, parameters)
            rows = cursor.fetchall()

        if compiled.converters:
            rows = [_converted(row, compiled.converters, connection) for row in rows]
        model, alias, attnames = self.model, connection.alias, compiled.attnames
        records = [model.from_db(alias, attnames, row) for row in rows]
        if issubclass(model, SealedModel):
            load_together(records)
        return records

    def _for(self, count: int):
        connection = connections[router.db_for_read(self.model)]
        per_connection = self._compiled.setdefault(connection, {})
        if count not in per_connection:
            per_connection[count] = self._compile(count, connection)
        return per_connection[count], connection

    def _compile(self, count: int, connection):
        patient_stand_in = uuid.uuid4()
        category_stand_ins = [f"stand-in-{uuid.uuid4().hex}" for _ in range(count)]
        queryset = self.build(patient_stand_in, category_stand_ins)
        if queryset.model is not self.model:
            raise ImproperlyConfigured(f"this query reads {self.model.__name__}")
        compiler = queryset.query.get_compiler(connection=connection)
        try:
            sql, parameters = compiler.as_sql()
        except EmptyResultSet:
            return _NOTHING

        klass_info = compiler.klass_info
        if (
            queryset._prefetch_related_lookups
            or compiler.annotation_col_map
            or klass_info["model"] is not self.model
            or klass_info.get("related_klass_infos")
        ):
            raise ImproperlyConfigured("a compiled chart query gives plain rows")

        patient_field = self.patient_field
        prepared_patient = patient_field.get_db_prep_value(patient_stand_in, connection)
        positions = {value: number for number, value in enumerate(category_stand_ins)}
        slots = []
        for value in parameters:
            if value == prepared_patient:
                slots.append((_PATIENT, None))
            elif isinstance(value, str) and value in positions:
                slots.append((_CATEGORY, positions[value]))
            else:
                slots.append((_CONSTANT, value))
        found = {value for kind, value in slots if kind == _CATEGORY}
        if (_PATIENT, None) not in slots or len(found) != count:
            # A stand-in written into the SQL text, or dropped: running this
            # SQL for another patient or reader would be wrong.
            raise ImproperlyConfigured(
                "a compiled chart query must take the patient and every "
                "category as parameters"
            )

        columns = [column for column, _sql, _alias in compiler.select]
        first, last = klass_info["select_fields"][0], klass_info["select_fields"][-1]
        logger.debug("Compiled a chart query on %s", self.model._meta.label)
        return _Compiled(
            sql=sql,
            slots=tuple(slots),
            attnames=tuple(
                column.target.attname for column in columns[first : last + 1]
            ),
            converters=compiler.get_converters(columns[: compiler.col_count]),
            prepare_patient=patient_field.get_db_prep_value,
        )


def _converted(row, converters: dict, connection) -> tuple:
    values = list(row)
    for position, (functions, expression) in converters.items():
        value = values[position]
        for function in functions:
            value = function(value, expression, connection)
        values[position] = value
    return tuple(values)
