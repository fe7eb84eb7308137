from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.views import idle_ping
from ehr_portal import views
from ehr_portal.admin_site import PortalAdminSite
from records.urls import compliance_urlpatterns

# The admin asks for a verified second factor like every other page, and
# changes passwords only through the portal's own page.
admin.site.__class__ = PortalAdminSite

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/", include("accounts.urls")),
    path("webauthn/", include("accounts.passkey_urls")),
    path("patients/", include("records.urls")),
    path("compliance/", include("audit.urls")),
    path("compliance/", include((compliance_urlpatterns, "review"))),
    path("api/v1/", include("records.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path(
        "api/docs/",
        # The split view serves its start-up script as a file, not inline,
        # so the Content-Security-Policy needs no exception for the docs.
        SpectacularSwaggerSplitView.as_view(
            url_name="api_schema", template_name="api/swagger_ui.html"
        ),
        name="api_docs",
    ),
    # django-session-security's script pings this name; the portal's own
    # view reads aware UTC times and treats the ping as passive.
    path("session_security/ping/", idle_ping, name="session_security_ping"),
    path("admin/", admin.site.urls),
]

handler400 = views.bad_request
handler403 = views.permission_denied
handler404 = views.page_not_found
handler500 = views.server_error
