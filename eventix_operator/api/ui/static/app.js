// eventix dashboard: live refresh by polling, and confirmations. No framework, no
// inline script (the Content-Security-Policy allows only this file).
(function () {
  "use strict";

  // Ask before a form button with data-confirm submits.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-confirm]");
    if (button && !window.confirm(button.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });

  // "Select all" of the task list.
  document.addEventListener("change", function (event) {
    if (event.target.id === "select-all") {
      var boxes = document.querySelectorAll("#task-list input[name=uid]");
      for (var i = 0; i < boxes.length; i++) boxes[i].checked = event.target.checked;
    }
  });

  var seconds = parseFloat(document.body.getAttribute("data-refresh") || "0");
  var toggle = document.getElementById("live-toggle");
  if (toggle) {
    toggle.checked = window.sessionStorage.getItem("eventix-live") !== "off";
    toggle.addEventListener("change", function () {
      window.sessionStorage.setItem("eventix-live", toggle.checked ? "on" : "off");
    });
  }
  if (!(seconds > 0)) return;

  // Not while a person is choosing or typing: a refresh would undo it.
  function busy() {
    if (toggle && !toggle.checked) return true;
    if (document.visibilityState !== "visible") return true;
    var active = document.activeElement;
    if (active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName) && active.id !== "live-toggle") return true;
    return document.querySelector("[data-selection] input[type=checkbox]:checked") !== null;
  }

  // Fetch this page again and swap in each [data-live] region that has an id.
  function refresh() {
    if (busy()) { schedule(); return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Eventix-Live": "1" } })
      .then(function (response) {
        if (response.redirected || !response.ok) throw new Error("stopped: " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var regions = document.querySelectorAll("[data-live][id]:not([data-static])");
        for (var i = 0; i < regions.length; i++) {
          var replacement = fresh.getElementById(regions[i].id);
          if (replacement) regions[i].innerHTML = replacement.innerHTML;
        }
        document.body.setAttribute("data-refreshed", String(Date.now()));
        schedule();
      })
      .catch(function () { /* signed out or server gone: stop polling */ });
  }

  function schedule() { window.setTimeout(refresh, seconds * 1000); }
  schedule();
})();
