"""Import FHIR R4 Bundles (such as Synthea's) into encrypted patient records.

Each bundle is checked whole before anything is written, then stored in one
transaction: a malformed bundle changes nothing and the error names the file,
the entry and the field. Re-importing a bundle adds nothing, because each
patient is found again by its source id and each record by a keyed hash of
its resource type and id. Nothing here fetches a URL a bundle mentions.
"""

import datetime
import getpass
import json
import logging
import math
import os
import re
import zoneinfo
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ValidationError

from audit.models import AuditAction, AuditOutcome
from audit.services import record_event, record_events
from ehr_portal import request_context
from ehr_portal.logging import error_kind
from records import crypto
from records.models import (
    AllergyIntolerance,
    Condition,
    Encounter,
    Immunization,
    MedicationRequest,
    Observation,
    ObservationCategory,
    Patient,
    PatientSource,
    Procedure,
)
from records.sensitivity import (
    BY_IDENTIFIER_ONLY,
    Sensitivity,
    reference_name,
    references_in,
    sensitivities_of_bundle,
)
from records.services import find_patient_by_identifier, register_patient

logger = logging.getLogger(__name__)

FHIR_ID_SYSTEM = "urn:ehr-portal:fhir-patient-id"
MAX_NAME_LENGTH = 100
MAX_TEXT_LENGTH = 2000
# Beyond this a text is not a clinical description but a broken or hostile file.
MAX_SOURCE_TEXT_LENGTH = 100_000
CUT_MARK = " [cut]"
# No measurement a chart shows comes near this; 1e308 is a broken file.
MAX_QUANTITY = 1e12
MAX_CODE_LENGTH = 256
MAX_ID_SHOWN = 64

CLINICAL_MODELS = {
    "Encounter": Encounter,
    "Condition": Condition,
    "MedicationRequest": MedicationRequest,
    "AllergyIntolerance": AllergyIntolerance,
    "Observation": Observation,
    "Immunization": Immunization,
    "Procedure": Procedure,
}
IMPORTED_TYPES = ("Patient", *CLINICAL_MODELS)


class BundleRejected(Exception):
    """A bundle that cannot be imported; the message names file, entry and field."""

    def __init__(self, path: Path, detail: str, entry: "Entry | int | None" = None):
        self.path = path
        self.detail = detail
        self.entry = entry
        super().__init__(str(self))

    def __str__(self):
        # For the operator: the entry's resource id helps find it in the file.
        # Ids and file names come from outside: a control character in one
        # could rewrite the operator's terminal, or forge a line of output.
        return _printable(f"{self.path}: {self._where(with_id=True)}: {self.detail}")

    @property
    def problem(self) -> str:
        """Where in the bundle and what, without the file name or source ids.

        Synthea names its files after the patient, and the portal keeps no
        source id (the key inventory): the audit trail gets the entry's
        number and type, never the path or the resource's id.
        """
        return f"{self._where(with_id=False)}: {self.detail}"

    def _where(self, *, with_id: bool) -> str:
        if isinstance(self.entry, Entry):
            kind = self.entry.label if with_id else self.entry.resource_type
            return f"entry {self.entry.index} ({kind})"
        if isinstance(self.entry, int):
            return f"entry {self.entry}"
        return "bundle"


def _printable(text: str) -> str:
    """``text`` with each control character written as its escape (\\t, \\x1b)."""
    return "".join(
        character if character.isprintable() else repr(character)[1:-1]
        for character in text
    )


class EntryInvalid(ValueError):
    """An entry breaks one of the importer's own rules; the message has no values."""


@dataclass
class Entry:
    index: int
    full_url: str
    resource: dict

    @property
    def resource_type(self) -> str:
        return self.resource.get("resourceType", "")

    @property
    def resource_id(self) -> str:
        return str(self.resource.get("id") or "")

    @property
    def label(self) -> str:
        # A Patient's id is the source system's patient identifier: name the
        # type only, as for the other types that are a person, and for a type
        # FHIR does not have (a misspelt "Patientt" is still a patient). Other
        # resources' ids identify a record, not a person.
        if not _id_names_a_record(self.resource_type):
            return _shortened(str(self.resource_type) or "(no type)")
        return f"{self.resource_type}/{_shortened(self.resource_id or '(no id)')}"


def _shortened(text: str) -> str:
    # FHIR ids and type names have at most 64 characters: enough to find it.
    return text if len(text) <= MAX_ID_SHOWN else text[:MAX_ID_SHOWN] + "…"


# Types whose id identifies a person rather than a record.
_PERSON_TYPES = frozenset({"Patient", "Person", "RelatedPerson"})


def _id_names_a_record(resource_type) -> bool:
    if not isinstance(resource_type, str) or resource_type in _PERSON_TYPES:
        return False
    try:
        get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        return False
    return True


@dataclass
class ImportSummary:
    bundles: int = 0
    patients_created: int = 0
    patients_existing: int = 0
    created: Counter = field(default_factory=Counter)
    unchanged: Counter = field(default_factory=Counter)
    reclassified: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)

    def add(self, other: "ImportSummary") -> None:
        self.bundles += other.bundles
        self.patients_created += other.patients_created
        self.patients_existing += other.patients_existing
        self.created.update(other.created)
        self.unchanged.update(other.unchanged)
        self.reclassified.update(other.reclassified)
        self.skipped.update(other.skipped)


