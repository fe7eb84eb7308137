// Starts django-session-security's idle warning with this page's settings.
// The server ends the session on its own; this only warns and then reloads.
// "Stay signed in" needs no handler of its own: any click is activity, and
// activity while the warning shows pings the server with idleFor=0.
(function () {
  var script = document.currentScript;
  var read = function (id) { return JSON.parse(document.getElementById(id).textContent); };
  window.sessionSecurity = new yourlabs.SessionSecurity({
    pingUrl: script.dataset.pingUrl,
    warnAfter: read("idle-warn-after"),
    expireAfter: read("idle-expire-after"),
    returnToUrl: script.dataset.returnTo
  });
})();
