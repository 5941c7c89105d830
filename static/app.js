// Small enhancements on top of htmx. The page works without this file; what only makes sense with
// JavaScript (stop, copy, shortcuts) is marked .js-only or made here.
(() => {
  "use strict";
  const root = document.documentElement;
  root.classList.add("js");

  // The theme applies at once; the form is posted in the background (for its cookie), as a
  // reload would end a streaming answer. Without this file, its Set button reloads.
  const theme = document.querySelector("form.theme-form");
  if (theme) {
    const set = theme.querySelector("button[type=submit]") || {};
    set.hidden = true;
    theme.elements.theme.addEventListener("change", ({ target }) => {
      if (target.value === "system") delete root.dataset.theme;
      else root.dataset.theme = target.value;
      fetch(theme.action, { method: "POST", body: new URLSearchParams(new FormData(theme)), redirect: "manual" })
        .then((r) => { if (r.type !== "opaqueredirect" && !r.ok) throw r; })
        .catch(() => { set.hidden = false; }); // not kept: the button can try again
    });
  }

  const form = document.getElementById("composer");
  if (!form) return;
  const box = form.elements.message;
  const errors = document.getElementById("composer-error");
  const messages = document.getElementById("messages");
  const stop = form.querySelector(".stop");
  const newChat = document.querySelector("a.new-chat");
  const here = new URL(form.action).pathname.replace(/\/messages$/, ""); // the conversation's page
  const mac = /Mac|iP/.test(navigator.platform);
  let streaming = null; // the form whose answer is streaming

  // Enter sends and Shift+Enter adds a line, in the composer and in Edit; but on a touch screen
  // Enter adds a line and Send is the button. Without this file Enter always adds a line, so the
  // page's own placeholder does not mention it.
  const touch = matchMedia("(pointer: coarse)");
  const placeholder = box.placeholder;
  const sayHowToSend = () => {
    box.placeholder = touch.matches ? placeholder
      : `${placeholder.replace(/\.?$/, ".")} Enter sends, Shift+Enter adds a line.`;
  };
  sayHowToSend();
  touch.addEventListener("change", sayHowToSend);

  // Shortcuts: Esc stops; Ctrl+Shift+O (⌘⇧O on a Mac) starts a new chat, as in ChatGPT.
  stop.setAttribute("aria-keyshortcuts", "Escape");
  stop.title = "Stop (Esc)";
  const newChatKeys = mac ? "Meta+Shift+O" : "Control+Shift+O";
  if (newChat) {
    newChat.setAttribute("aria-keyshortcuts", newChatKeys);
    newChat.title = `New chat (${mac ? "⌘⇧O" : "Ctrl+Shift+O"})`;
  }
  document.addEventListener("keydown", (event) => {
    if (event.isComposing || event.keyCode === 229) return; // an IME is still composing
    if (event.key === "Enter" && !event.shiftKey && !touch.matches && event.target.matches("textarea[name=message]")) {
      event.preventDefault();
      if (!streaming) event.target.form.requestSubmit();
    } else if (event.key === "Escape" && streaming) {
      event.preventDefault();
      stop.click();
    } else if (newChat && event.code === "KeyO" && event.shiftKey && (mac ? event.metaKey : event.ctrlKey)) {
      event.preventDefault();
      location.assign(newChat.href);
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
    addCodeCopyButtons();
  });

  // The server took the message and the answer is streaming: empty the box for the next one
  // (only now, so a message that fails to send stays in the box) and keep the focus there.
  form.addEventListener("htmx:sse:after:connection", () => {
    box.value = "";
    count();
    box.focus();
  });

  // Stop: end the request. The server sees the connection close, closes its request to the model
  // and saves the answer so far as stopped; then the saved answer replaces the live one.
  stop.addEventListener("click", () => {
    if (!streaming) return;
    const live = messages.querySelector("article[data-role=assistant][aria-busy=true]");
    htmx.trigger(streaming, "htmx:abort");
    if (live) {
      // The server answers once the answer is saved (it waits a moment for that).
      htmx.ajax("GET", `${here}/messages/${live.id.slice(4)}`, { target: live, swap: "outerHTML" });
    }
    box.focus();
  });

  // Copy: an answer's button copies the Markdown the model wrote, fetched when asked for (not
  // kept in every page twice); a code block's button copies its code.
  const markdown = new Map(); // message id → a promise of its text (a finished answer never changes)
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.copy");
    if (!button) return;
    const id = button.closest("article").id.slice(4);
    let text;
    if (button.classList.contains("code-copy")) {
      const code = button.closest("pre").cloneNode(true);
      code.querySelector(".code-copy").remove();
      text = Promise.resolve(code.textContent.replace(/\n$/, ""));
    } else {
      text = markdown.get(id) || fetch(`${here}/messages/${id}.md`).then((r) => {
        if (!r.ok) throw r;
        return r.text();
      });
      markdown.set(id, text);
      text.catch(() => markdown.delete(id)); // tried again next time
    }
    // Safari lets a click write to the clipboard only while it is handled: the write starts now,
    // with the text still on its way.
    const copied = !navigator.clipboard ? Promise.reject()
      : window.ClipboardItem ? navigator.clipboard.write([new ClipboardItem({
        "text/plain": text.then((t) => new Blob([t], { type: "text/plain" })) })])
      : text.then((t) => navigator.clipboard.writeText(t));
    copied.then(() => say("Copied"), () => say("Copy failed")); // "Copied" only if it was
    function say(words) {
      clearTimeout(button.timer);
      button.textContent = words;
      button.timer = setTimeout(() => { button.textContent = "Copy"; }, 1500);
    }
  });

  function addCodeCopyButtons() {
    for (const pre of messages.querySelectorAll(".markdown pre:not(.has-copy)")) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy code-copy";
      button.textContent = "Copy";
      pre.classList.add("has-copy");
      pre.prepend(button);
    }
  }
  addCodeCopyButtons();
  document.addEventListener("htmx:after:swap", addCodeCopyButtons);

  // A new chat gets its title when its first answer starts (the stream lists it): the tab and
  // the title bar (which CSS shows from then on) take it.
  const list = document.getElementById("conversation-list");
  const draftTitle = document.querySelector(".draft-bar .title");
  if (list && draftTitle) {
    const listed = new MutationObserver(() => {
      const entry = [...list.querySelectorAll("a")].find((a) => a.getAttribute("href") === here);
      if (!entry) return;
      listed.disconnect();
      document.title = `${entry.textContent} · chatapp`;
      for (const title of [draftTitle, document.querySelector("main h1")]) title?.replaceChildren(entry.textContent);
    });
    listed.observe(list, { childList: true, subtree: true });
  }

  // Follow the answer as it grows, unless the reader has scrolled up to read something; then a
  // button leads back down to the newest text.
  let follow = true;
  let frame = 0;
  const newest = document.createElement("button");
  newest.type = "button";
  newest.className = "scroll-newest";
  newest.textContent = "Jump to newest ↓";
  newest.hidden = true;
  form.prepend(newest);
  newest.addEventListener("click", () => {
    follow = true;
    window.scrollTo(0, document.body.scrollHeight);
    box.focus({ preventScroll: true }); // the button goes: the focus stays in reach
  });
  const showNewest = () => { // once a frame at most, however fast the text comes
    frame = frame || requestAnimationFrame(() => {
      frame = 0;
      const last = messages.lastElementChild;
      newest.hidden = !last || last.getBoundingClientRect().bottom <= form.getBoundingClientRect().top + 40;
    });
  };
  showNewest();
  window.addEventListener("scroll", () => {
    follow = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
    showNewest();
  }, { passive: true });
  new MutationObserver(() => {
    if (follow && streaming) window.scrollTo(0, document.body.scrollHeight);
    showNewest();
  }).observe(messages, { childList: true, subtree: true, characterData: true });

  // Near the length limit, a live count; past it, by how much. The server refuses such a message
  // (keeping it in the box) and counts as here: characters of the trimmed text, not UTF-16 units.
  const limit = Number(box.dataset.maxChars);
  const counter = document.createElement("p");
  counter.id = "char-count";
  counter.className = "char-count";
  box.after(counter);
  box.setAttribute("aria-describedby", `${box.getAttribute("aria-describedby") || ""} char-count`.trim());
  const number = (n) => n.toLocaleString("en");
  function count() {
    // A UTF-16 length is never below the count of characters: most text is done at once.
    const used = box.value.length < limit * 0.8 ? 0 : [...box.value.trim()].length;
    counter.hidden = !limit || used < limit * 0.8;
    counter.classList.toggle("over", used > limit);
    // Empty while hidden: the box's description would still read it.
    counter.textContent = counter.hidden ? "" : `${number(used)} / ${number(limit)} characters`
      + (used > limit ? `: ${number(used - limit)} too many` : "");
  }
  box.addEventListener("input", count);
  count();
})();
