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

  var kept = {};
  var keepUnsentNotes = function () {
    document.querySelectorAll("form[data-draft-url]").forEach(function (form) {
      var data = new FormData(form);
      var typed = [data.get("kind"), data.get("title"), data.get("body")].join("\u0000");
      var hasText = (data.get("title") || "").trim() || (data.get("body") || "").trim();
      if (!hasText || kept[form.dataset.draftUrl] === typed) {
        return;
      }
      kept[form.dataset.draftUrl] = typed;
      fetch(form.dataset.draftUrl, {
        method: "POST", body: data, credentials: "same-origin", keepalive: true
      });
    });
  };
  var showWarning = security.showWarning;
  security.showWarning = function () {
    keepUnsentNotes();
    return showWarning.apply(this, arguments);
  };
})();
