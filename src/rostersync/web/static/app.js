// Live progress of running syncs (polls the run every 2 s and reloads when it ends), "select
// all" checkboxes, and confirmation of destructive forms. Pages work without it.
(function () {
  "use strict";
  var TERMINAL = ["succeeded", "failed", "held", "dry-run", "discarded", "skipped"];

  function reloadWithoutMessages() {
    var url = new URL(window.location.href);
    url.searchParams.delete("notice");
    url.searchParams.delete("error");
    window.location.assign(url.toString());
  }

  function poll(el) {
    var run = el.getAttribute("data-run");
    fetch("/api/v1/runs/" + run, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        if (TERMINAL.indexOf(data.status) >= 0) { reloadWithoutMessages(); return; }
        var counts = Object.keys(data.counts || {}).map(function (k) { return k + " " + data.counts[k]; });
        el.textContent = "Run " + data.id + ": " + data.status + (data.stage ? ", " + data.stage : "") +
          (counts.length ? " (" + counts.join(", ") + ")" : "") + "…";
        setTimeout(function () { poll(el); }, 2000);
      })
      .catch(function () { setTimeout(function () { poll(el); }, 2000); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-run]").forEach(function (el) { setTimeout(function () { poll(el); }, 2000); });
    document.querySelectorAll("[data-select-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        var name = box.getAttribute("data-select-all");
        box.form.querySelectorAll("input[name='" + name + "']").forEach(function (c) { c.checked = box.checked; });
      });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
  });
})();
