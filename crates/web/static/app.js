// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";

  // Resend countdown, driven by the server's retry_after (data-countdown, seconds).
  document.querySelectorAll("[data-countdown]").forEach(function (el) {
    var left = parseInt(el.getAttribute("data-countdown"), 10) || 0;
    var template = el.textContent;
    var number = String(left);
    var buttons = document.querySelectorAll("[data-enable-after]");
    function render() {
      if (left <= 0) {
        el.textContent = el.getAttribute("data-done") || "";
        buttons.forEach(function (b) { b.disabled = false; });
        return;
      }
      el.textContent = template.replace(number, String(left));
      buttons.forEach(function (b) { b.disabled = true; });
      left -= 1;
      setTimeout(render, 1000);
    }
    render();
  });

  // Confirmation dialogs: a link with data-dialog="id" opens <dialog id="id"> instead of navigating
  // to the no-JavaScript confirmation page. Focus moves into the dialog and stays there (the native
  // modal makes the page inert, and Tab / Shift+Tab wrap around inside the dialog instead of leaving
  // for the browser's toolbar), Escape closes it, and focus returns to the link.
  document.querySelectorAll("a[data-dialog]").forEach(function (opener) {
    var dialog = document.getElementById(opener.getAttribute("data-dialog"));
    if (!dialog || typeof dialog.showModal !== "function") return;
    opener.addEventListener("click", function (ev) {
      ev.preventDefault();
      dialog.showModal();
      var first = dialog.querySelector("[data-autofocus]") || dialog.querySelector("button");
      if (first) first.focus();
    });
    dialog.addEventListener("close", function () { opener.focus(); });
    dialog.addEventListener("keydown", function (ev) {
      if (ev.key !== "Tab") return;
      var items = Array.prototype.filter.call(
        dialog.querySelectorAll("a[href], button, input:not([type=hidden]), select, textarea, [tabindex]"),
        function (e) { return !e.disabled && e.tabIndex >= 0 && e.getClientRects().length > 0; });
      if (!items.length) return;
      var first = items[0], last = items[items.length - 1];
      if (ev.shiftKey && document.activeElement === first) { ev.preventDefault(); last.focus(); }
      else if (!ev.shiftKey && document.activeElement === last) { ev.preventDefault(); first.focus(); }
    });
    dialog.querySelectorAll("[data-close]").forEach(function (b) {
      b.addEventListener("click", function (ev) { ev.preventDefault(); dialog.close(); });
    });
  });
})();
