"""Sessions in the clinical database, saved with one statement per request.

Every page saves its session, because the idle sign-out clock moves on with
each request. Django wraps that save in a transaction; for an existing
session it is one UPDATE, atomic by itself, and the BEGIN and COMMIT around it
were two more database round trips on every page.
"""

import logging

from django.contrib.sessions.backends import db
from django.contrib.sessions.backends.base import UpdateError
from django.db import connections, router

logger = logging.getLogger(__name__)


class SessionStore(db.SessionStore):
    def save(self, must_create=False):
        if must_create or self.session_key is None:
            return super().save(must_create)

        stored = self.create_model_instance(self._get_session())
        using = router.db_for_write(self.model, instance=stored)
        if connections[using].in_atomic_block:
            # Django's savepoint keeps a failed save from spoiling the
            # caller's transaction.
            return super().save(must_create)

        updated = (
            self.model.objects.using(using)
            .filter(session_key=stored.session_key)
            .update(session_data=stored.session_data, expire_date=stored.expire_date)
        )
        if not updated:
            # Gone since the request began (signed out in another tab, or
            # ended by an administrator): Django answers SessionInterrupted.
            # A lost connection is not this: its error goes on as raised.
            logger.info("Session not saved: it no longer exists")
            raise UpdateError
