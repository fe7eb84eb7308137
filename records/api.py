"""The /api/v1/ endpoints: the same services and access decision as the pages."""

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.exceptions import PermissionDenied, Throttled
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from accounts.decorators import refuse
from ehr_portal.throttling import CounterUnavailable
from records import services
from records.serializers import (
    NoteCreateSerializer,
    NoteSerializer,
    PatientIdentitySerializer,
    PatientListEntrySerializer,
    PatientSearchSerializer,
    record_serializer_for,
)


class ChartPagination(PageNumberPagination):
    page_size = 25


# The refusals every chart door may answer with, each a detail and a request id.
REFUSAL = inline_serializer(
    "Refusal",
    {"detail": serializers.CharField(), "request_id": serializers.CharField()},
)
REFUSALS = {
    403: OpenApiResponse(REFUSAL, "not allowed: the access decision's reason"),
    404: OpenApiResponse(REFUSAL, "no such patient, section or page"),
    429: OpenApiResponse(REFUSAL, "too many requests this minute"),
    503: OpenApiResponse(REFUSAL, "the audit trail or the rate counter is down"),
}
PAGE = OpenApiParameter(
    "page", OpenApiTypes.INT, OpenApiParameter.QUERY,
    description="page of 25 records, from 1 (newest first)",
)  # fmt: skip


def _clinicians_only(request, record_type: str):
    if not request.user.is_clinician:
        refuse(request, record_type=record_type, reason="requires a clinical role")


@extend_schema(responses=PatientListEntrySerializer(many=True))
@api_view(["GET"])
def patient_list(request):
    _clinicians_only(request, "PatientList")
    patients = services.list_my_patients(request.user)
    return Response(PatientListEntrySerializer(patients, many=True).data)


@extend_schema(
    request=PatientSearchSerializer, responses=PatientListEntrySerializer(many=True)
)
@api_view(["POST"])
def patient_search(request):
    _clinicians_only(request, "PatientSearch")
    form = PatientSearchSerializer(data=request.data)
    form.is_valid(raise_exception=True)

    birth_date = form.validated_data.get("birth_date")
    query = services.PatientQuery(
        mrn=form.validated_data.get("mrn", ""),
        family_name=form.validated_data.get("family_name", "").strip(),
        given_name=form.validated_data.get("given_name", "").strip(),
        birth_date=birth_date.isoformat() if birth_date else "",
    )
    try:
        patients = services.search_patients(request.user, query)
    except services.SearchRateExceeded as refusal:
        raise Throttled(
            wait=services.SEARCH_WINDOW_SECONDS, detail=str(refusal)
        ) from refusal
    except services.SearchUnavailable as refusal:
        raise CounterUnavailable(detail=str(refusal)) from refusal
    return Response(PatientListEntrySerializer(patients, many=True).data)


@extend_schema(
    responses={200: PatientIdentitySerializer, **REFUSALS},
    operation_id="patient_detail",
)
@api_view(["GET"])
def patient_detail(request, patient_id):
    chart = services.open_chart(
        request.user,
        patient_id,
        record_type="PatientIdentity",
        fields=services.IDENTITY_FIELDS,
    )
    return Response(PatientIdentitySerializer(chart.patient).data)


SECTION_PAGE = inline_serializer(
    "ChartSectionPage",
    {
        "count": serializers.IntegerField(),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "withheld": serializers.IntegerField(),
        "results": serializers.ListField(child=serializers.DictField()),
    },
)


@extend_schema(
    operation_id="chart_section",
    responses={200: SECTION_PAGE, **REFUSALS},
    parameters=[
        PAGE,
        OpenApiParameter(
            "section",
            str,
            OpenApiParameter.PATH,
            enum=[slug for slug in services.CHART_SECTIONS if slug != "notes"],
            description="the notes have an address of their own",
        ),
    ],
)
@api_view(["GET"])
def chart_section(request, patient_id, section):
    return _section_page(request, patient_id, section)


def _section_page(request, patient_id, section: str):
    chart_section = services.CHART_SECTIONS.get(section)
    if chart_section is None:
        raise Http404("No such chart section")

    chart = services.decide_chart(
        request.user, patient_id, record_type=chart_section.record_type
    )
    # A page past the end (or one that is not a number) raises 404 here,
    # before the open is recorded: it shows nothing of the chart.
    paginator = ChartPagination()
    page = paginator.paginate_queryset(chart_section.records_for(chart), request)
    services.record_chart_open(
        request.user,
        chart,
        record_type=chart_section.record_type,
        fields=chart_section.fields,
    )
    # A note reads back as it was written (its title, not the model's
    # "description"): the list and the reply to a POST agree.
    serializer_class = (
        NoteSerializer if section == "notes" else record_serializer_for(chart_section)
    )
    serializer = serializer_class(page, many=True)
    response = paginator.get_paginated_response(serializer.data)
    response.data["withheld"] = chart_section.withheld_count(chart)
    return response


@extend_schema(
    methods=["POST"],
    request=NoteCreateSerializer,
    responses={201: NoteSerializer, **REFUSALS},
)
@extend_schema(
    methods=["GET"],
    responses={200: SECTION_PAGE, **REFUSALS},
    parameters=[PAGE],
    operation_id="notes_list",
)
@api_view(["GET", "POST"])
def note_create(request, patient_id):
    # The notes section shares its address with adding a note, so the
    # section's page is read here, as every other section's is.
    if request.method == "GET":
        return _section_page(request, patient_id, "notes")

    services.refuse_unwritable_chart(
        request.user, patient_id, record_type="ClinicalNote"
    )
    form = NoteCreateSerializer(data=request.data)
    form.is_valid(raise_exception=True)

    try:
        note = services.add_note(
            author=request.user, patient_id=patient_id, **form.validated_data
        )
    except services.NoteRefused as refusal:
        raise PermissionDenied(str(refusal)) from refusal
    return Response(NoteSerializer(note).data, status=status.HTTP_201_CREATED)
