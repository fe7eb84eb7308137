"""Error reports (the admin e-mail of a 500) that carry code, never PHI.

Django's reports quote the exception message, every frame's local variables
and the POST body: on a chart or search request those are names, birth dates
and search terms. Operators get the stack, the request path and the request
id; the data stays in the database (45 CFR 164.312(a)(2)(iv)).
"""

import re

from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

WITHHELD = "(withheld: may hold PHI)"


class PHISafeReporterFilter(SafeExceptionReporterFilter):
    cleansed_substitute = "********************"
    # PIN joins Django's list: the PKCS#11 token PIN must not be quoted.
    hidden_settings = re.compile(
        "API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|PIN", flags=re.I
    )

    def get_post_parameters(self, request):
        if request is None:
            return {}
        return dict.fromkeys(request.POST, self.cleansed_substitute)

    def get_traceback_frame_variables(self, request, tb_frame):
        return [(name, self.cleansed_substitute) for name in tb_frame.f_locals]


class PHISafeExceptionReporter(ExceptionReporter):
    def get_traceback_data(self):
        data = super().get_traceback_data()
        data["exception_value"] = WITHHELD
        data["exception_notes"] = ""
        data["request_GET_items"] = [
            (name, WITHHELD) for name, _value in data.get("request_GET_items", [])
        ]
        for frame in data.get("frames", []):
            cause = frame.get("exc_cause")
            if cause is not None:
                frame["exc_cause"] = type(cause).__name__
        return data
