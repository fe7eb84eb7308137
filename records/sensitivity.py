"""Which clinical records fall in a sensitive category.

By their codes (short, explicit lists, each code one a reviewer can look up,
and ICD categories), by the words of their texts, by the security labels a
sender put on them, and by the records they name as their reason. A record
matching none is routine. The lists cannot be complete: where they err, they
are meant to withhold too much rather than show too much. A note written in
the portal takes its category from its kind, where it is written.
"""

import re
import unicodedata

from records.models import Sensitivity

# SNOMED CT, RxNorm and LOINC codes seen in Synthea output or in common use.
SENSITIVE_CODES: dict[str, Sensitivity] = {
    # Substance-use disorder and its treatment (42 CFR Part 2).
    "5602001": Sensitivity.SUBSTANCE_USE,  # Opioid abuse (disorder)
    "55680006": Sensitivity.SUBSTANCE_USE,  # Drug overdose
    "361055000": Sensitivity.SUBSTANCE_USE,  # Misuses drugs (finding)
    "7200002": Sensitivity.SUBSTANCE_USE,  # Alcoholism
    "66590003": Sensitivity.SUBSTANCE_USE,  # Alcohol dependence
    "6525002": Sensitivity.SUBSTANCE_USE,  # Dependent drug abuse
    "351266": Sensitivity.SUBSTANCE_USE,  # buprenorphine / naloxone tablet
    "1010600": Sensitivity.SUBSTANCE_USE,  # buprenorphine / naloxone film
    "99999-0": Sensitivity.SUBSTANCE_USE,  # Synthea: DSM-5 opioid use disorder
    "65750-2": Sensitivity.SUBSTANCE_USE,  # Drugs of abuse 5 panel, urine
    "428211000124100": Sensitivity.SUBSTANCE_USE,  # Assessment of substance use
    "713106006": Sensitivity.SUBSTANCE_USE,  # Screening for drug abuse
    "56876005": Sensitivity.SUBSTANCE_USE,  # Drug rehabilitation and detoxification
    "61480009": Sensitivity.SUBSTANCE_USE,  # Drug detoxification
    "266707007": Sensitivity.SUBSTANCE_USE,  # Drug addiction therapy
    "60112009": Sensitivity.SUBSTANCE_USE,  # Drug addiction counseling
    "10939881000119104": Sensitivity.SUBSTANCE_USE,  # Unhealthy alcohol drinking
    "72109-2": Sensitivity.SUBSTANCE_USE,  # AUDIT-C panel
    "75626-2": Sensitivity.SUBSTANCE_USE,  # Total score [AUDIT-C]
    "763302001": Sensitivity.SUBSTANCE_USE,  # Assessment using AUDIT-C
    "82666-9": Sensitivity.SUBSTANCE_USE,  # DAST-10 panel
    "82667-7": Sensitivity.SUBSTANCE_USE,  # Total score [DAST-10]
    "3397-7": Sensitivity.SUBSTANCE_USE,  # Cocaine in urine
    # HIV diagnoses and results.
    "86406008": Sensitivity.HIV,  # Human immunodeficiency virus infection
    "165816005": Sensitivity.HIV,  # HIV positive
    "55277-8": Sensitivity.HIV,  # HIV status
    "75622-1": Sensitivity.HIV,  # HIV 1 and 2 Ab and HIV1 p24 Ag panel
    "7917-8": Sensitivity.HIV,  # HIV 1 Ab
    "7918-6": Sensitivity.HIV,  # HIV 1+2 Ab
    "5221-7": Sensitivity.HIV,  # HIV 1 Ab by immunoblot
    "29893-5": Sensitivity.HIV,  # HIV 1 Ab by immunoassay
    "31201-7": Sensitivity.HIV,  # HIV 1+2 Ab by rapid immunoassay
    "56888-1": Sensitivity.HIV,  # HIV 1+2 Ab + HIV 1 p24 Ag by immunoassay
    "20447-9": Sensitivity.HIV,  # HIV 1 RNA (viral load)
    "25835-0": Sensitivity.HIV,  # HIV 1 RNA by NAA
    "62479008": Sensitivity.HIV,  # AIDS (disorder)
    # Genetic test results.
    "21636-6": Sensitivity.GENETIC,  # BRCA1 gene mutations tested for
    "21637-4": Sensitivity.GENETIC,  # BRCA2 gene mutations tested for
    "51969-4": Sensitivity.GENETIC,  # Genetic analysis report
    "81247-9": Sensitivity.GENETIC,  # Genetic variant reporting panel
    "48018-6": Sensitivity.GENETIC,  # Gene studied
}


