from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin

from accounts.models import User
from accounts.services import reset_second_factor, unlock_account


@admin.action(description="Reset authenticator (user enrols again at next sign-in)")
def reset_authenticator(modeladmin, request, queryset):
    for user in queryset:
        reset_second_factor(actor=request.user, user=user)
    messages.success(request, f"Authenticator reset for {queryset.count()} user(s).")


@admin.action(description="Unlock account (lift a sign-in lockout)")
def unlock(modeladmin, request, queryset):
    for user in queryset:
        unlock_account(actor=request.user, username=user.get_username())
    messages.success(request, f"Unlocked {queryset.count()} account(s).")


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    actions = [reset_authenticator, unlock]