def bundle_files(paths) -> list[Path]:
    """The JSON files named, or found under the folders named, in order.

    Hidden files and folders under a folder (.venv, .git, an editor's
    drafts) are left out: they hold no Synthea output.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(_bundles_under(path))
        else:
            found.append(path)
    return found


def _bundles_under(folder: Path) -> list[Path]:
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found.extend(
            Path(root) / name
            for name in files
            if name.endswith(".json") and not name.startswith(".")
        )
    return sorted(path for path in found if path.is_file())


def import_bundle_file(path: Path, *, actor: str | None = None) -> ImportSummary:
    """Check and store one bundle file in one transaction, or raise BundleRejected.

    Outside a web request (the command, a task), each bundle gets a request id
    of its own, so that every audit event of one import can be told apart.
    """
    with request_context.own_request_id():
        return _import_bundle_file(path, actor=actor)


def _import_bundle_file(path: Path, *, actor: str | None) -> ImportSummary:
    actor = actor or f"system:import_fhir ({getpass.getuser()})"
    storing = False
    try:
        bundle, entries = _read_entries(path)
        checked = _check_entries(path, entries, bundle)
        with transaction.atomic():
            storing = True
            summary = _store(path, checked, actor=actor)
    except BundleRejected as rejected:
        _record_rejection(actor, rejected.problem, records_undone=storing)
        raise
    except Exception as error:
        # An importer bug must still name the file, store nothing and leave
        # evidence; the traceback goes to the log, whose lines carry no PHI.
        logger.exception("Unexpected error importing a bundle")
        rejected = BundleRejected(
            path, f"could not be imported ({error_kind(error)}); see the log"
        )
        _record_rejection(actor, rejected.problem, records_undone=storing)
        raise rejected from error
    logger.info(
        "Imported a bundle: %d new patient(s), %d new record(s)",
        summary.patients_created,
        sum(summary.created.values()),
    )
    return summary


def _record_rejection(actor: str, problem: str, *, records_undone: bool) -> None:
    # The trail is written outside the import's transaction, so events about
    # records created before a failure stay in it; they share this event's
    # request id, and this event says they were undone.
    undone = (
        "; any record events of this request id were rolled back"
        if records_undone
        else ""
    )
    record_event(
        actor=actor,
        action=AuditAction.FHIR_IMPORT_FAILED,
        outcome=AuditOutcome.FAILURE,
        record_type="Bundle",
        reason=f"nothing stored: {problem}"[: 255 - len(undone)] + undone,
    )


def _read_entries(path: Path) -> tuple[dict, list[Entry]]:
    """The bundle (its own fields) and its entries."""
    document = _read_json(path)
    if not isinstance(document, dict):
        raise BundleRejected(
            path, f"is a JSON {type(document).__name__}, not a FHIR Bundle object"
        )
    if document.get("resourceType") != "Bundle":
        found = document.get("resourceType")
        if not isinstance(found, str) or not found:
            raise BundleRejected(path, "is not a FHIR Bundle (it has no resourceType)")
        raise BundleRejected(path, f"resourceType must be 'Bundle', not {found!r}")
    if document.get("type") not in BUNDLE_TYPES:
        raise BundleRejected(path, "field type: required, one of FHIR's bundle types")

    # Absent is a bundle with no entries; null, an object or a number is a
    # broken file, not an empty one (FHIR's JSON has no null properties).
    raw_entries = document.get("entry", [])
    if not isinstance(raw_entries, list):
        raise BundleRejected(path, "field entry: must be a list")

    entries = []
    for index, raw in enumerate(raw_entries):
        resource = raw.get("resource") if isinstance(raw, dict) else None
        if not isinstance(resource, dict):
            raise BundleRejected(path, "has no resource object", index)
        entries.append(Entry(index, str(raw.get("fullUrl") or ""), resource))
    _validate_bundle_shell(path, document, raw_entries)
    return document, entries


def _validate_bundle_shell(path: Path, document: dict, raw_entries: list) -> None:
    """The Bundle's own fields and each entry's, checked as its resources are.

    Without its entries' resources, which are checked one by one later: an
    unknown field beside them (a typing error, or data smuggled in a file)
    is refused, as it is inside a resource.
    """
    shell = {
        **document,
        "entry": [
            {key: value for key, value in raw.items() if key != "resource"}
            for raw in raw_entries
        ],
    }
    if not raw_entries:
        shell.pop("entry")
    try:
        get_fhir_model_class("Bundle").model_validate(shell)
    except ValidationError as error:
        raise BundleRejected(path, _plain_violation(error)) from None


# FHIR R4's required value set for Bundle.type.
BUNDLE_TYPES = frozenset({
    "document", "message", "transaction", "transaction-response", "batch",
    "batch-response", "history", "searchset", "collection",
})  # fmt: skip


def _read_json(path: Path):
    # Read no further than the limit: a file far too large (or a device
    # that never ends) must not take the server's memory with it.
    limit = settings.PORTAL_IMPORT_MAX_MB * 1024 * 1024
    try:
        with path.open("rb") as bundle:
            content = bundle.read(limit + 1)
    except OSError as error:
        raise BundleRejected(path, f"cannot be read ({error.strerror})") from error
    if len(content) > limit:
        raise BundleRejected(
            path,
            f"is larger than the import limit of {settings.PORTAL_IMPORT_MAX_MB} MB "
            "(PORTAL_IMPORT_MAX_MB)",
        )
    # FHIR's JSON is UTF-8. Python would guess UTF-16 or UTF-32 from a few
    # bytes, so a binary file came back as a codec error in another encoding.
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise BundleRejected(path, "is not a JSON text file (not UTF-8 text)")

    try:
        return json.loads(text, object_pairs_hook=_object_without_repeats)
    except _RepeatedName as repeated:
        raise BundleRejected(
            path,
            f"is not valid FHIR JSON (the name {_printable(repeated.name)!r} "
            "appears twice in one object)",
        ) from None
    except json.JSONDecodeError as error:
        reason = error.msg[:1].lower() + error.msg[1:]
        # Some of json's messages end in "at" already ("... starting at").
        where = f"line {error.lineno}, column {error.colno}"
        if not reason.endswith(" at"):
            where = f"at {where}"
        raise BundleRejected(path, f"is not valid JSON ({reason} {where})") from None
    except RecursionError:
        raise BundleRejected(path, "is not valid JSON (nested too deeply)") from None
    except ValueError:
        # Python refuses to read an integer of thousands of digits.
        raise BundleRejected(path, "is not valid JSON (a number too long)") from None


class _RepeatedName(ValueError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _object_without_repeats(pairs: list[tuple[str, object]]) -> dict:
    # Python's json keeps the last of two values with one name, so which
    # one was stored would depend on the parser; FHIR's JSON allows one.
    document = dict(pairs)
    if len(document) != len(pairs):
        seen = set()
        for name, _value in pairs:
            if name in seen:
                raise _RepeatedName(name)
            seen.add(name)
    return document


def _field_holding_nul(resource: dict) -> str | None:
    """A field (dotted, as in FHIR validation errors) whose text holds NUL.

    JSON may spell NUL as an escape, and FHIR's models take it: PostgreSQL
    then refuses the row part-way through the import, and SQLite stores it.
    Walked without recursion, as a bundle may nest as deep as JSON allows.
    """
    pending = [((), resource)]
    while pending:
        location, value = pending.pop()
        if isinstance(value, str):
            if "\0" in value:
                return ".".join(location) or "(text)"
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\0" in key:
                    return ".".join((*location, "(a field name)"))
                pending.append(((*location, key), item))
        elif isinstance(value, list):
            pending.extend(
                ((*location, str(index)), item) for index, item in enumerate(value)
            )
    return None


def _validate_resource(path: Path, entry: Entry) -> None:
    try:
        model = get_fhir_model_class(entry.resource_type)
    except (ValueError, TypeError):
        raise BundleRejected(
            path, f"unknown resourceType {entry.resource_type!r}", entry
        ) from None
    if entry.resource_type not in IMPORTED_TYPES:
        return

    field = _field_holding_nul(entry.resource)
    if field is not None:
        raise BundleRejected(
            path, f"field {field}: not valid FHIR (text holds a NUL character)", entry
        )

    try:
        validated = model.model_validate(entry.resource)
    except ValidationError as error:
        raise BundleRejected(path, _plain_violation(error), entry) from None
    try:
        found = _value_of_another_json_type(entry.resource, validated)
    except RecursionError:
        raise BundleRejected(path, "nested too deeply", entry) from None
    if found is not None:
        field, expected = found
        raise BundleRejected(
            path, f"field {field}: not valid FHIR (expected {expected})", entry
        )
    _check_required_codes(path, entry)
    miswritten = _miswritten_code(entry.resource)
    if miswritten is not None:
        location, terminology = miswritten
        raise BundleRejected(path, f"field {location}: not a {terminology} code", entry)


# How each terminology the sensitive-code lists use writes its codes, in
# ASCII digits without leading zeros. A code spelled otherwise is no code of
# its system: refused here, and matched to the lists by its digits anyway
# (records.sensitivity.comparable_code), under any system or none. LOINC's
# check digit is one digit; Synthea's own codes (99999-10) have two.
_SNOMED_CT = ("SNOMED CT", re.compile(r"[1-9][0-9]{5,17}"))
_LOINC = ("LOINC", re.compile(r"(?:L[AP])?[1-9][0-9]{0,7}-(?:[0-9]|[1-9][0-9])"))
_RXNORM = ("RxNorm", re.compile(r"[1-9][0-9]{0,9}"))
# Each terminology by its FHIR address and by its HL7 OID.
CODE_SPELLINGS = {
    "http://snomed.info/sct": _SNOMED_CT,
    "urn:oid:2.16.840.1.113883.6.96": _SNOMED_CT,
    "http://loinc.org": _LOINC,
    "urn:oid:2.16.840.1.113883.6.1": _LOINC,
    "http://www.nlm.nih.gov/research/umls/rxnorm": _RXNORM,
    "urn:oid:2.16.840.1.113883.6.88": _RXNORM,
}


def _miswritten_code(resource: dict) -> tuple[str, str] | None:
    """(field, terminology) of a coding whose code its system cannot have."""
    stack: list[tuple[tuple, object]] = [((), resource)]
    while stack:
        location, item = stack.pop()
        if isinstance(item, dict):
            spelling = CODE_SPELLINGS.get(item.get("system"))
            code = item.get("code")
            if spelling is not None and code is not None:
                terminology, pattern = spelling
                if not isinstance(code, str) or not pattern.fullmatch(code):
                    return ".".join(map(str, (*location, "code"))), terminology
            stack.extend(((*location, key), value) for key, value in item.items())
        elif isinstance(item, list):
            stack.extend(
                ((*location, index), value) for index, value in enumerate(item)
            )
    return None


def _value_of_another_json_type(raw, validated, location=()) -> tuple[str, str] | None:
    """(field, what FHIR expects) for a value the models took in another JSON type.

    FHIR writes dates and times as text, and booleans as true or false. The
    models are lenient: they take a number as seconds since 1970 (or false
    as 0), and "yes", "no" or 1 as a boolean, so such a value would pass as
    a date or a flag nobody wrote. Walks the JSON beside what the models
    made of it.
    """
    if isinstance(validated, bool) and not isinstance(raw, bool):
        return ".".join(location) or "(value)", "true or false"
    if isinstance(raw, bool | int | float):
        if isinstance(validated, datetime.date | datetime.time):
            return ".".join(location) or "(value)", "a date as text"
        return None
    if isinstance(raw, list) and isinstance(validated, list):
        for index, (item, made) in enumerate(zip(raw, validated, strict=False)):
            found = _value_of_another_json_type(item, made, (*location, str(index)))
            if found is not None:
                return found
    elif isinstance(raw, dict) and isinstance(validated, BaseModel):
        attributes = {
            (info.alias or name): name
            for name, info in type(validated).model_fields.items()
        }
        for key, item in raw.items():
            if key in attributes:
                made = getattr(validated, attributes[key], None)
                found = _value_of_another_json_type(item, made, (*location, key))
                if found is not None:
                    return found
    return None


def _plain_violation(error: ValidationError) -> str:
    """The first broken field and rule, for an operator, never the value (PHI)."""
    first = error.errors()[0]
    # "root" is the models' name for a value checked whole, not a FHIR field.
    location = ".".join(str(part) for part in first["loc"] if part != "root")
    kind, context = first["type"], first.get("ctx") or {}
    if kind == "model_validation_format" and "model_class" in context:
        reason = f"expected a {context['model_class']}"
    elif "regex" in first["msg"] or kind == "string_pattern_mismatch":
        reason = "not in the form FHIR requires"
    else:
        reason = PLAIN_REASONS.get(kind, first["msg"].removeprefix("Value error, "))
    return f"field {location or '(resource)'}: not valid FHIR ({reason})"


# The library's wording for what went wrong, as an operator would put it.
# json_invalid: the models read a text where an object belongs as JSON.
PLAIN_REASONS = {
    "json_invalid": "expected an object, not a text",
    "extra_forbidden": "no such field",
    "missing": "required",
    "model_field_validation.missing": "required",
    "list_type": "expected a list",
    "string_type": "expected a text",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "decimal_type": "expected a number",
    "decimal_parsing": "expected a number",
    # The models read a number as seconds since 1970; FHIR writes dates as text.
    "date_from_datetime_inexact": "expected a date as text",
    "date_type": "expected a date as text",
    "datetime_type": "expected a date and time as text",
}


def _check_required_codes(path: Path, entry: Entry) -> None:
    # The models check each code's spelling, not that it is one of the codes
    # FHIR allows where a value set is required: checked here for what the
    # portal stores and shows.
    allowed = REQUIRED_STATUSES.get(entry.resource_type)
    if allowed and entry.resource.get("status", next(iter(allowed))) not in allowed:
        raise BundleRejected(path, "field status: not a code FHIR allows here", entry)
    allowed = REQUIRED_CLINICAL_STATUSES.get(entry.resource_type)
    stored = _concept_code(entry.resource.get("clinicalStatus"))
    if allowed and stored and stored not in allowed:
        raise BundleRejected(
            path, "field clinicalStatus: not a code FHIR allows here", entry
        )
    for contact in entry.resource.get("telecom") or ():
        if contact.get("system", "other") not in CONTACT_SYSTEMS:
            raise BundleRejected(
                path, "field telecom.system: not a code FHIR allows here", entry
            )


# FHIR R4's required value sets for the status of each imported resource.
REQUIRED_STATUSES = {
    "Encounter": frozenset({
        "planned", "arrived", "triaged", "in-progress", "onleave", "finished",
        "cancelled", "entered-in-error", "unknown",
    }),
    "Observation": frozenset({
        "registered", "preliminary", "final", "amended", "corrected", "cancelled",
        "entered-in-error", "unknown",
    }),
    "MedicationRequest": frozenset({
        "active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped",
        "draft", "unknown",
    }),
    "Immunization": frozenset({"completed", "entered-in-error", "not-done"}),
    "Procedure": frozenset({
        "preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
        "entered-in-error", "unknown",
    }),
}  # fmt: skip
# The same for the clinicalStatus stored as a condition's or allergy's status.
REQUIRED_CLINICAL_STATUSES = {
    "Condition": frozenset({
        "active", "recurrence", "relapse", "inactive", "remission", "resolved",
    }),
    "AllergyIntolerance": frozenset({"active", "inactive", "resolved"}),
}  # fmt: skip
CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


@dataclass
class CheckedBundle:
    # One bundle is one patient's record: None only where it holds no
    # clinical record either (Synthea's hospital and practitioner files).
    patient: Entry | None
    clinical: list[Entry]
    skipped: Counter
    # Entry index -> sensitive category, with references inside the bundle
    # followed (see records.sensitivity).
    sensitivities: dict[int, str]
    # Entry index -> the fields stored for that clinical record.
    values: dict[int, dict]


def _check_entries(path: Path, entries: list[Entry], bundle: dict) -> CheckedBundle:
    patient = None
    for entry in entries:
        _validate_resource(path, entry)
        if entry.resource_type == "Patient":
            if patient is not None:
                raise BundleRejected(
                    path,
                    "a second Patient; a bundle holds one patient's records",
                    entry,
                )
            _check_patient(path, entry)
            patient = entry

    clinical: list[Entry] = []
    values: dict[int, dict] = {}
    skipped: Counter = Counter()
    first_of: dict[str, int] = {}
    for entry in entries:
        if entry.resource_type in CLINICAL_MODELS:
            if not entry.resource_id:
                raise BundleRejected(path, "has no id", entry)
            _check_unique(path, entry, first_of)
            _check_subject(path, entry, patient, entries)
            clinical.append(entry)
            # Every record, stored already or not: a spoiled copy of a bundle
            # imported before must be refused, not reported as present.
            values[entry.index] = _record_values(path, entry)
        elif entry.resource_type != "Patient":
            skipped[entry.resource_type] += 1

    categories = sensitivities_of_bundle(
        [(_names_of(entry), entry.resource) for entry in entries],
        stored=_stored_categories_named(path, entries, patient),
        # Its labels only: the bundle's meta names no record of its own.
        bundle={"meta": bundle.get("meta")},
    )
    sensitivities = {
        entry.index: category
        for entry, category in zip(entries, categories, strict=True)
    }
    return CheckedBundle(patient, clinical, skipped, sensitivities, values)


def _stored_categories_named(
    path: Path, entries: list[Entry], patient: Entry | None
) -> dict[str, str]:
    """The category of each record a reference names outside this bundle.

    A bundle may add to a chart imported before: a procedure whose reason is
    a diagnosis in an earlier bundle is as sensitive as that diagnosis, as it
    would be with both in one bundle. Keyed by the reference as written
    (``urn:uuid:<id>``, ``Condition/<id>``, or a URL ending in ``Type/id``).

    A reason naming a record the portal could store but holds neither here
    nor from before refuses the bundle: that record's category is unknown,
    and a procedure given for an HIV diagnosis imported later would stay
    routine. The operator imports the bundle holding it first.
    """
    inside = set().union(*(_names_of(entry) for entry in entries))
    outside: dict[str, Entry] = {}
    # Every entry's references, stored or not: a report the portal does not
    # keep can still be the reason a procedure was done.
    for entry in entries:
        for name in references_in(entry.resource) - inside:
            # "#id" names a resource contained in the one naming it, whose
            # codes and labels count as that resource's own.
            if not name.startswith("#"):
                outside.setdefault(name, entry)
    if BY_IDENTIFIER_ONLY in outside:
        raise BundleRejected(
            path,
            "a reason, basis or whole it names by an identifier alone cannot be "
            "followed, so its sensitivity is unknown; name it by reference",
            outside[BY_IDENTIFIER_ONLY],
        )

    # The stored records' keys each outside name could be, by record type.
    named_by: dict[str, str] = {}
    for name in outside:
        if name.startswith("urn:uuid:"):
            types, resource_id = CLINICAL_MODELS, name.removeprefix("urn:uuid:")
        else:
            *_, resource_type, resource_id = ["", "", *name.split("/")]
            types = [resource_type] if resource_type in CLINICAL_MODELS else []
        if not types:
            # A record the portal never keeps (a Medication, a report) or a
            # name with no type: nothing imported before can say what it is.
            raise BundleRejected(
                path,
                "a reason, basis or whole it names is not in this bundle and is "
                "not a record the portal keeps (or names no type), so its "
                "sensitivity is unknown; send it in the same bundle",
                outside[name],
            )
        for resource_type in types:
            named_by[_source_key(resource_type, resource_id)] = name
    # And the bundle's own records, stored before under the same ids.
    own: dict[str, set[str]] = {}
    for entry in entries:
        if entry.resource_type in CLINICAL_MODELS and entry.resource_id:
            key = _source_key(entry.resource_type, entry.resource_id)
            own[key] = _names_of(entry)
    if not named_by and not own:
        return {}

    stored_patient = (
        find_patient_by_identifier(FHIR_ID_SYSTEM, patient.resource_id)
        if patient is not None
        else None
    )
    found = {}
    if stored_patient is not None:
        for model in CLINICAL_MODELS.values():
            stored = model.objects.filter(
                patient=stored_patient, source_key__in=[*named_by, *own]
            ).values_list("source_key", "sensitivity")
            for key, sensitivity in stored:
                if key in named_by:
                    found[named_by[key]] = sensitivity
                for name in own.get(key, ()):
                    found[name] = sensitivity
    unknown = sorted(set(named_by.values()) - found.keys())
    if unknown:
        raise BundleRejected(
            path,
            "a reason, basis or whole it names is neither in this bundle nor "
            "imported for this patient, so its sensitivity is unknown; import "
            "the bundle that holds it first (a Medication or a report, which "
            "the portal does not keep, must come in the same bundle)",
            outside[unknown[0]],
        )
    return found


def _check_unique(path: Path, entry: Entry, first_of: dict[str, int]) -> None:
    # A record is stored once per type and id: of two differing copies in one
    # bundle, one would be dropped unseen.
    name = f"{entry.resource_type}/{entry.resource_id}"
    if name in first_of:
        raise BundleRejected(path, f"duplicate of entry {first_of[name]}", entry)
    first_of[name] = entry.index


def _record_values(path: Path, entry: Entry) -> dict:
    try:
        values = EXTRACTORS[entry.resource_type](entry.resource)
        _check_not_in_future(values, entry.resource)
    except EntryInvalid as error:
        raise BundleRejected(path, str(error), entry) from None
    except (KeyError, TypeError, ValueError) as error:
        # Library messages may quote the value; name only the kind of error.
        raise BundleRejected(
            path, f"cannot be read ({error_kind(error)})", entry
        ) from None
    return values


def _names_of(entry: Entry) -> set[str]:
    """Every way a reference inside the bundle may name this entry."""
    names = {
        f"{entry.resource_type}/{entry.resource_id}",
        f"urn:uuid:{entry.resource_id}",
    }
    if entry.full_url:
        names.add(entry.full_url)
    return {reference_name(name) for name in names}


def _check_patient(path: Path, entry: Entry) -> None:
    resource = entry.resource
    if not entry.resource_id:
        raise BundleRejected(path, "Patient has no id", entry)
    _check_birth_date(path, entry)
    _check_deceased_date(path, entry)
    if resource.get("gender", "unknown") not in GENDER_CODES:
        raise BundleRejected(
            path, f"field gender: not one of {', '.join(GENDER_CODES)}", entry
        )

    name = _official_name(resource)
    if not name.get("family") or not name.get("given"):
        raise BundleRejected(
            path, "field name: a family and a given name are required", entry
        )
    for part in [name.get("family", ""), *name.get("given", [])]:
        if len(part) > MAX_NAME_LENGTH:
            raise BundleRejected(
                path, f"field name: longer than {MAX_NAME_LENGTH} characters", entry
            )


GENDER_CODES = ("male", "female", "other", "unknown")
EARLIEST_BIRTH = datetime.date(1880, 1, 1)


def _check_deceased_date(path: Path, entry: Entry) -> None:
    deceased = _date_of(entry.resource.get("deceasedDateTime"))
    born = datetime.date.fromisoformat(entry.resource["birthDate"])
    if deceased and not born <= deceased <= datetime.date.today():
        raise BundleRejected(
            path, "field deceasedDateTime: before birth or in the future", entry
        )


def _check_birth_date(path: Path, entry: Entry) -> None:
    """A full, plausible birth date: the portal's second identifier."""
    value = entry.resource.get("birthDate")
    if not value:
        raise BundleRejected(path, "field birthDate: required for a patient", entry)
    try:
        born = datetime.date.fromisoformat(value)
    except ValueError:
        raise BundleRejected(
            path,
            "field birthDate: a full date (year, month and day) is required",
            entry,
        ) from None
    if not EARLIEST_BIRTH <= born <= datetime.date.today():
        raise BundleRejected(path, "field birthDate: not a plausible birth date", entry)