# When one record touches two categories, the rarer grant decides.
_PRECEDENCE = (
    Sensitivity.PSYCHOTHERAPY,
    Sensitivity.HIV,
    Sensitivity.GENETIC,
    Sensitivity.SUBSTANCE_USE,
)


def sensitivity_of_resource(resource: dict) -> str:
    """The category of a FHIR resource, from every code anywhere in it.

    Not only its main code: an encounter's reason, a result's value, a
    component or an extension can say "opioid abuse" as plainly as a
    diagnosis does, and so can the security labels the sender put on it.
    """
    return _strictest(_categories_in(resource))


# Security labels (FHIR meta.security, HL7 v3 ActCode sensitivity policies)
# that name one of the portal's categories. A sender that marks a record
# this way has said it is sensitive, whatever its codes.
SENSITIVE_SECURITY_LABELS: dict[str, Sensitivity] = {
    "HIV": Sensitivity.HIV,
    "ETH": Sensitivity.SUBSTANCE_USE,  # substance abuse
    "ETHUD": Sensitivity.SUBSTANCE_USE,  # alcohol use disorder
    "OPIOIDUD": Sensitivity.SUBSTANCE_USE,  # opioid use disorder
    "GDIS": Sensitivity.GENETIC,  # genetic disease
    "PSYTHPN": Sensitivity.PSYCHOTHERAPY,  # psychotherapy note
    "CFRPART": Sensitivity.SUBSTANCE_USE,  # 42CFRPart2, as letters compare it
}


# Where a resource points at another for its reason, its basis or its whole:
# a procedure done for opioid abuse is as sensitive as the diagnosis, though
# its own code ("psychosocial care") is not.
REASON_REFERENCES = frozenset({
    "reasonReference", "addresses", "basedOn", "partOf", "hasMember",
    "derivedFrom", "diagnosis", "evidence", "result", "focus",
    "medicationReference", "complicationDetail", "assessment", "supportingInfo",
    "valueReference",
})  # fmt: skip


def sensitivities_of_bundle(
    resources: list[tuple[set[str], dict]],
    stored: dict[str, str] | None = None,
    bundle: dict | None = None,
) -> list[str]:
    """The category of each resource of a bundle, following its references.

    ``resources`` pairs each resource with the names others use to point at
    it (its fullUrl, ``Type/id``). A resource takes the categories of the
    resources it names as its reason, basis or whole, and of theirs in turn.
    ``stored`` gives the category of records imported before, by the names
    the bundle uses for them: those its references name, and its own.
    Security labels on the ``bundle`` itself, or on its Patient, say the
    whole record is sensitive: every resource takes their categories.
    """
    stored = stored or {}
    named = [references_in(resource) for _names, resource in resources]
    # A record takes its own stored category too: an edited copy of a
    # sensitive record imported before must not carry "routine" onwards.
    found = [
        _categories_in(resource)
        | {
            Sensitivity(stored[name])
            for name in names | reasons
            if stored.get(name, Sensitivity.ROUTINE.value) != Sensitivity.ROUTINE
        }
        for (names, resource), reasons in zip(resources, named, strict=True)
    ]
    # A name two entries share may mean either: it carries both categories.
    positions_of: dict[str, set[int]] = {}
    for position, (names, _resource) in enumerate(resources):
        for name in names:
            positions_of.setdefault(name, set()).add(position)
    targets = [
        set().union(*(positions_of.get(name, ()) for name in reasons))
        for reasons in named
    ]

    # Each round carries categories one reference further; a chain is never
    # longer than the bundle.
    for _round in range(len(resources)):
        changed = False
        for position, pointed_at in enumerate(targets):
            for target in pointed_at:
                if not found[target] <= found[position]:
                    found[position] = found[position] | found[target]
                    changed = True
        if not changed:
            break
    whole = labelled_categories(bundle or {}) | set().union(
        *(
            labelled_categories(resource)
            for _names, resource in resources
            if resource.get("resourceType") == "Patient"
        )
    )
    return [_strictest(categories | whole) for categories in found]


