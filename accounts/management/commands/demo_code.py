"""python manage.py demo_code USERNAME — the current one-time code of a demo user.

Development only: it stands in for an authenticator app during a demo.
"""

from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from accounts.models import TOTPAuthenticator

NO_DEMO = (
    "No demo in {folder}: run scripts/demo.sh first, or set PORTAL_DATA_DIR to "
    "the folder it used (it prints this command with that folder)."
)


class Command(BaseCommand):
    help = "Print the current TOTP code of a demo user (development mode only)."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        if not settings.DEVELOPMENT:
            raise CommandError("demo_code runs only with PORTAL_MODE=development.")
        no_demo = NO_DEMO.format(folder=settings.PORTAL_DATA_DIR)
        database = settings.DATABASES["default"]
        if (
            database["ENGINE"].endswith("sqlite3")
            and not Path(database["NAME"]).exists()
        ):
            # Connecting would leave an empty database file behind.
            raise CommandError(no_demo)

        try:
            user = get_user_model().objects.filter(username=username.casefold()).first()
            device = TOTPAuthenticator.objects.filter(user=user, confirmed=True).first()
        except DatabaseError:
            raise CommandError(no_demo) from None
        if device is None:
            raise CommandError(f"No confirmed authenticator for {username!r}.")
        self.stdout.write(device.current_code())
