from django.conf import settings

from accounts.roles import Role


def roles(request):
    user = getattr(request, "user", None)
    user_roles = user.roles if user is not None and user.is_authenticated else ()
    return {"Role": Role, "user_roles": user_roles}


def idle_timeout(request):
    # Read per request, not at import as django-session-security's own tags
    # do, so that the browser tests can shorten the timeouts.
    return {
        "idle_warn_after": settings.SESSION_SECURITY_WARN_AFTER,
        "idle_expire_after": settings.SESSION_SECURITY_EXPIRE_AFTER,
    }
