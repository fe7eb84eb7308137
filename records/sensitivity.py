"""Which clinical codes fall in a sensitive category.

The sets are deliberately short and explicit: each code is one a reviewer can
look up. A record matching none is routine. Psychotherapy is a kind of note,
not a code, so it is set where the note is written.
"""

from django.contrib.auth.models import Permission
from django.db.models import Q

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
    # HIV diagnoses and results.
    "86406008": Sensitivity.HIV,  # Human immunodeficiency virus infection
    "165816005": Sensitivity.HIV,  # HIV positive
    "55277-8": Sensitivity.HIV,  # HIV status
    "75622-1": Sensitivity.HIV,  # HIV 1 and 2 Ab and HIV1 p24 Ag panel
    "7917-8": Sensitivity.HIV,  # HIV 1 Ab
    # Genetic test results.
    "21636-6": Sensitivity.GENETIC,  # BRCA1 gene mutations tested for
    "21637-4": Sensitivity.GENETIC,  # BRCA2 gene mutations tested for
    "51969-4": Sensitivity.GENETIC,  # Genetic analysis report
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

    Not only its main code: an encounter's reason, a result's value or a
    component can say "opioid abuse" as plainly as a diagnosis does.
    """
    found = {
        SENSITIVE_CODES[code] for code in _codes_in(resource) if code in SENSITIVE_CODES
    }
    for category in _PRECEDENCE:
        if category in found:
            return category.value
    return Sensitivity.ROUTINE.value


def _codes_in(node) -> set[str]:
    codes: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for coding in item.get("coding") or ():
                if isinstance(coding, dict) and coding.get("code"):
                    codes.add(str(coding["code"]))
            stack.extend(value for key, value in item.items() if key != "coding")
        elif isinstance(item, list):
            stack.extend(item)
    return codes


def categories_visible_to(user) -> set[str]:
    """The sensitive categories ``user`` holds a grant for (plus routine).

    Asked on every chart open, so the grants come from one query over the
    user's own and their groups' permissions, where ``has_perm`` would load
    every permission the user holds in two. The answer is the same: an
    inactive user holds nothing, a superuser everything.
    """
    visible = {Sensitivity.ROUTINE.value}
    sensitive = {
        category.permission.partition(".")[2]: category.value
        for category in Sensitivity
        if category != Sensitivity.ROUTINE
    }
    if not user.is_active:
        return visible
    if user.is_superuser:
        return visible | set(sensitive.values())

    granted = (
        Permission.objects.filter(
            content_type__app_label="records", codename__in=sensitive
        )
        .filter(Q(user=user) | Q(group__user=user))
        .values_list("codename", flat=True)
        .distinct()
    )
    return visible | {sensitive[codename] for codename in granted}