def _check_subject(
    path: Path, entry: Entry, patient: Entry | None, entries: list[Entry]
) -> None:
    """A record must be about the bundle's own Patient.

    Never about a patient imported before: a reference edited to point at
    another chart would file the record there, and a bundle whose Patient
    entry was spoiled would attach its records to whoever held that id.
    """
    name = "patient" if "patient" in entry.resource else "subject"
    subject = entry.resource.get(name)
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not reference:
        raise BundleRejected(path, f"field {name}: no patient reference", entry)
    if patient is None:
        # Name the entry the record points at, if the bundle holds it under
        # another type: that entry, not the record, is what is wrong.
        for other in entries:
            if other.resource_id and reference in _names_of(other):
                raise BundleRejected(
                    path,
                    f"is the patient of entry {entry.index} but is not a Patient",
                    other,
                )
        raise BundleRejected(path, f"field {name}: the bundle holds no Patient", entry)
    if reference not in _names_of(patient):
        raise BundleRejected(path, f"field {name}: not this bundle's Patient", entry)


def _store(path: Path, bundle: CheckedBundle, *, actor: str) -> ImportSummary:
    summary = ImportSummary(bundles=1, skipped=bundle.skipped)
    if bundle.patient is None:
        return summary
    patient, is_new = _upsert_patient(path, bundle.patient)
    if is_new:
        summary.patients_created += 1
    else:
        summary.patients_existing += 1

    by_type: dict[str, list[Entry]] = {}
    for entry in bundle.clinical:
        by_type.setdefault(entry.resource_type, []).append(entry)
    for resource_type, entries in by_type.items():
        created, reclassified = _store_records(
            patient, resource_type, entries, bundle, actor=actor
        )
        summary.created[resource_type] += created
        summary.unchanged[resource_type] += len(entries) - created
        summary.reclassified[resource_type] += reclassified

    # Inside the transaction: if the evidence cannot be written, the import
    # rolls back rather than leaving unrecorded PHI behind.
    record_event(
        actor=actor,
        action=AuditAction.FHIR_IMPORT,
        outcome=AuditOutcome.SUCCESS,
        patient_ref=str(patient.pk),
        record_type="Bundle",
        reason=f"{sum(summary.created.values())} new record(s)",
    )
    return summary


