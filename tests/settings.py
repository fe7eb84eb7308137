"""Test settings: development mode in a throwaway data folder.

SQLite test databases are files (not memory) so that tests can read their raw
bytes and a live server thread can share them.
"""

import os
import tempfile

os.environ.setdefault("PORTAL_MODE", "development")
os.environ.setdefault("PORTAL_DATA_DIR", tempfile.mkdtemp(prefix="ehr-test-"))

from ehr_portal.settings import *  # noqa: E402, F403

# Password hashing at production cost would dominate the suite's run time;
# the production hasher is asserted against ehr_portal.settings directly.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # noqa: S105

for _alias, _database in DATABASES.items():  # noqa: F405
    if _database["ENGINE"].endswith("sqlite3"):
        _database["TEST"] = {
            "NAME": str(PORTAL_DATA_DIR / f"test-{_alias}.sqlite3")  # noqa: F405
        }

# Rotation tests replace the keyring file and expect the next seal to see it.
PORTAL_KEYRING_REFRESH_SECONDS = 0

# With tasks in-process the portal writes audit checkpoints itself; a test's
# checkpoint would outlive its trail, which the next test starts afresh. The
# tests that check in-process checkpoints shorten this themselves.
AUDIT_CHECKPOINT_SECONDS = 10**9
