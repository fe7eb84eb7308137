"""Gunicorn settings for the portal, read by gunicorn from the working directory.

    gunicorn ehr_portal.wsgi:application --bind 127.0.0.1:8000 --workers 3

Only what the portal itself needs is set here; addresses, worker counts and
TLS belong to the deployment and stay on the command line.
"""

import gc
import os

# Gunicorn 25.1 and later open a control socket (worker counts, reloads) at
# one path per user account: a second gunicorn on the machine takes it over
# and removes it on exit. The portal is managed by its process supervisor,
# so it opens none.
control_socket_disable = True


def post_worker_init(worker):
    # A worker holds tens of thousands of long-lived objects once Django and
    # the portal are loaded (models, URL patterns, compiled templates). Moving
    # them out of the collector's reach keeps each full collection from walking
    # them again during chart opens; they live as long as the worker anyway.
    gc.collect()
    gc.freeze()


def when_ready(server):
    # The search and API rate limits are counted in the cache; without a
    # shared one each worker counts alone and allows the whole limit.
    if server.cfg.workers > 1 and not os.environ.get("PORTAL_CACHE_URL"):
        server.log.warning(
            "PORTAL_CACHE_URL is not set: each of the %d workers counts the "
            "search and API rate limits on its own, allowing %d times each limit",
            server.cfg.workers,
            server.cfg.workers,
        )
