// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";

  // A page that shows the server's state (a code already sent) is not shown from the back-forward
  // cache: Back to it asks the server again (without JavaScript its forms still lead on).
  window.addEventListener("pageshow", function (ev) {
    if (ev.persisted && document.querySelector("[data-fresh]")) window.location.reload();
  });

  // Resend countdown, driven by the server's retry_after (data-countdown, seconds). The ticking
  // text is no live region (a screen reader would read it every second); the start is read with
  // the page, and the end is announced once in a polite live region made for it.
  document.querySelectorAll("[data-countdown]").forEach(function (el) {
    var left = parseInt(el.getAttribute("data-countdown"), 10) || 0;
    var template = el.textContent;
    var number = String(left);
    var buttons = document.querySelectorAll("[data-enable-after]");
    var announce = document.createElement("span");
    announce.className = "visually-hidden";
    announce.setAttribute("aria-live", "polite");
    el.parentNode.insertBefore(announce, el.nextSibling);
    function render() {
      if (left <= 0) {
        el.textContent = el.getAttribute("data-done") || "";
        if (el.textContent) announce.textContent = el.textContent;
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

  // WebOTP (WICG Web OTP API): the SMS ends with the line «@host #code»; where the browser supports
  // it, the code fills itself in and the form is sent. Typing or pasting works everywhere.
  var otp = document.querySelector("input[autocomplete='one-time-code']");
  if (otp && otp.form && "OTPCredential" in window && navigator.credentials) {
    var stop = new AbortController();
    otp.form.addEventListener("submit", function () { stop.abort(); });
    navigator.credentials.get({ otp: { transport: ["sms"] }, signal: stop.signal }).then(function (cred) {
      if (!cred || !cred.code) return;
      otp.value = cred.code;
      otp.form.submit();
    }).catch(function () { /* dismissed or unsupported: the field is there */ });
  }

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
    // A tap outside the dialog (on its backdrop) closes it, as «Отменить» and × do.
    dialog.addEventListener("click", function (ev) {
      if (ev.target !== dialog) return;
      var r = dialog.getBoundingClientRect();
      if (ev.clientX < r.left || ev.clientX > r.right || ev.clientY < r.top || ev.clientY > r.bottom) dialog.close();
    });
    dialog.querySelectorAll("[data-close]").forEach(function (b) {
      b.addEventListener("click", function (ev) { ev.preventDefault(); dialog.close(); });
    });
  });

  // Live chat: new messages arrive by Server-Sent Events and are inserted as text (never as HTML).
  // Without this the chat still works: the page shows new messages when reloaded.
  var list = document.querySelector("[data-live]");
  if (list && window.EventSource) {
    var url = list.getAttribute("data-live") + "?after=" + encodeURIComponent(list.getAttribute("data-after") || "0");
    var source = new EventSource(url);
    source.addEventListener("message", function (ev) {
      var m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (document.getElementById("m" + m.id)) return;
      var empty = document.getElementById("no-messages");
      if (empty) empty.hidden = true;
      var li = document.createElement("li");
      li.id = "m" + m.id;
      li.className = "msg" + (m.mine ? " mine" : "") + (m.system ? " system" : "") + (m.former ? " former" : "");
      var author = document.createElement("span");
      author.className = "author";
      // An isolate: whatever a name holds cannot reorder the text around it (as in the page).
      author.dir = "auto";
      author.textContent = m.author;
      var at = document.createElement("span");
      at.className = "at";
      at.textContent = m.at;
      var text = document.createElement("p");
      text.className = "text";
      text.dir = "auto";
      text.textContent = m.text;
      li.appendChild(author);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(at);
      li.appendChild(text);
      list.appendChild(li);
    });
    source.addEventListener("end", function () {
      source.close();
      var note = document.querySelector("[data-ended]");
      if (note) note.hidden = false;
      var composer = document.getElementById("composer");
      if (composer) composer.hidden = true;
    });
  }
})();