def _upsert_patient(path: Path, entry: Entry) -> tuple[Patient, bool]:
    existing = find_patient_by_identifier(FHIR_ID_SYSTEM, entry.resource_id)
    resource = entry.resource
    identifiers = {(FHIR_ID_SYSTEM, entry.resource_id)}
    for identifier in resource.get("identifier") or []:
        if identifier.get("system") and identifier.get("value"):
            identifiers.add((identifier["system"], str(identifier["value"])))

    # Checked for a patient already present too: a known bundle that now
    # carries someone else's identifier has two people's records mixed up,
    # and its records must not be filed under either.
    for system, value in identifiers:
        if system == FHIR_ID_SYSTEM:
            continue
        holder = find_patient_by_identifier(system, value)
        if holder is not None and (existing is None or holder.pk != existing.pk):
            raise BundleRejected(
                path,
                f"field identifier: a {system} identifier already "
                "belongs to another patient",
                entry,
            )
    if existing is not None:
        return existing, False

    name = _official_name(resource)
    patient = register_patient(
        given_name=" ".join(name.get("given", [])),
        family_name=name["family"],
        birth_date=datetime.date.fromisoformat(resource["birthDate"]),
        sex=resource.get("gender") or "",
        address=_address_text(resource),
        telecom=_telecom_text(resource),
        deceased_on=_date_of(resource.get("deceasedDateTime")),
        source=PatientSource.FHIR_IMPORT,
        identifiers=sorted(identifiers),
    )
    return patient, True


