from functools import cached_property

from django.contrib.auth.models import AbstractUser

from accounts.roles import Role


class User(AbstractUser):
    """A portal user; what they may do comes from their role groups."""

    @cached_property
    def roles(self) -> frozenset[Role]:
        names = set(self.groups.values_list("name", flat=True))
        return frozenset(role for role in Role if role.value in names)

    def has_role(self, role: Role) -> bool:
        return role in self.roles

    @property
    def is_clinician(self) -> bool:
        return any(role.is_clinician for role in self.roles)

    @property
    def primary_role(self) -> Role | None:
        for role in Role:
            if role in self.roles:
                return role
        return None
