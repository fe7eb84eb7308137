// After a form comes back with an error, put the keyboard (and a screen
// reader's reading point) on the first field in error, or on the form's own
// message when no one field is at fault, instead of leaving it at the top
// of the page. Pages that focus something themselves (autofocus) keep it.
(function () {
  "use strict";

  function focusFirstError() {
    if (document.activeElement && document.activeElement !== document.body) {
      return;
    }
    var field = document.querySelector('[aria-invalid="true"]');
    var message = document.querySelector(".error-box[role=alert]");
    var target = field || message;
    if (!target) {
      return;
    }
    if (!field) {
      // A message is not focusable by itself.
      target.setAttribute("tabindex", "-1");
    }
    target.focus();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", focusFirstError);
  } else {
    focusFirstError();
  }
})();
