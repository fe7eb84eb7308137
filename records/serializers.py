"""API shapes: every serializer names its fields; nothing sealed or internal leaks."""

from rest_framework import serializers

from records import mrn as mrn_rules
from records.models import ClinicalNote, NoteKind, Patient


class PatientIdentitySerializer(serializers.ModelSerializer):
    mrn = serializers.SerializerMethodField()

    class Meta:
        model = Patient
        fields = ("id", "mrn", "family_name", "given_name", "birth_date", "sex")
        read_only_fields = fields

    def get_mrn(self, patient) -> str | None:
        if patient.mrn is None:
            return None
        return mrn_rules.display(patient.mrn)


class PatientListEntrySerializer(PatientIdentitySerializer):
    """A patient in a list or search result.

    ``unreadable`` is true for a patient whose identity failed its integrity
    check: only its id is given, every other field is null.
    """

    unreadable = serializers.SerializerMethodField()

    class Meta(PatientIdentitySerializer.Meta):
        fields = (*PatientIdentitySerializer.Meta.fields, "unreadable")
        read_only_fields = fields

    def get_unreadable(self, patient) -> bool:
        return getattr(patient, "unreadable", False)


class PatientSearchSerializer(serializers.Serializer):
    mrn = serializers.CharField(required=False, allow_blank=True, max_length=12)
    family_name = serializers.CharField(
        required=False, allow_blank=True, max_length=100
    )
    given_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    birth_date = serializers.DateField(required=False, allow_null=True)

    def validate_mrn(self, value):
        if value and not mrn_rules.is_valid(value):
            raise serializers.ValidationError("not a valid MRN")
        return mrn_rules.normalise(value)

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {name: "unknown field" for name in sorted(unknown)}
            )
        if not any(attrs.values()):
            raise serializers.ValidationError("give at least one identifier")
        return attrs


def record_serializer_for(section):
    """A read-only serializer listing exactly the section's documented fields."""
    declared = {}
    if "author" in section.fields:
        declared["author"] = serializers.CharField(
            source="author.username", read_only=True
        )
    meta = type(
        "Meta",
        (),
        {
            "model": section.model,
            "fields": ("id", *section.fields),
            "read_only_fields": ("id", *section.fields),
        },
    )
    return type(
        f"{section.model.__name__}Serializer",
        (serializers.ModelSerializer,),
        {"Meta": meta, **declared},
    )


class NoteCreateSerializer(serializers.Serializer):
    """What a client may set on a note; author, patient and time are the server's."""

    kind = serializers.ChoiceField(choices=NoteKind.choices)
    title = serializers.CharField(max_length=200)
    body = serializers.CharField(max_length=20_000)

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {name: "cannot be set" for name in sorted(unknown)}
            )
        return attrs


class NoteSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", read_only=True)
    title = serializers.CharField(source="description", read_only=True)

    class Meta:
        model = ClinicalNote
        fields = ("id", "occurred_at", "kind", "title", "body", "author")
        read_only_fields = fields
