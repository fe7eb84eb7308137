"""SQLite files readable by the portal's own user only.

SQLite creates its database file with the process umask, usually 0644. The
folder around it is 0700, but a copied or moved file would carry its mode
along: the file is made private itself. SQLite gives its journal and WAL
files the database file's mode, so they follow.
"""

import logging
import os
import stat
from pathlib import Path

from ehr_portal.logging import error_kind

logger = logging.getLogger(__name__)


def keep_sqlite_file_private(sender, connection, **kwargs) -> None:
    """On each new connection, take group and other access off its SQLite file."""
    if connection.vendor != "sqlite":
        return
    name = str(connection.settings_dict.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:"):
        return

    path = Path(name)
    try:
        status = path.stat()
        if status.st_mode & 0o077 and status.st_uid == os.getuid():
            path.chmod(stat.S_IMODE(status.st_mode) & 0o600)
    except OSError as error:
        # A file the portal cannot chmod still opens; the folder guards it.
        logger.warning("Could not make a SQLite file private (%s)", error_kind(error))
