// Starts django-session-security's idle warning with this page's settings.
// The server ends the session on its own; this only warns and then reloads.
// "Stay signed in" needs no handler of its own: any click is activity, and
// activity while the warning shows pings the server with idleFor=0.
//
// A note being written would be lost by the sign-out, so when the warning
// shows the page asks the server to keep it (form[data-draft-url]); the
// author finds it in the notes form when they open the chart again. That
// request is passive: it does not count as activity.
(function () {
  var script = document.currentScript;
  var read = function (id) { return JSON.parse(document.getElementById(id).textContent); };
  var security = new yourlabs.SessionSecurity({
    pingUrl: script.dataset.pingUrl,
    warnAfter: read("idle-warn-after"),
    expireAfter: read("idle-expire-after"),
    returnToUrl: script.dataset.returnTo
  });
  window.sessionSecurity = security;

  var sent = {};
  var warnNotKept = function () {
    // Nothing was kept (the server refused, or could not record it): say so
    // while the text can still be copied.
    var modal = document.querySelector(
      "#session_security_warning .session_security_modal"
    );
    if (modal && !modal.querySelector(".note-not-kept")) {
      var line = document.createElement("p");
      line.className = "error-box note-not-kept";
      line.setAttribute("role", "alert");
      line.textContent = "Your unsent note could not be kept: copy it now, " +
        "or stay signed in and save it.";
      modal.appendChild(line);
    }
  };
  var keepUnsentNotes = function () {
    document.querySelectorAll("form[data-draft-url]").forEach(function (form) {
      var data = new FormData(form);
      var typed = [data.get("kind"), data.get("title"), data.get("body")].join("\u0000");
      var hasText = (data.get("title") || "").trim() || (data.get("body") || "").trim();
      var url = form.dataset.draftUrl;
      // An emptied form is sent too when a note was kept before, so that
      // the old one does not come back.
      var wasKept = sent[url] !== undefined || form.hasAttribute("data-kept-draft");
      if ((!hasText && !wasKept) || sent[url] === typed) {
        return;
      }
      sent[url] = typed;
      fetch(url, {method: "POST", body: data, credentials: "same-origin", keepalive: true})
        .then(function (response) { if (hasText && !response.ok) { warnNotKept(); } })
        .catch(function () { if (hasText) { warnNotKept(); } });
    });
  };
  var showWarning = security.showWarning;
  security.showWarning = function () {
    keepUnsentNotes();
    return showWarning.apply(this, arguments);
  };
})();
