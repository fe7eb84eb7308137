"""The portal's URLs plus one page guarded by step_up_required, for its tests."""

from django.http import HttpResponse
from django.urls import path

from accounts.decorators import step_up_required
from ehr_portal.urls import urlpatterns as portal_urlpatterns


@step_up_required
def guarded_export(request):
    return HttpResponse("export prepared")


urlpatterns = [
    path("guarded-export/", guarded_export),
    *portal_urlpatterns,
]
