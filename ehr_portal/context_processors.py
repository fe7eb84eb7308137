from django.conf import settings


def display_time_zone(request):
    return {"display_time_zone": settings.PORTAL_TIME_ZONE}
