// Small enhancements on top of htmx. The page works without this file; what only makes sense with
// JavaScript (stop, copy) is marked .js-only or made here.
(() => {
  "use strict";
  const root = document.documentElement;
  root.classList.add("js");
  const $ = (selector) => document.querySelector(selector);

  // The theme applies at once; its form goes in the background (for the cookie), since a reload
  // (Set, without JS) would end a streaming answer.
  const theme = $("form.theme-form");
  if (theme) {
    const set = theme.querySelector("[type=submit]") || {};
    set.hidden = true;
    theme.addEventListener("change", ({ target }) => {
      if (target.value === "system") delete root.dataset.theme;
      else root.dataset.theme = target.value;
      fetch(theme.action, { method: "POST", body: new URLSearchParams(new FormData(theme)), redirect: "manual" })
        .then((r) => { if (!r.ok && r.type !== "opaqueredirect") throw r; })
        .catch(() => { set.hidden = false; }); // not kept: Set can try again
    });
  }

  const form = $("#composer");
  if (!form) return;
  const box = form.elements.message;
  const messages = $("#messages");
  const stop = form.querySelector(".stop");
  const newChat = $("a.new-chat");
  const here = new URL(form.action).pathname.replace(/\/messages$/, ""); // the conversation's page
  let streaming = null; // the form whose answer is streaming

  // Enter sends, Shift+Enter adds a line (composer and Edit alike), but on a touch screen Enter
  // adds a line and Send is the button. Without JS Enter adds a line: the page's placeholder says so.
  const touch = matchMedia("(pointer: coarse)");
  const placeholder = box.placeholder;
  const sayHowToSend = () => {
    box.placeholder = touch.matches ? placeholder : `${placeholder}. Enter sends, Shift+Enter adds a line.`;
  };
  sayHowToSend();
  touch.addEventListener("change", sayHowToSend);

  // Shortcuts: Esc stops; Ctrl+Shift+O (or ⌘⇧O) starts a new chat, as in ChatGPT.
  stop.setAttribute("aria-keyshortcuts", "Escape");
  stop.title = "Stop (Esc)";
  newChat?.setAttribute("aria-keyshortcuts", "Control+Shift+O Meta+Shift+O");
  if (newChat) newChat.title = "New chat (Ctrl+Shift+O)";
  document.addEventListener("keydown", (event) => {
    const { key, target } = event;
    if (event.isComposing || event.keyCode === 229) return; // an IME's Enter
    if (key === "Enter" && !event.shiftKey && !touch.matches && target.matches("textarea[name=message]")) {
      event.preventDefault();
      if (!streaming) target.form.requestSubmit();
    } else if (key === "Escape" && streaming) {
      event.preventDefault();
      stop.click();
    } else if (newChat && event.code === "KeyO" && event.shiftKey && (event.ctrlKey || event.metaKey)) {
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
    $("#composer-error").textContent = "";
  });
  document.addEventListener("htmx:finally:request", (event) => {
    if (event.target !== streaming) return;
    streaming = null;
    document.body.classList.remove("streaming");
    addCodeCopyButtons();
    // A stream cut off before its last frame (its server went away, or the answer was stopped
    // from another tab): the saved answer replaces the live one once the server has settled it.
    const live = messages.querySelector("article[data-role=assistant][aria-busy=true]");
    if (live) htmx.ajax("GET", `${here}/messages/${live.id.slice(4)}`, { target: live, swap: "outerHTML" });
  });

  // The server took the message and the answer is streaming: empty the box for the next one
  // (only now, so a message that fails to send stays in the box) and keep the focus there.
  form.addEventListener("htmx:sse:after:connection", () => {
    box.value = "";
    count();
    box.focus();
  });

  // Stop: end the request, and say so (a proxy may be slow to pass the close on to the server
  // that writes the answer). That server closes its request to the model and saves the answer so
  // far as stopped; then the saved answer replaces the live one.
  stop.addEventListener("click", () => {
    if (!streaming) return;
    const live = messages.querySelector("article[data-role=assistant][aria-busy=true]");
    const stopping = streaming;
    streaming = null; // the stream's end must not fetch the answer a second time
    htmx.trigger(stopping, "htmx:abort");
    document.body.classList.remove("streaming");
    if (live) {
      const answer = `${here}/messages/${live.id.slice(4)}`;
      const token = form.elements.csrf_token.value;
      const asked = { method: "POST", headers: { "HX-Request": "true" }, body: new URLSearchParams({ csrf_token: token }) };
      fetch(`${answer}/stop`, asked)
        // Then the saved answer (the server answers once it is saved: it waits a moment for that).
        .finally(() => htmx.ajax("GET", answer, { target: live, swap: "outerHTML" }));
    }
    box.focus();
  });

  // Copy: an answer's button copies the Markdown the model wrote, fetched when asked for (not
  // in every page twice); a code block's, its code.
  const markdown = new Map(); // message id → its text (a promise): a finished answer never changes
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.copy");
    if (!button) return;
    const id = button.closest("article").id.slice(4);
    let text;
    if (button.matches(".code-copy")) {
      const code = button.closest("pre").cloneNode(true);
      code.querySelector(".code-copy").remove();
      text = Promise.resolve(code.textContent.replace(/\n$/, ""));
    } else {
      text = markdown.get(id) || fetch(`${here}/messages/${id}.md`).then((r) => (r.ok ? r.text() : Promise.reject(r)));
      markdown.set(id, text);
      text.catch(() => markdown.delete(id)); // tried again next time
    }
    // Safari lets a click write only while it is handled: start now, the text still on its way.
    const copied = !navigator.clipboard ? Promise.reject()
      : window.ClipboardItem ? navigator.clipboard.write([new ClipboardItem({
        "text/plain": text.then((t) => new Blob([t], { type: "text/plain" })) })])
      : text.then((t) => navigator.clipboard.writeText(t));
    const say = (words) => {
      clearTimeout(button.timer);
      button.textContent = words;
      button.timer = setTimeout(() => { button.textContent = "Copy"; }, 1500);
    };
    copied.then(() => say("Copied"), () => say("Copy failed")); // "Copied" only if it was
  });

  function addCodeCopyButtons() {
    for (const pre of messages.querySelectorAll(".markdown pre:not(.has-copy)")) {
      pre.classList.add("has-copy");
      pre.insertAdjacentHTML("afterbegin", '<button type="button" class="copy code-copy">Copy</button>');
    }
  }
  addCodeCopyButtons();
  document.addEventListener("htmx:after:swap", addCodeCopyButtons);

  // A new chat's title comes as its first answer starts (listed by the stream): the tab and the
  // title bar (CSS shows it from then on) take it.
  const list = $("#conversation-list");
  const draftTitle = $(".draft-bar .title");
  const listed = new MutationObserver(() => {
    const entry = [...list.querySelectorAll("a")].find((a) => a.getAttribute("href") === here);
    if (!entry) return;
    listed.disconnect();
    document.title = `${entry.textContent} · chatapp`;
    for (const title of [draftTitle, $("main h1")]) title?.replaceChildren(entry.textContent);
  });
  if (list && draftTitle) listed.observe(list, { childList: true, subtree: true });

  // Follow the answer as it grows, unless the reader has scrolled up to read something; then a
  // button leads back to the newest text.
  let follow = true;
  let frame = 0;
  form.insertAdjacentHTML("afterbegin", '<button type="button" class="scroll-newest" hidden>Jump to newest ↓</button>');
  const newest = form.firstElementChild;
  newest.addEventListener("click", () => {
    follow = true;
    window.scrollTo(0, document.body.scrollHeight);
    box.focus({ preventScroll: true }); // the button hides: keep the focus somewhere useful
  });
  const showNewest = () => { // once a frame at most, however fast the text comes
    frame ||= requestAnimationFrame(() => {
      frame = 0;
      const last = messages.lastElementChild;
      newest.hidden = !last || last.getBoundingClientRect().bottom < form.getBoundingClientRect().top + 40;
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

  // Near the length limit, a live count, as the server counts (characters of the trimmed text).
  const limit = Number(box.dataset.maxChars);
  box.insertAdjacentHTML("afterend", '<p id="char-count" class="char-count" hidden></p>');
  const counter = box.nextElementSibling;
  box.setAttribute("aria-describedby", `${box.getAttribute("aria-describedby") ?? ""} char-count`);
  const number = (n) => n.toLocaleString("en");
  function count() {
    // A UTF-16 length is never below the count of characters: short text needs no count.
    const used = box.value.length < limit * 0.8 ? 0 : [...box.value.trim()].length;
    counter.hidden = !(used >= limit * 0.8); // and empty then, or the box's description reads it
    counter.classList.toggle("over", used > limit);
    counter.textContent = counter.hidden ? "" : `${number(used)} / ${number(limit)} characters`
      + (used > limit ? `: ${number(used - limit)} too many` : "");
  }
  box.addEventListener("input", count);
  count();
})();
