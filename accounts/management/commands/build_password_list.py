"""python manage.py build_password_list — regenerate the common-password list."""

from django.core.management.base import BaseCommand

from accounts.common_passwords import LIST_PATH, write_list


class Command(BaseCommand):
    help = "Derive the 12+ character common-password list from Django's list."

    def handle(self, *args, **options):
        count = write_list()
        self.stdout.write(f"Wrote {count} passwords to {LIST_PATH}")
