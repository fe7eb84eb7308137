"""python manage.py seed_demo: demo users, patients and care teams (development)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from records.demo import seed_demo


class Command(BaseCommand):
    help = "Create demo users of every role, synthetic patients and care teams."

    def handle(self, *args, **options):
        if not settings.DEVELOPMENT:
            raise CommandError(
                "seed_demo runs only with PORTAL_MODE=development: it writes "
                "passwords and TOTP secrets to a file."
            )
        path = seed_demo()
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self.stdout.write(f"Demo credentials (keep private): {path}")