def _categories_in(resource: dict) -> set[Sensitivity]:
    """The categories named anywhere in a resource: by each Coding's code,
    wherever it sits (a CodeableConcept, an extension's valueCoding or
    valueCode, a bare Coding field), by the words of any text in it, and by
    its security labels."""
    found: set[Sensitivity] = set()
    stack = [resource]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            system = item.get("system")
            for key in ("code", "valueCode"):
                code = item.get(key)
                if isinstance(code, str | int) and not isinstance(code, bool):
                    found |= _categories_of_code(str(code), system)
            for key, value in item.items():
                if isinstance(value, str):
                    # Any text: a display, a note, a value written out
                    # ("HIV-1/2 antibody: reactive"); not the fields FHIR
                    # keeps for addresses, ids and times, which hold none.
                    if key not in _NOT_PROSE and not key.endswith(_TIME_FIELDS):
                        found |= _named_in_words(value)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            found |= _named_in_words(item)
    return found | labelled_categories(resource)


# Fields whose text is an address, an id, a token or a time, never words.
_NOT_PROSE = frozenset({
    "system", "url", "reference", "fullUrl", "id", "resourceType", "status",
    "use", "version", "gender", "language", "start", "end", "issued",
    "authoredOn", "recorded", "lastUpdated",
})  # fmt: skip
_TIME_FIELDS = ("DateTime", "Date", "Instant")


def _categories_of_code(code: str, system) -> set[Sensitivity]:
    found = _icd_categories(code, system)
    listed = SENSITIVE_CODES.get(comparable_code(code))
    if listed is not None:
        found.add(listed)
    return found


# ICD-10 and ICD-10-CM, by a code's first three characters (its category),
# then by longer codes where only part of a category is sensitive. Matched on
# the code's shape, a letter then two digits, whatever system names it: none
# of the terminologies the portal reads spells a code that way, so a local
# system's look-alike is withheld at worst, never shown.
ICD10_CATEGORIES: dict[str, Sensitivity] = {
    **dict.fromkeys(
        # HIV disease; asymptomatic HIV status; inconclusive HIV test (R75).
        ("B20", "B21", "B22", "B23", "B24", "Z21", "R75"),
        Sensitivity.HIV,
    ),
    **dict.fromkeys(
        # Mental and behavioural disorders due to alcohol, opioids, cannabis,
        # sedatives, cocaine, stimulants, hallucinogens, inhalants, other
        # drugs (F17, tobacco, is not a substance-use disorder under Part 2);
        # poisoning by narcotics (T40), as "drug overdose" is above.
        ("F10", "F11", "F12", "F13", "F14", "F15", "F16", "F18", "F19", "T40"),
        Sensitivity.SUBSTANCE_USE,
    ),
    # Genetic carrier (Z14) and genetic susceptibility to disease (Z15).
    **dict.fromkeys(("Z14", "Z15"), Sensitivity.GENETIC),
}
ICD10_CODES: dict[str, Sensitivity] = {
    "O987": Sensitivity.HIV,  # HIV disease complicating pregnancy
    "Z206": Sensitivity.HIV,  # contact with and exposure to HIV
    "O9931": Sensitivity.SUBSTANCE_USE,  # alcohol use complicating pregnancy
    "O9932": Sensitivity.SUBSTANCE_USE,  # drug use complicating pregnancy
    "T424": Sensitivity.SUBSTANCE_USE,  # poisoning by benzodiazepines
    "Z7141": Sensitivity.SUBSTANCE_USE,  # alcohol abuse counselling
    "Z7151": Sensitivity.SUBSTANCE_USE,  # drug abuse counselling
}