def _store_records(
    patient: Patient,
    resource_type: str,
    entries: list[Entry],
    bundle: CheckedBundle,
    *,
    actor: str,
) -> tuple[int, int]:
    """Store the records not stored yet: (records created, records reclassified)."""
    model = CLINICAL_MODELS[resource_type]
    keys = {
        _source_key(entry.resource_type, entry.resource_id): entry for entry in entries
    }
    existing = dict(
        model.objects.filter(patient=patient, source_key__in=list(keys)).values_list(
            "source_key", "sensitivity"
        )
    )
    reclassified = _reclassify(
        model, patient, keys, existing, bundle.sensitivities, actor=actor
    )

    records = [
        model(
            patient=patient,
            source_key=key,
            sensitivity=bundle.sensitivities[entry.index],
            **bundle.values[entry.index],
        )
        for key, entry in keys.items()
        if key not in existing
    ]
    model.objects.bulk_create(records, batch_size=500, actor=actor)
    return len(records), reclassified


def _reclassify(model, patient, keys, existing, sensitivities, *, actor) -> int:
    """Give records imported before their category was known the right one.

    The code lists and the references followed grow over time; a bundle
    imported again brings its records under today's rules, so a record
    once left routine by mistake is withheld from then on. Only ever from
    routine to a sensitive category: what a file says cannot lift a record
    out of its category, or move it to another whose readers differ, since
    an edited copy of a bundle would otherwise show withheld records to
    whoever lacks the grant.
    """
    routine = Sensitivity.ROUTINE.value
    changed = {
        key: sensitivities[keys[key].index]
        for key, stored in existing.items()
        if stored == routine and sensitivities[keys[key].index] != routine
    }
    if not changed:
        return 0
    for record in model.objects.filter(patient=patient, source_key__in=list(changed)):
        record.sensitivity = changed[record.source_key]
        # The category only: the sealed values stay as stored, unopened.
        record.save(update_fields=["sensitivity"])
    record_events(
        actor=actor,
        action=AuditAction.RECORD_RECLASSIFIED,
        outcome=AuditOutcome.SUCCESS,
        records=[(str(patient.pk), model.__name__, ["sensitivity"])] * len(changed),
        reason="sensitive category set again at re-import",
    )
    return len(changed)


