// Small enhancements on top of htmx. The page works without this file; what only makes sense with
// JavaScript (stop, copy) is marked .js-only and shown once this file runs.
(() => {
  "use strict";
  document.documentElement.classList.add("js");
  const form = document.getElementById("composer");
  if (!form) return;
  const box = form.querySelector("textarea[name=message]");
  const errors = document.getElementById("composer-error");
  const messages = document.getElementById("messages");
  let streaming = null; // the form whose answer is streaming

  // Enter sends; Shift+Enter (or an IME composition) adds a line.
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!streaming) form.requestSubmit();
    }
  });

  document.addEventListener("htmx:before:request", (event) => {
    if (event.target.tagName !== "FORM" || !event.target.hasAttribute("hx-sse:close")) return;
    if (streaming) {  // one answer at a time: a second send, regenerate or edit waits for Stop
      event.preventDefault();
      return;
    }
    streaming = event.target;
    document.body.classList.add("streaming");
    errors.textContent = "";
  });
  document.addEventListener("htmx:finally:request", (event) => {
    if (event.target !== streaming) return;
    streaming = null;
    document.body.classList.remove("streaming");
    addCodeCopyButtons(messages);
  });

  // The server took the message and the answer is streaming: empty the box for the next one
  // (only now, so a message that fails to send stays in the box) and keep the focus there.
  form.addEventListener("htmx:sse:after:connection", () => {
    box.value = "";
    box.focus();
  });

  // Stop: end the request. The server sees the connection close, closes its request to the model
  // and saves the answer so far as stopped; then the saved answer replaces the live one.
  document.querySelector("#composer .stop").addEventListener("click", () => {
    if (!streaming) return;
    const live = messages.querySelector("article[data-role=assistant][aria-busy=true]");
    htmx.trigger(streaming, "htmx:abort");
    if (live) {
      // The server answers once the answer is saved (it waits a moment for that).
      const url = `${form.action.replace(/\/messages$/, "")}/messages/${live.id.replace("msg-", "")}`;
      htmx.ajax("GET", url, { target: live, swap: "outerHTML" });
    }
    box.focus();
  });

  // Copy an answer, or one code block, as text.
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.copy");
    if (!button) return;
    const source = button.closest("pre") || button.closest("article").querySelector(".content");
    const copy = (source.querySelector("code") || source).cloneNode(true);
    copy.querySelectorAll(".code-copy").forEach((extra) => extra.remove());
    const text = copy.innerText || copy.textContent;
    navigator.clipboard.writeText(text).then(() => {
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    });
  });

  function addCodeCopyButtons(root) {
    for (const pre of root.querySelectorAll(".markdown pre:not(.has-copy)")) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy code-copy";
      button.textContent = "Copy";
      pre.classList.add("has-copy");
      pre.prepend(button);
    }
  }
  addCodeCopyButtons(messages);
  document.addEventListener("htmx:after:swap", () => addCodeCopyButtons(messages));

  // Follow the answer as it grows, unless the reader has scrolled up to read something.
  let follow = true;
  window.addEventListener("scroll", () => {
    follow = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }, { passive: true });
  new MutationObserver(() => {
    if (follow && streaming) window.scrollTo(0, document.body.scrollHeight);
  }).observe(messages, { childList: true, subtree: true, characterData: true });
})();