# ICD-9-CM, only under its own system: its codes are digits, as others' are.
ICD9_PREFIXES: dict[str, Sensitivity] = {
    "042": Sensitivity.HIV,  # HIV disease
    "V08": Sensitivity.HIV,  # asymptomatic HIV infection status
    "07953": Sensitivity.HIV,  # HIV-2 infection
    "79571": Sensitivity.HIV,  # nonspecific serologic evidence of HIV
    "291": Sensitivity.SUBSTANCE_USE,  # alcohol-induced mental disorders
    "292": Sensitivity.SUBSTANCE_USE,  # drug-induced mental disorders
    "303": Sensitivity.SUBSTANCE_USE,  # alcohol dependence
    "304": Sensitivity.SUBSTANCE_USE,  # drug dependence
    "305": Sensitivity.SUBSTANCE_USE,  # nondependent abuse of drugs
}
ICD9_ROUTINE_PREFIXES = ("3051",)  # tobacco use disorder
_ICD9_SYSTEMS = ("icd-9", "icd9", "2.16.840.1.113883.6.103", "2.16.840.1.113883.6.42")

# An ICD-10 code's category: a letter then two digits (an O or I typed for
# a zero or a one still counts), then anything.
_ICD10_START = re.compile(r"([A-Z])([0-9OIL]{2})([0-9A-Z]*)")
_TYPED_AS_DIGIT = str.maketrans("OIL", "011")

# Letters of other scripts drawn like Latin ones: "НІV" in Cyrillic, or a
# Cyrillic "В20", reads as HIV or B20 to the clinician, so it is compared so.
_LOOK_ALIKES = str.maketrans(
    "АВЕЅІЈКМНОРСТХУаеіјорсухѕԁһӏΑΒΕΗΙΚΜΝΟΡΤΥΧΖοντ",
    "ABESIJKMHOPCTXYaeijopcyxsdhlABEHIKMNOPTYXZovt",
)

# Words that name a category in a record's text, for records that carry no
# code the lists know (text only, values written out, or a terminology the
# portal does not read). Matched in lower case, look-alikes read as Latin.
_SUBSTANCES = (
    r"alcohol|alkohol|drug|drogen|substance|polysubstance|opioid|opiate|heroin"
    r"|cocaine|crack|cannabis|marijuana|amphetamine|methamphetamine|stimulant"
    r"|sedative|hypnotic|benzodiazepine|inhalant|hallucinogen|narcotic"
)
_SENSITIVE_WORDS: tuple[tuple[re.Pattern, Sensitivity], ...] = (
    (
        re.compile(
            r"\b(?:hiv|vih)(?![a-z])|human immunodeficiency virus"
            r"|acquired immun(?:e\W*|o)deficiency"
            # Antiretrovirals (PrEP included): what the patient takes says it.
            r"|\b(?:bictegravir|dolutegravir|raltegravir|elvitegravir"
            r"|cabotegravir|emtricitabine|tenofovir|efavirenz|rilpivirine"
            r"|nevirapine|zidovudine|abacavir|darunavir|atazanavir|lopinavir"
            r"|maraviroc|enfuvirtide|lenacapavir)"
        ),
        Sensitivity.HIV,
    ),
    (
        re.compile(
            rf"\b(?:{_SUBSTANCES})s?\W+(?:\w+\W+)?(?:use disorder|abuse|dependen"
            r"|misuse|addict|withdrawal|overdose|detox|intoxication)"
            rf"|\b(?:{_SUBSTANCES})(?:abh[aä]ngig|sucht|missbrauch)"
            r"|\balcoholism|\bdetoxification|\b(?:opioid|opiate) treatment"
            r"|\bsubstance use\b"
            # Medicines given for substance-use disorders.
            r"|\b(?:methadone|buprenorphine|naltrexone|disulfiram|acamprosate"
            r"|lofexidine)"
        ),
        Sensitivity.SUBSTANCE_USE,
    ),
    (
        re.compile(
            r"\bbrca[12]?\b|pathogenic variant|variant of uncertain significance"
            r"|\bgermline|genetic (?:test|analysis|variant|carrier|susceptibility)"
            r"|gene (?:mutation|variant)"
        ),
        Sensitivity.GENETIC,
    ),
    (
        re.compile(r"psychotherapy (?:progress |session |process )?notes?"),
        Sensitivity.PSYCHOTHERAPY,
    ),
)
# One search for any of them first: most text names none.
_ANY_SENSITIVE_WORD = re.compile(
    "|".join(f"(?:{pattern.pattern})" for pattern, _category in _SENSITIVE_WORDS)
)
# Cased: "AIDS", not "hearing aids".
_AIDS = re.compile(r"\bAIDS\b")