# Clocks differ and time zones run ahead; a day's grace, no more.
FUTURE_GRACE = datetime.timedelta(days=1)


# The FHIR elements each record date is read from, in the order they are
# tried (a Period gives its start, or for an encounter's end its end): the
# extractors that try several read them from here, and a refused date is
# named as the bundle's author wrote it.
_DATE_ELEMENTS = {
    "Encounter": {"occurred_at": ("period",), "ended_at": ("period",)},
    "Condition": {
        "occurred_at": ("onsetDateTime", "onsetPeriod", "recordedDate"),
        "abated_at": ("abatementDateTime", "abatementPeriod"),
    },
    "MedicationRequest": {"occurred_at": ("authoredOn",)},
    "AllergyIntolerance": {"occurred_at": ("recordedDate", "onsetDateTime")},
    "Observation": {"occurred_at": ("effectiveDateTime", "effectivePeriod", "issued")},
    "Immunization": {"occurred_at": ("occurrenceDateTime",)},
    "Procedure": {"occurred_at": ("performedDateTime", "performedPeriod")},
}


def _check_not_in_future(values: dict, resource: dict) -> None:
    latest = datetime.datetime.now(tz=datetime.UTC) + FUTURE_GRACE
    elements = _DATE_ELEMENTS.get(resource.get("resourceType"), {})
    for name in ("occurred_at", "ended_at", "abated_at"):
        moment = values.get(name)
        if moment is not None and moment > latest:
            part = "end" if name == "ended_at" else "start"
            read_from = elements.get(name, (name,))
            raise EntryInvalid(
                f"field {_element_read(resource, read_from, part)}: in the future"
            )


