"""python manage.py demo_code USERNAME — the current one-time code of a demo user.

Development only: it stands in for an authenticator app during a demo.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.models import TOTPAuthenticator


class Command(BaseCommand):
    help = "Print the current TOTP code of a demo user (development mode only)."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        if not settings.DEVELOPMENT:
            raise CommandError("demo_code runs only with PORTAL_MODE=development.")
        user = get_user_model().objects.filter(username=username.casefold()).first()
        device = TOTPAuthenticator.objects.filter(user=user, confirmed=True).first()
        if device is None:
            raise CommandError(f"No confirmed authenticator for {username!r}.")
        self.stdout.write(device.current_code())
