#!/usr/bin/env python
"""Django's command-line utility for the EHR Portal."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ehr_portal.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        if sys.argv[1:2] not in ([], ["help"], ["--help"], ["-h"], ["--version"]):
            # Django runs some commands (shell among them) on settings that
            # failed to load, half-configured; nothing here should run so.
            from django.conf import settings

            settings.INSTALLED_APPS  # noqa: B018 (loads the settings module)
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        # A setting or key the portal cannot start without: what an operator
        # needs is the one line that says which, not Django's start-up stack.
        if os.environ.get("PORTAL_TRACEBACK"):
            raise
        sys.exit(
            f"manage.py: the portal cannot start: {error} "
            "(PORTAL_TRACEBACK=1 shows where)"
        )


if __name__ == "__main__":
    main()