def _element_read(resource: dict, names: tuple[str, ...], part: str) -> str:
    """Which of ``names`` a date was read from, as FHIR names it."""
    for name in names:
        value = resource.get(name)
        if isinstance(value, dict) and value.get(part):
            return f"{name}.{part}"
        if value and not isinstance(value, dict):
            return name
    return " or ".join(names)


def _source_key(resource_type: str, resource_id: str) -> str:
    return crypto.dedupe_tag("fhir-source", f"{resource_type}/{resource_id}")


def _official_name(resource: dict) -> dict:
    names = resource.get("name") or []
    for name in names:
        if name.get("use") == "official":
            return name
    return names[0] if names else {}


def _address_text(resource: dict) -> str:
    parts = []
    for address in resource.get("address") or []:
        line = ", ".join(address.get("line") or [])
        place = " ".join(
            filter(
                None,
                [address.get("city"), address.get("state"), address.get("postalCode")],
            )
        )
        parts.append(", ".join(filter(None, [line, place, address.get("country")])))
    return "; ".join(filter(None, parts))


def _telecom_text(resource: dict) -> str:
    return "; ".join(
        f"{item.get('system', 'contact')}: {item['value']}"
        for item in resource.get("telecom") or []
        if item.get("value")
    )


def parse_instant(value: str | None) -> datetime.datetime | None:
    """A FHIR date or dateTime as an aware datetime (partial dates start the period).

    A date without a time is the day as the clinic sees it: midnight in the
    portal's display zone (PORTAL_TIME_ZONE). Midnight UTC would show the
    day before on every page of a clinic west of Greenwich.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        # _value_of_another_json_type names the field first; this is the backstop.
        raise EntryInvalid(
            "a date or time given as a number (FHIR writes them as text)"
        )
    if len(value) == 4:
        value = f"{value}-01-01"
    elif len(value) == 7:
        value = f"{value}-01"
    moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        # FHIR requires a zone with a time; only a date comes without one.
        zone = datetime.UTC if "T" in value else _display_zone()
        moment = moment.replace(tzinfo=zone)
    return moment


def _display_zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.PORTAL_TIME_ZONE)


def _date_of(value: str | None) -> datetime.date | None:
    moment = parse_instant(value)
    return moment.date() if moment else None


def _concept_text(concept: dict | None) -> str:
    if not concept:
        return ""
    if concept.get("text"):
        return _clip(concept["text"])
    for coding in concept.get("coding") or []:
        if coding.get("display"):
            return _clip(coding["display"])
        if coding.get("code"):
            return _code(coding["code"])
    return ""


def _concept_code(concept: dict | None) -> str:
    for coding in (concept or {}).get("coding") or []:
        if coding.get("code"):
            return _code(coding["code"])
    return ""


def _code(code) -> str:
    """A code as stored; no terminology writes one this long."""
    code = str(code)
    if len(code) > MAX_CODE_LENGTH:
        raise EntryInvalid(f"field code: longer than {MAX_CODE_LENGTH} characters")
    return code


def _first_code(concepts) -> str:
    for concept in concepts or []:
        code = _concept_code(concept)
        if code:
            return code
    return ""


def _clip(text: str) -> str:
    """Text as stored: a longer text is cut, and says so where it is shown."""
    text = str(text)
    if len(text) > MAX_SOURCE_TEXT_LENGTH:
        raise EntryInvalid(
            f"field text: longer than {MAX_SOURCE_TEXT_LENGTH} characters"
        )
    if len(text) > MAX_TEXT_LENGTH:
        return text[: MAX_TEXT_LENGTH - len(CUT_MARK)] + CUT_MARK
    return text


def _record_date(
    resource: dict, resource_type: str, name: str
) -> datetime.datetime | None:
    """A record date, from the elements ``_DATE_ELEMENTS`` lists for it."""
    return _start_of(resource, *_DATE_ELEMENTS[resource_type][name])


def _start_of(resource: dict, *names: str) -> datetime.datetime | None:
    for name in names:
        value = resource.get(name)
        if isinstance(value, dict):
            value = value.get("start")
        if value:
            return parse_instant(value)
    return None


def _encounter(resource: dict) -> dict:
    period = resource.get("period") or {}
    types = resource.get("type") or [{}]
    reasons = resource.get("reasonCode") or [{}]
    started, ended = (
        parse_instant(period.get("start")),
        parse_instant(period.get("end")),
    )
    if started and ended and ended < started:
        raise EntryInvalid("field period: end is before start")
    return {
        "occurred_at": started,
        "ended_at": ended,
        "status": resource.get("status", ""),
        "encounter_class": (resource.get("class") or {}).get("code", "")[:16],
        "code": _concept_code(types[0]),
        "description": _concept_text(types[0]),
        "reason": _concept_text(reasons[0]),
    }


def _condition(resource: dict) -> dict:
    return {
        "occurred_at": _record_date(resource, "Condition", "occurred_at"),
        "abated_at": _record_date(resource, "Condition", "abated_at"),
        "status": _concept_code(resource.get("clinicalStatus")),
        "code": _concept_code(resource.get("code")),
        "description": _concept_text(resource.get("code")),
    }


def _medication_request(resource: dict) -> dict:
    concept = resource.get("medicationCodeableConcept")
    description = _concept_text(concept) or _clip(
        (resource.get("medicationReference") or {}).get("display", "")
    )
    dosage = "; ".join(
        _clip(instruction["text"])
        for instruction in resource.get("dosageInstruction") or []
        if instruction.get("text")
    )
    return {
        "occurred_at": parse_instant(resource.get("authoredOn")),
        "status": resource.get("status", ""),
        "code": _concept_code(concept),
        "description": description,
        "dosage": dosage,
    }


def _allergy(resource: dict) -> dict:
    reactions = []
    for reaction in resource.get("reaction") or []:
        manifestations = ", ".join(
            _concept_text(item) for item in reaction.get("manifestation") or []
        )
        severity = reaction.get("severity")
        reactions.append(
            f"{manifestations} ({severity})" if severity else manifestations
        )
    categories = resource.get("category") or [""]
    return {
        "occurred_at": _record_date(resource, "AllergyIntolerance", "occurred_at"),
        "status": _concept_code(resource.get("clinicalStatus")),
        "category": str(categories[0])[:32],
        "criticality": (resource.get("criticality") or "")[:32],
        "code": _concept_code(resource.get("code")),
        "description": _concept_text(resource.get("code")),
        "reaction": _clip("; ".join(filter(None, reactions))),
    }


def _quantity_text(quantity: dict) -> str:
    value = quantity.get("value")
    unit = quantity.get("unit") or quantity.get("code") or ""
    if value is None:
        return ""
    number = f"{round(_plausible(value), 2):g}"
    return f"{number} {unit}".strip()


def _plausible(value) -> float:
    try:
        value = float(value)
    except OverflowError:
        # A whole number beyond any float (JSON sets no limit): as implausible
        # as one that fits and is too large.
        raise EntryInvalid("field value: not a plausible measurement") from None
    if not math.isfinite(value) or abs(value) > MAX_QUANTITY:
        raise EntryInvalid("field value: not a plausible measurement")
    return value


def _value_text(holder: dict) -> str:
    if "valueQuantity" in holder:
        return _quantity_text(holder["valueQuantity"])
    if "valueCodeableConcept" in holder:
        return _concept_text(holder["valueCodeableConcept"])
    for name in ("valueString", "valueBoolean", "valueInteger", "valueDateTime"):
        if name in holder:
            return _clip(str(holder[name]))
    return ""


SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"


def _blood_pressure_text(components: list) -> str:
    """Systolic/diastolic the way clinicians write it: 130/81 mm[Hg]."""
    by_code = {_concept_code(c.get("code")): c.get("valueQuantity") for c in components}
    systolic, diastolic = by_code.get(SYSTOLIC), by_code.get(DIASTOLIC)
    if not (systolic and diastolic) or None in (
        systolic.get("value"),
        diastolic.get("value"),
    ):
        return ""
    unit = systolic.get("unit") or systolic.get("code") or ""
    high, low = (
        round(_plausible(systolic["value"])),
        round(_plausible(diastolic["value"])),
    )
    return f"{high}/{low} {unit}".strip()


def _observation_value(resource: dict) -> str:
    value = _value_text(resource) or _blood_pressure_text(
        resource.get("component") or []
    )
    if value:
        return value
    parts = []
    for component in resource.get("component") or []:
        component_value = _value_text(component)
        if component_value:
            parts.append(f"{_concept_text(component.get('code'))}: {component_value}")
    return _clip("; ".join(parts))


def _observation_category(resource: dict) -> str:
    codes = {
        coding.get("code")
        for concept in resource.get("category") or []
        for coding in concept.get("coding") or []
    }
    for category in (ObservationCategory.VITAL_SIGNS, ObservationCategory.LABORATORY):
        if category.value in codes:
            return category.value
    return ObservationCategory.OTHER.value


def _observation(resource: dict) -> dict:
    return {
        "occurred_at": _record_date(resource, "Observation", "occurred_at"),
        "status": resource.get("status", ""),
        "category": _observation_category(resource),
        "code": _concept_code(resource.get("code")),
        "description": _concept_text(resource.get("code")),
        "value": _observation_value(resource),
    }


def _immunization(resource: dict) -> dict:
    return {
        "occurred_at": parse_instant(resource.get("occurrenceDateTime")),
        "status": resource.get("status", ""),
        "code": _concept_code(resource.get("vaccineCode")),
        "description": _concept_text(resource.get("vaccineCode")),
    }


def _procedure(resource: dict) -> dict:
    return {
        "occurred_at": _record_date(resource, "Procedure", "occurred_at"),
        "status": resource.get("status", ""),
        "code": _concept_code(resource.get("code")),
        "description": _concept_text(resource.get("code")),
    }


EXTRACTORS = {
    "Encounter": _encounter,
    "Condition": _condition,
    "MedicationRequest": _medication_request,
    "AllergyIntolerance": _allergy,
    "Observation": _observation,
    "Immunization": _immunization,
    "Procedure": _procedure,
}