_GROUP_SEPARATORS = re.compile(r"[^\w.]+|_")


def _icd_categories(code: str, system) -> set[Sensitivity]:
    # Letters and digits of any script, in groups: "f11.20", "Ｆ１１",
    # "ICD10CM:F11.20" (a prefix before the code), a Cyrillic "В20".
    if not code.isascii():
        code = _with_ascii_digits(
            unicodedata.normalize("NFKC", code).translate(_LOOK_ALIKES)
        )
    groups = _GROUP_SEPARATORS.split(code.upper())
    icd9 = isinstance(system, str) and any(
        name in system.lower() for name in _ICD9_SYSTEMS
    )
    found = set()
    for group in groups:
        compact = group.replace(".", "")
        start = _ICD10_START.fullmatch(compact)
        # An O or I for a digit only beside a real digit ("F1O"): "FILM"
        # is a word, not F11.
        if start is not None and any(character.isdigit() for character in start[2]):
            compact = start[1] + start[2].translate(_TYPED_AS_DIGIT) + start[3]
            for length, table in (
                (3, ICD10_CATEGORIES),
                (4, ICD10_CODES),
                (5, ICD10_CODES),
            ):
                if compact[:length] in table:
                    found.add(table[compact[:length]])
        if icd9 and not compact.startswith(ICD9_ROUTINE_PREFIXES):
            found |= {
                category
                for prefix, category in ICD9_PREFIXES.items()
                if compact.startswith(prefix)
            }
    return found


def _with_ascii_digits(text: str) -> str:
    """Digits of any script as 0-9 (superscripts too: withholding more is
    the safe mistake); every other character as it is."""
    return "".join(
        character
        if (digit := unicodedata.digit(character, None)) is None
        else str(digit)
        for character in text
    )


def _named_in_words(text: str) -> set[Sensitivity]:
    # As the clinician would read it: without the invisible characters a
    # browser does not draw, and with look-alike letters as Latin ones.
    # Most text is plain ASCII, which has neither: it is read as it is, as
    # every string of every record of a bundle comes through here.
    if text.isascii():
        shown, folded = text, text.lower()
    else:
        shown = "".join(
            character
            for character in unicodedata.normalize("NFKC", text)
            if unicodedata.category(character) != "Cf"
        ).translate(_LOOK_ALIKES)
        folded = shown.casefold()
    found = set()
    if _ANY_SENSITIVE_WORD.search(folded):
        found = {
            category for pattern, category in _SENSITIVE_WORDS if pattern.search(folded)
        }
    if "AIDS" in shown and _AIDS.search(shown):
        found.add(Sensitivity.HIV)
    return found


def labelled_categories(resource: dict) -> set[Sensitivity]:
    """The categories the security labels of a resource (and of the
    resources it contains) name."""
    found = set()
    contained = resource.get("contained")
    for inner in contained if isinstance(contained, list) else ():
        if isinstance(inner, dict):
            found |= labelled_categories(inner)
    meta = resource.get("meta")
    labels = meta.get("security") if isinstance(meta, dict) else None
    for label in labels if isinstance(labels, list) else ():
        code = label.get("code") if isinstance(label, dict) else None
        if isinstance(code, str):
            letters = unicodedata.normalize("NFKC", code).upper()
            letters = "".join(c for c in letters if c.isascii() and c.isalpha())
            category = SENSITIVE_SECURITY_LABELS.get(letters)
            if category is not None:
                found.add(category)
    return found


