// Small enhancements on top of htmx. The page works without this file.
(() => {
  "use strict";
  const form = document.getElementById("composer");
  if (!form) return;
  const box = form.querySelector("textarea[name=message]");
  const errors = document.getElementById("composer-error");
  const messages = document.getElementById("messages");

  // Enter sends; Shift+Enter (or an IME composition) adds a line.
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!form.classList.contains("htmx-request")) form.requestSubmit();
    }
  });

  // Clear an old error when a new message goes out.
  form.addEventListener("htmx:before:request", () => { errors.textContent = ""; });

  // The server accepted the message and the answer is streaming: empty the box for the next one.
  // (Only now, so a message that fails to send stays in the box.)
  form.addEventListener("htmx:sse:after:connection", () => {
    box.value = "";
    box.focus();
  });

  // Follow the answer as it grows, unless the reader has scrolled up to read something.
  let follow = true;
  window.addEventListener("scroll", () => {
    follow = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }, { passive: true });
  new MutationObserver(() => {
    if (follow) window.scrollTo(0, document.body.scrollHeight);
  }).observe(messages, { childList: true, subtree: true, characterData: true });
})();
