"""Gunicorn settings for the portal, read by gunicorn from the working directory.

    gunicorn ehr_portal.wsgi:application --bind 127.0.0.1:8000 --workers 3

Only what the portal itself needs is set here; addresses, worker counts and
TLS belong to the deployment and stay on the command line.
"""

import gc


def post_worker_init(worker):
    # A worker holds tens of thousands of long-lived objects once Django and
    # the portal are loaded (models, URL patterns, compiled templates). Moving
    # them out of the collector's reach keeps each full collection from walking
    # them again during chart opens; they live as long as the worker anyway.
    gc.collect()
    gc.freeze()