def _strictest(categories: set[Sensitivity]) -> str:
    for category in _PRECEDENCE:
        if category in categories:
            return category.value
    return Sensitivity.ROUTINE.value


# Stands for a reason named by an identifier alone, which cannot be followed.
BY_IDENTIFIER_ONLY = "(named by an identifier only)"


def references_in(resource: dict) -> set[str]:
    """What ``resource`` names as its reason, basis or whole (as reference names).

    The reason fields count wherever they sit: a condition's stage names its
    assessment, an extension its ``valueReference``.
    """
    names: set[str] = set()
    # (value, under a reason field)
    stack: list[tuple[object, bool]] = [(resource, False)]
    while stack:
        item, reason = stack.pop()
        if isinstance(item, dict):
            if reason and isinstance(item.get("reference"), str):
                names.add(reference_name(item["reference"]))
            elif reason and isinstance(item.get("identifier"), dict):
                names.add(BY_IDENTIFIER_ONLY)
            stack.extend(
                (value, reason or key in REASON_REFERENCES)
                for key, value in item.items()
            )
        elif isinstance(item, list):
            stack.extend((value, reason) for value in item)
    return names


def reference_name(reference: str) -> str:
    """A reference as the importer compares it, however it was spelt.

    A version-specific reference names the record all the same, as does one
    with a trailing slash or in other case: ``URN:UUID:``, a UUID in
    capitals, ``condition/...`` for ``Condition/...``.
    """
    text = reference.strip().partition("/_history/")[0].rstrip("/")
    if text[:9].lower() == "urn:uuid:":
        return "urn:uuid:" + text[9:].lower()
    *before, kind, identifier = ["", "", *text.split("/")]
    kind = _RESOURCE_TYPES.get(kind.lower(), kind)
    return "/".join(part for part in (*before, kind, identifier) if part)


# The types a reason may name, by their name in lower case.
_RESOURCE_TYPES = {
    name.lower(): name
    for name in (
        "Patient", "Encounter", "Condition", "MedicationRequest",
        "AllergyIntolerance", "Observation", "Immunization", "Procedure",
        "DiagnosticReport", "Medication", "CarePlan", "ServiceRequest",
        "MedicationAdministration", "MedicationStatement", "Claim",
    )
}  # fmt: skip


def comparable_code(code: str) -> str:
    """A code as the lists compare it: its digits and the dashes between them.

    The lists match a code under any system, so every spelling of a listed
    code must match: digits of any script, full-width forms, leading zeros
    in either part of "055277-08", any dash, and whatever else sits in it
    (spaces, invisible characters, a SNOMED CT expression's term). The lists
    hold digits and dashes only, so nothing else can tell two codes apart;
    a record is withheld by mistake at worst, never shown.
    """
    kept = []
    for character in _with_ascii_digits(unicodedata.normalize("NFKC", code)):
        if "0" <= character <= "9":
            kept.append(character)
        elif character in _DASHES or unicodedata.category(character) == "Pd":
            kept.append("-")
    parts = [part.lstrip("0") or "0" for part in "".join(kept).split("-") if part]
    return "-".join(parts)


# Dashes that are not in Unicode's dash punctuation category.
_DASHES = frozenset("\u2212\u2796\ufe63\uff0d")


def categories_visible_to(user) -> set[str]:
    """The sensitive categories ``user`` holds a grant for (plus routine).

    Asked on every chart open, so the grants come with the user's roles, in
    the one query that loads both (``User.record_grants``), where ``has_perm``
    would load every permission the user holds in two more. The answer is the
    same: an inactive user holds nothing, a superuser everything.
    """
    visible = {Sensitivity.ROUTINE.value}
    if not user.is_active:
        return visible
    if user.is_superuser:
        return visible | set(_CATEGORY_OF_GRANT.values())

    granted = user.record_grants & _CATEGORY_OF_GRANT.keys()
    return visible | {_CATEGORY_OF_GRANT[codename] for codename in granted}


# The records app's permission codename that grants each sensitive category.
_CATEGORY_OF_GRANT = {
    category.permission.partition(".")[2]: category.value
    for category in Sensitivity
    if category != Sensitivity.ROUTINE
}
