"""API permissions: the same two factors the web pages ask for."""

from rest_framework.permissions import BasePermission


class IsVerified(BasePermission):
    """Signed in with a password and a verified one-time code, and active."""

    message = "Sign in with your password and one-time code first."

    def has_permission(self, request, view):
        user = request.user
        return bool(
            user
            and user.is_authenticated
            and user.is_active
            and getattr(user, "is_verified", lambda: False)()
        )
