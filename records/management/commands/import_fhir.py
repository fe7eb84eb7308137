"""python manage.py import_fhir PATH... — load FHIR R4 Bundles, one transaction each."""

from django.core.management.base import BaseCommand, CommandError

from records.fhir_import import (
    BundleRejected,
    ImportSummary,
    bundle_files,
    import_bundle_file,
)


class Command(BaseCommand):
    help = (
        "Import FHIR R4 Bundle files, or folders of them (Synthea's output). "
        "Idempotent; a malformed bundle changes nothing and is named."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="bundle files or folders")

    def handle(self, *args, paths, **options):
        # An empty argument (an unset shell variable) would be read as the
        # current folder, and every JSON file under it imported.
        if any(not path.strip() for path in paths):
            raise CommandError(
                "An empty path was given: name a bundle file or a folder."
            )
        files = bundle_files(paths)
        if not files:
            raise CommandError("No bundle files found in the paths given.")

        total = ImportSummary()
        rejected = []
        for path in files:
            try:
                total.add(import_bundle_file(path))
            except BundleRejected as error:
                rejected.append(error)
                self.stderr.write(self.style.ERROR(f"Rejected {error}"))

        self._print_summary(total)
        if rejected:
            raise CommandError(
                f"{len(rejected)} of {len(files)} bundle(s) rejected; "
                "nothing from them was stored."
            )

    def _print_summary(self, summary: ImportSummary) -> None:
        self.stdout.write(
            f"Imported {summary.bundles} bundle(s): patients {summary.patients_created}"
            f" new, {summary.patients_existing} already present."
        )
        for resource_type in sorted(set(summary.created) | set(summary.unchanged)):
            reclassified = summary.reclassified[resource_type]
            self.stdout.write(
                f"  {resource_type:<20} {summary.created[resource_type]:>6} new"
                f"  {summary.unchanged[resource_type]:>6} already present"
                + (
                    f" ({reclassified} now withheld as sensitive)"
                    if reclassified
                    else ""
                )
            )
        if summary.patients_existing or sum(summary.unchanged.values()):
            # An edited copy of a bundle is not a correction: what is stored
            # stays as it was (a record can only move into a sensitive
            # category), so the operator is told rather than left to assume.
            self.stdout.write(
                "  Patients and records already present keep what was stored: "
                "a bundle imported again adds only what is new."
            )
        if summary.skipped:
            skipped = ", ".join(
                f"{name} {count}" for name, count in sorted(summary.skipped.items())
            )
            self.stdout.write(f"  Skipped (not imported): {skipped}")
