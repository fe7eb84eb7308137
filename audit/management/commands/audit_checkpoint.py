"""python manage.py audit_checkpoint [--at N]: write a signed checkpoint now."""

from django.core.management.base import BaseCommand, CommandError

from audit.checkpoints import write_checkpoint


class Command(BaseCommand):
    help = (
        "Write a signed checkpoint of the audit chain head, or of event N (an "
        "archive boundary), to PORTAL_AUDIT_CHECKPOINT_DIR."
    )

    def add_arguments(self, parser):
        parser.add_argument("--at", type=int, help="event sequence to checkpoint")

    def handle(self, *args, at, **options):
        try:
            path = write_checkpoint(at=at)
        except LookupError as error:
            raise CommandError(str(error)) from None
        if path is None:
            self.stdout.write("Nothing new to checkpoint.")
        else:
            self.stdout.write(f"Checkpoint written: {path}")
