from accounts.roles import Role


def roles(request):
    user = getattr(request, "user", None)
    user_roles = user.roles if user is not None and user.is_authenticated else ()
    return {"Role": Role, "user_roles": user_roles}
