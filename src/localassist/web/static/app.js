// localassist web chat. Plain ES module, no build step, no third-party code.
// Every node is built with createElement + textContent: user and model text is data, never
// markup (the page's CSP sets Trusted Types 'none', so an HTML sink would throw anyway).
import { createRenderer, render } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const SETTING_KEYS = ["model", "temperature", "top_k", "top_p", "max_tokens", "system", "memory", "index", "tools"];
const SLIDERS = ["temperature", "top_k", "top_p", "max_tokens"];
const NARROW = window.matchMedia("(max-width: 760px)");
const WIDE = window.matchMedia("(min-width: 1100px)");

const state = {
  session: null,
  csrf: null,
  convId: null, // id of the open conversation, null for a new chat
  title: "",
  settings: {},
  messages: [], // {role, content, node?, ...}
  attachments: [],
  busy: null, // {controller} while a request streams or waits
  loadSeq: 0,
};

function h(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function button(text, cls, onClick, label) {
  const b = h("button", cls, text);
  b.type = "button";
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

// ---- HTTP ----------------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, message, response) {
    super(message);
    this.status = status;
    this.response = response;
  }
}

async function errorMessage(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return body.error.message || String(body.error);
  } catch { /* not JSON */ }
  return resp.statusText || "HTTP " + resp.status;
}

// fetch with the CSRF header on state-changing calls; 401 anywhere means the session ended.
async function request(method, path, { json, body, headers = {}, signal } = {}) {
  const opts = { method, headers: { ...headers }, credentials: "same-origin", signal };
  if (method !== "GET" && state.csrf) opts.headers["X-CSRF-Token"] = state.csrf;
  if (json !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(json);
  } else if (body !== undefined) {
    opts.body = body;
  }
  const resp = await fetch(path, opts);
  if (resp.status === 401 && path !== "/web/api/signin") {
    showSignin();
    throw new HttpError(401, "signed out", resp);
  }
  return resp;
}

async function api(method, path, opts) {
  const resp = await request(method, path, opts);
  if (!resp.ok) throw new HttpError(resp.status, await errorMessage(resp), resp);
  if (resp.status === 204) return null;
  return resp.json();
}

// ---- sign-in -----------------------------------------------------------------------------

function showSignin(message) {
  abortBusy();
  state.session = null;
  state.csrf = null;
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("password").value = "";
  $("username").focus();
}

async function signin(event) {
  event.preventDefault();
  const err = $("signin-error");
  err.textContent = "";
  const btn = event.target.querySelector("button[type=submit]");
  btn.disabled = true;
  try {
    const resp = await request("POST", "/web/api/signin", {
      json: { username: $("username").value, password: $("password").value },
    });
    if (resp.status === 401) {
      err.textContent = "wrong username or password";
    } else if (!resp.ok) {
      err.textContent = await errorMessage(resp);
    } else {
      $("password").value = "";
      fresh(); // a new user starts from a blank page, never the last one's conversation or settings
    }
  } catch (e) {
    err.textContent = "cannot reach the server: " + e.message;
  } finally {
    btn.disabled = false;
  }
}

async function signout() {
  try { await api("POST", "/web/api/signout"); } catch { /* the form shows anyway */ }
  fresh();
}

// Reload at / : nothing of the user before (messages, settings, title, list) stays in the page.
function fresh() {
  history.replaceState(null, "", "/");
  location.reload();
}

// ---- settings panel ------------------------------------------------------------------------

function fillSelect(select, values, labels) {
  select.replaceChildren(...values.map((v, k) => {
    const o = h("option", null, labels ? labels[k] : v);
    o.value = v;
    return o;
  }));
}

function decimals(step) {
  const s = String(step);
  return s.includes(".") ? s.length - s.indexOf(".") - 1 : 0;
}

function setupSettings(session) {
  fillSelect($("set-model"), session.models || []);
  fillSelect($("set-memory"), session.memory_policies || []);
  const indexes = session.indexes || [];
  fillSelect($("set-index"), ["", ...indexes], ["none", ...indexes]);
  $("set-index").disabled = indexes.length === 0;
  const ranges = session.ranges || {};
  for (const key of SLIDERS) {
    const input = $("set-" + key);
    const [min, max, step] = ranges[key] || [0, 1, 0.01];
    input.min = min;
    input.max = max;
    input.step = step;
  }
  const tools = $("tools");
  tools.replaceChildren(...(session.tools || []).map((name) => {
    const label = h("label", "check");
    const box = h("input");
    box.type = "checkbox";
    box.name = "tool";
    box.value = name;
    label.append(box, document.createTextNode(" " + name));
    return label;
  }));
  $("tools-field").hidden = !(session.tools || []).length;
}

function showSliderValue(key) {
  const input = $("set-" + key);
  const ranges = (state.session && state.session.ranges) || {}; // events may come before the session loads
  const [, , step] = ranges[key] || [0, 1, 0.01];
  $("out-" + key).textContent = Number(input.value).toFixed(decimals(step));
}

function applySettings(settings) {
  const s = { ...state.session.defaults, index: null, tools: [], ...settings };
  state.settings = s;
  const model = $("set-model");
  if (s.model && ![...model.options].some((o) => o.value === s.model)) {
    // A conversation from another model keeps showing it, even if no longer served.
    const o = h("option", null, s.model + " (not served)");
    o.value = s.model;
    model.append(o);
  }
  model.value = s.model || "";
  for (const key of SLIDERS) {
    $("set-" + key).value = s[key];
    showSliderValue(key);
  }
  $("set-system").value = s.system || "";
  $("set-memory").value = s.memory || "";
  $("set-index").value = s.index || "";
  for (const box of $("tools").querySelectorAll("input")) box.checked = (s.tools || []).includes(box.value);
}

function readSettings() {
  const s = {
    model: $("set-model").value,
    system: $("set-system").value,
    memory: $("set-memory").value,
    index: $("set-index").value || null,
    tools: [...$("tools").querySelectorAll("input:checked")].map((b) => b.value),
  };
  for (const key of SLIDERS) {
    const v = Number($("set-" + key).value);
    s[key] = key === "top_k" || key === "max_tokens" ? Math.round(v) : v;
  }
  return s;
}

let saveTimer = 0;
let pendingSave = null; // {id, settings} waiting for the debounce

function settingsChanged() {
  state.settings = readSettings();
  if (!state.convId) return;
  clearTimeout(saveTimer);
  pendingSave = { id: state.convId, settings: state.settings };
  saveTimer = setTimeout(saveSettings, 400);
}

// Saves debounced settings now; called before the page shows another conversation.
async function saveSettings() {
  clearTimeout(saveTimer);
  const job = pendingSave;
  pendingSave = null;
  if (!job) return;
  try {
    await api("PATCH", "/web/api/conversations/" + encodeURIComponent(job.id), { json: { settings: job.settings } });
    $("settings-status").textContent = "Saved";
    setTimeout(() => { $("settings-status").textContent = ""; }, 1500);
  } catch (e) {
    if (e.status !== 401 && e.status !== 404) $("settings-status").textContent = "not saved: " + e.message;
  }
}

// ---- drawers -------------------------------------------------------------------------------

function setSettingsOpen(open) {
  $("settings").hidden = !open;
  $("settings-toggle").setAttribute("aria-expanded", String(open));
  document.body.classList.toggle("settings-open", open);
  syncBackdrop();
  if (open && !WIDE.matches) $("set-model").focus();
}

function setNavOpen(open) {
  document.body.classList.toggle("nav-open", open);
  $("nav-toggle").setAttribute("aria-expanded", String(open));
  $("sidebar").hidden = NARROW.matches && !open;
  syncBackdrop();
  if (open) $("new-chat").focus();
}

function syncBackdrop() {
  const overlay = (document.body.classList.contains("settings-open") && !WIDE.matches)
    || (document.body.classList.contains("nav-open") && NARROW.matches);
  $("backdrop").hidden = !overlay;
}

function layoutChanged() {
  setNavOpen(false);
  setSettingsOpen(WIDE.matches);
}

// ---- conversations list -------------------------------------------------------------------

let searchTimer = 0;
let listSeq = 0;
async function loadList() {
  const seq = ++listSeq;
  const q = $("search").value.trim();
  let data;
  try {
    data = (await api("GET", "/web/api/conversations" + (q ? "?q=" + encodeURIComponent(q) : ""))).data || [];
  } catch {
    return;
  }
  if (seq !== listSeq) return;
  const list = $("conv-list");
  list.replaceChildren(...data.map((c) => {
    const li = h("li", "conv");
    li.dataset.id = c.id;
    if (c.id === state.convId) li.classList.add("current");
    const a = h("a", "conv-link", c.title || "Untitled");
    a.title = c.title || "Untitled"; // the whole title, where the list cuts it short
    a.href = "#/c/" + encodeURIComponent(c.id);
    if (c.id === state.convId) a.setAttribute("aria-current", "page");
    a.addEventListener("click", () => { if (NARROW.matches) setNavOpen(false); });
    const actions = h("span", "conv-actions");
    actions.append(
      button("Rename", "ghost small", () => renameConversation(c)),
      button("Delete", "ghost small danger-text", () => deleteConversation(c)),
    );
    li.append(a, actions);
    return li;
  }));
  $("conv-empty").hidden = data.length > 0;
  $("conv-empty").textContent = q ? "No conversations match." : "No conversations yet.";
}

async function renameConversation(c) {
  const title = window.prompt("Rename conversation", c.title || "");
  if (title === null || !title.trim()) return;
  try {
    await api("PATCH", "/web/api/conversations/" + encodeURIComponent(c.id), { json: { title: title.trim() } });
    if (c.id === state.convId) setTitle(title.trim());
  } catch (e) {
    if (e.status !== 401) window.alert("Rename failed: " + e.message);
  }
  loadList();
}

async function deleteConversation(c) {
  if (!window.confirm("Delete \u201c" + (c.title || "Untitled") + "\u201d? This cannot be undone.")) return;
  if (pendingSave && pendingSave.id === c.id) { clearTimeout(saveTimer); pendingSave = null; }
  try {
    await api("DELETE", "/web/api/conversations/" + encodeURIComponent(c.id));
  } catch (e) {
    if (e.status !== 401) window.alert("Delete failed: " + e.message);
    return;
  }
  if (c.id === state.convId) {
    history.replaceState(null, "", location.pathname + location.search);
    newChat();
  }
  loadList();
}

function setTitle(title) {
  state.title = title || "";
  $("conv-title").textContent = state.title;
  document.title = state.title ? state.title + " \u00b7 localassist" : "localassist";
}

// ---- routing ------------------------------------------------------------------------------

function routeId() {
  const m = location.hash.match(/^#\/c\/(.+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

async function route() {
  const id = routeId();
  if (id === state.convId && id !== null) return;
  abortBusy();
  saveSettings();
  if (id === null) newChat();
  else await openConversation(id);
  for (const li of $("conv-list").children) {
    const cur = li.dataset.id === state.convId;
    li.classList.toggle("current", cur);
    const a = li.querySelector("a");
    if (cur) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function newChat() {
  abortBusy();
  saveSettings();
  state.convId = null;
  state.messages = [];
  state.attachments = [];
  setTitle("");
  applySettings({});
  renderMessages();
  renderChips();
  setStatus("");
  if (location.hash) history.pushState(null, "", location.pathname + location.search);
  $("message").focus();
}

async function openConversation(id) {
  const seq = ++state.loadSeq;
  let conv;
  try {
    conv = await api("GET", "/web/api/conversations/" + encodeURIComponent(id));
  } catch (e) {
    if (e.status === 401) return;
    state.convId = null;
    state.messages = [];
    renderMessages();
    setStatus(e.status === 404 ? "That conversation does not exist." : "Could not open it: " + e.message, true);
    return;
  }
  if (seq !== state.loadSeq) return;
  state.convId = conv.id;
  // a summary is neither edited nor regenerated as a chat question
  state.messages = (conv.messages || []).map((m) => ({ ...m, noEdit: Boolean(m.summary) }));
  state.attachments = conv.attachments || [];
  setTitle(conv.title);
  applySettings(conv.settings || {});
  renderMessages();
  renderChips();
  setStatus("");
}

// Records a new conversation's id without reloading it (the stream is still filling it).
function adoptConversation(id, refresh = true) {
  if (!id || id === state.convId) return;
  state.convId = id;
  history.pushState(null, "", "#/c/" + encodeURIComponent(id));
  if (refresh) loadList();
}

// ---- messages ------------------------------------------------------------------------------

function renderMessages() {
  const log = $("log");
  log.replaceChildren();
  if (!state.messages.length) log.append(emptyState());
  for (const m of state.messages) log.append(messageNode(m));
  updateActions();
  scrollDown(true);
}

function emptyState() {
  const div = h("div", "empty");
  div.append(h("h2", null, "How can I help?"), h("p", "muted", "Answers come from the model on this server. Nothing leaves it."));
  return div;
}

function messageNode(m) {
  const node = h("article", "message " + m.role);
  m.node = node;
  m.actions = null; // a re-render must not insert before the old node's actions
  const body = h("div", "content");
  m.body = body;
  if (m.role === "user") {
    body.textContent = m.content;
    node.append(body);
  } else {
    node.append(body);
    render(m.content || "", body);
    for (const t of m.tool_calls || []) addTool(m, t);
    if (m.sources && m.sources.length) addSources(m, m.sources);
    for (const n of m.notices || []) addLine(m, "notice", n);
    if (m.error) addLine(m, "error", m.error);
    // as the log keeps it: a stopped answer, or one that reached Max tokens
    if (m.stopped || m.finish_reason === "cancelled") addLine(m, "notice", "stopped");
    else if (m.finish_reason === "length") addLine(m, "notice", "cut off at Max tokens");
    showUsage(m);
  }
  const actions = h("div", "actions");
  m.actions = actions;
  node.append(actions);
  return node;
}

function extras(m) {
  // Tool calls, sources, notices and the usage line go below the answer text, in arrival order.
  let div = m.node.querySelector(":scope > .extras");
  if (!div) {
    div = h("div", "extras");
    m.node.insertBefore(div, m.actions || null);
  }
  return div;
}

function addLine(m, cls, text) {
  const p = h("p", cls, text);
  if (cls === "error") p.setAttribute("role", "alert");
  extras(m).append(p);
}

function addTool(m, t) {
  const d = h("details", "tool" + (t.is_error ? " tool-error" : ""));
  let args = t.arguments;
  if (typeof args !== "string") args = JSON.stringify(args ?? {});
  try {
    const parsed = JSON.parse(args);
    if (parsed && typeof parsed === "object") {
      const vals = Object.values(parsed);
      args = vals.length === 1 && typeof vals[0] !== "object" ? String(vals[0]) : JSON.stringify(parsed);
    }
  } catch { /* keep as sent */ }
  d.append(h("summary", null, (t.name || "tool") + "(" + args + ")"));
  d.append(h("pre", "tool-result", typeof t.result === "string" ? t.result : JSON.stringify(t.result)));
  extras(m).append(d);
}

function sourceLabel(s) {
  let text = "[" + s.n + "] " + (s.file || "source");
  if (s.page !== null && s.page !== undefined && s.page !== "") text += " p." + s.page;
  if (s.lines) text += " lines " + s.lines;
  return text;
}

function addSources(m, sources) {
  const old = m.node.querySelector(".sources");
  if (old) old.remove();
  const ol = h("ol", "sources");
  ol.setAttribute("aria-label", "Sources");
  for (const s of sources) {
    const li = h("li", "source");
    if (s.n !== undefined) li.value = s.n;
    const b = button(sourceLabel(s), "source-link", () => {
      quote.hidden = !quote.hidden;
      b.setAttribute("aria-expanded", String(!quote.hidden));
    });
    b.setAttribute("aria-expanded", "false");
    const quote = h("blockquote", "source-text", s.text || "");
    quote.hidden = true;
    li.append(b, quote);
    ol.append(li);
  }
  extras(m).append(ol);
}

function showUsage(m) {
  const u = m.usage;
  if (!u) return;
  const parts = [(u.prompt_tokens ?? 0) + " + " + (u.completion_tokens ?? 0) + " tokens"];
  if (m.tokens_per_s) parts.push(Number(m.tokens_per_s).toFixed(1) + " tok/s");
  // seen here (waiting in the server's queue included) when it streamed in; else the log's
  const ttft = m.waited_s ?? m.ttft_s;
  if (ttft !== undefined && ttft !== null) parts.push(Number(ttft).toFixed(2) + " s to first token");
  const old = m.node.querySelector(".usage");
  if (old) old.remove();
  extras(m).append(h("p", "usage", parts.join(" \u00b7 ")));
}

// Edit goes on the last user message and Regenerate under the last answer, only while idle.
function updateActions() {
  let lastUser = -1;
  let lastAnswer = -1;
  state.messages.forEach((m, k) => { if (m.role === "user") lastUser = k; else lastAnswer = k; });
  // A Summarise request is neither editable nor regenerated as a chat question.
  const summary = lastUser >= 0 && state.messages[lastUser].noEdit;
  state.messages.forEach((m, k) => {
    if (!m.actions) return;
    m.actions.replaceChildren();
    if (state.busy) return;
    if (k === lastUser && !summary) m.actions.append(button("Edit", "ghost small", () => startEdit(m)));
    if (k === lastAnswer && lastAnswer > lastUser && !summary) {
      m.actions.append(button("Regenerate", "ghost small", () => regenerate()));
    }
  });
}

function scrollDown(force) {
  const log = $("log");
  const near = log.scrollHeight - log.scrollTop - log.clientHeight < 120;
  if (force || near) log.scrollTop = log.scrollHeight;
}

function setStatus(text, isError) {
  const s = $("composer-status");
  s.textContent = text || "";
  s.classList.toggle("error", Boolean(isError));
}

// ---- composing -----------------------------------------------------------------------------

let editing = null; // the user message being edited, or null

function startEdit(m) {
  editing = m;
  const box = $("message");
  box.value = m.content;
  autosize();
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
  setStatus("Editing your last message; Send replaces it.");
}

function autosize() {
  const box = $("message");
  box.style.height = "auto";
  box.style.height = Math.min(box.scrollHeight + 2, 240) + "px";
}

function send(event) {
  if (event) event.preventDefault();
  if (state.busy) return;
  const text = $("message").value;
  if (!text.trim()) return;
  const action = editing && state.messages.includes(editing) ? "edit" : "send";
  if (action === "edit") {
    // The edited question and everything after it are replaced.
    state.messages = state.messages.slice(0, state.messages.indexOf(editing));
  }
  editing = null;
  $("message").value = "";
  autosize();
  setStatus("");
  const user = { role: "user", content: text };
  state.messages.push(user);
  chat({ conversation: state.convId, message: text, settings: readSettings(), action });
}

function regenerate() {
  if (state.busy) return;
  while (state.messages.length && state.messages[state.messages.length - 1].role === "assistant") state.messages.pop();
  chat({ conversation: state.convId, message: "", settings: readSettings(), action: "regenerate" });
}

function chat(body) {
  if (!state.convId && state.messages.length <= 1 && body.message) setTitle(body.message.slice(0, 60));
  renderMessages();
  return stream("/web/api/chat", body);
}

// ---- streaming -----------------------------------------------------------------------------

function abortBusy() {
  if (state.busy) state.busy.controller.abort();
}

function setBusy(busy) {
  state.busy = busy;
  $("send").hidden = Boolean(busy);
  $("stop").hidden = !busy;
  $("attach").disabled = Boolean(busy);
  $("log").setAttribute("aria-busy", String(Boolean(busy)));
  for (const b of $("chips").querySelectorAll("button")) b.disabled = Boolean(busy);
  updateActions();
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); reject(new DOMException("aborted", "AbortError")); }, { once: true });
  });
}

// Waits out a 429: a role=status line counts down, then the caller resends. Stop aborts it.
async function retryWait(seconds, signal) {
  const line = h("p", "retry");
  line.setAttribute("role", "status");
  $("composer").insertBefore(line, $("composer").firstChild);
  try {
    for (let left = seconds; left > 0; left--) {
      line.textContent = "busy, retrying in " + left + " s";
      await sleep(1000, signal);
    }
  } finally {
    line.remove();
  }
}

async function stream(url, body, userLabel) {
  const controller = new AbortController();
  const busy = { controller };
  setBusy(busy);
  const answer = { role: "assistant", content: "", notices: [], tool_calls: [], sources: [], sent: performance.now() };
  let resp;
  try {
    for (;;) {
      resp = await request("POST", url, { json: body, signal: controller.signal });
      if (resp.status !== 429) break;
      const after = Number.parseInt(resp.headers.get("Retry-After") || "", 10);
      await retryWait(Number.isFinite(after) && after > 0 ? Math.min(after, 600) : 2, controller.signal);
    }
    if (!resp.ok) {
      const msg = await errorMessage(resp);
      if (resp.status === 404) setStatus("That conversation is gone: " + msg, true);
      else setStatus(msg, true);
      giveBack(body);
      if (body.action === "regenerate" && state.convId) await openConversation(state.convId);
      else renderMessages();
      return;
    }
    // the list is reloaded when the answer ends: a request now would hold up its first token
    adoptConversation(resp.headers.get("X-Conversation-Id"), false);
    if (userLabel) {
      const u = { role: "user", content: userLabel, noEdit: true };
      state.messages.push(u);
      const empty = $("log").querySelector(".empty");
      if (empty) empty.remove();
      $("log").append(messageNode(u));
    }
    state.messages.push(answer);
    const empty = $("log").querySelector(".empty");
    if (empty) empty.remove();
    $("log").append(messageNode(answer));
    answer.node.classList.add("streaming");
    scrollDown(true);
    await readStream(resp, answer);
  } catch (e) {
    if (e.name === "AbortError") {
      if (answer.node) {
        answer.stopped = true;
        addLine(answer, "notice", "stopped");
      } else if (giveBack(body)) {
        renderMessages(); // stopped while waiting out a 429: nothing was sent
      }
    } else if (e.status !== 401) {
      if (answer.node) { answer.error = e.message; addLine(answer, "error", e.message); }
      else setStatus("Could not send: " + e.message, true);
    }
  } finally {
    if (answer.node) {
      answer.node.classList.remove("streaming");
      if (answer.renderer) answer.renderer.update(answer.content);
    }
    if (state.busy === busy) setBusy(null);
    if (state.session) loadList();
  }
}

// The question was not taken: put it back in the box so nothing typed is lost.
function giveBack(body) {
  const last = state.messages[state.messages.length - 1];
  if (!last || last.role !== "user" || !body.message || !(body.action === "send" || body.action === "edit")) return false;
  state.messages.pop();
  $("message").value = body.message;
  autosize();
  return true;
}

async function readStream(resp, answer) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  answer.renderer = createRenderer(answer.body);
  let frame = 0;
  const paint = () => {
    frame = 0;
    answer.renderer.update(answer.content);
    scrollDown(false);
  };
  let buf = "";
  let done = false;
  while (!done) {
    const { value, done: end } = await reader.read();
    if (end) break;
    buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (!data) continue;
      if (data === "[DONE]") { done = true; break; }
      let obj;
      try { obj = JSON.parse(data); } catch { continue; }
      if (handleFrame(obj, answer) && !frame) frame = requestAnimationFrame(paint);
    }
  }
  if (frame) cancelAnimationFrame(frame);
  paint();
  if (answer.finish_reason === "length") addLine(answer, "notice", "cut off at Max tokens");
  showUsage(answer);
  if (done) reader.cancel().catch(() => {});
}

// Applies one SSE frame; returns true when the answer text changed.
function handleFrame(obj, answer) {
  if (obj.error) {
    answer.error = obj.error.message || String(obj.error);
    addLine(answer, "error", answer.error);
    return false;
  }
  switch (obj.object) {
    case "localassist.notice":
      answer.notices.push(obj.text);
      addLine(answer, "notice", obj.text);
      return false;
    case "localassist.tool":
      answer.tool_calls.push(obj);
      addTool(answer, obj);
      return false;
    case "localassist.sources":
      answer.sources = obj.sources || [];
      addSources(answer, answer.sources);
      return false;
    case "localassist.timings":
      answer.ttft_s = obj.ttft_s;
      answer.tokens_per_s = obj.tokens_per_s;
      answer.exchange_id = obj.exchange_id;
      return false;
    default:
      break;
  }
  if (obj.usage) answer.usage = obj.usage;
  const choice = obj.choices && obj.choices[0];
  const text = choice && choice.delta && choice.delta.content;
  if (choice && choice.finish_reason) answer.finish_reason = choice.finish_reason;
  if (text) {
    if (!answer.content && answer.sent) answer.waited_s = (performance.now() - answer.sent) / 1000;
    answer.content += text;
    return true;
  }
  return false;
}

// ---- attachments -------------------------------------------------------------------------

function renderChips() {
  const chips = $("chips");
  chips.replaceChildren(...state.attachments.map((a) => {
    const chip = h("span", "chip");
    chip.append(h("span", "chip-name", a.name));
    if (a.mode) chip.append(h("span", "chip-mode", a.mode));
    const b = button("Summarise", "ghost small", () => summarise(a));
    b.disabled = Boolean(state.busy);
    chip.append(b);
    return chip;
  }));
}

async function upload(file) {
  if (!file) return;
  setStatus("Uploading " + file.name + "\u2026");
  const id = state.convId || "new";
  let resp;
  try {
    resp = await request("POST", "/web/api/conversations/" + encodeURIComponent(id) + "/files", {
      body: file,
      headers: { "X-Filename": encodeURIComponent(file.name), "Content-Type": file.type || "application/octet-stream" },
    });
  } catch (e) {
    if (e.status !== 401) setStatus("Upload failed: " + e.message, true);
    return;
  }
  if (!resp.ok) {
    const msg = await errorMessage(resp);
    if (resp.status === 413) setStatus("File too large: " + msg, true);
    else if (resp.status === 415) setStatus("Unsupported file type: " + msg, true);
    else setStatus("Upload failed: " + msg, true);
    return;
  }
  const data = await resp.json();
  if (!state.convId) {
    adoptConversation(data.conversation);
    if (!state.title) setTitle(file.name);
    state.settings = readSettings();
    api("PATCH", "/web/api/conversations/" + encodeURIComponent(data.conversation), { json: { settings: state.settings } }).catch(() => {});
  }
  state.attachments.push(data.attachment);
  renderChips();
  setStatus(data.notice || "Attached " + data.attachment.name + ".");
}

function summarise(a) {
  if (state.busy || !state.convId) return;
  stream("/web/api/conversations/" + encodeURIComponent(state.convId) + "/summarize", { attachment: a.id }, "Summarise " + a.name);
}

// ---- start -------------------------------------------------------------------------------

async function boot() {
  let session;
  try {
    const resp = await fetch("/web/api/session", { credentials: "same-origin" });
    if (!resp.ok) throw new Error(await errorMessage(resp));
    session = await resp.json();
  } catch (e) {
    showSignin("cannot reach the server: " + e.message);
    return;
  }
  if (session.signin_required && !session.user) {
    showSignin();
    return;
  }
  state.session = session;
  state.csrf = session.csrf;
  setupSettings(session);
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = !session.signin_required;
  $("user-name").textContent = session.signin_required ? session.user : "";
  layoutChanged();
  state.convId = undefined; // forces route() to load whatever the URL names
  await route();
  loadList();
}

function wire() {
  $("signin-form").addEventListener("submit", signin);
  $("signout").addEventListener("click", signout);
  $("new-chat").addEventListener("click", () => { newChat(); loadList(); if (NARROW.matches) setNavOpen(false); });
  $("search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(loadList, 200); });
  $("composer").addEventListener("submit", send);
  $("stop").addEventListener("click", abortBusy);
  const box = $("message");
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
    if (e.key === "Escape" && editing) { editing = null; box.value = ""; autosize(); setStatus(""); }
  });
  box.addEventListener("input", autosize);
  $("attach").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", (e) => { const f = e.target.files[0]; e.target.value = ""; upload(f); });
  $("settings-form").addEventListener("submit", (e) => e.preventDefault());
  $("settings-form").addEventListener("change", settingsChanged);
  for (const key of SLIDERS) $("set-" + key).addEventListener("input", () => showSliderValue(key));
  $("settings-toggle").addEventListener("click", () => setSettingsOpen($("settings").hidden));
  $("settings-close").addEventListener("click", () => { setSettingsOpen(false); $("settings-toggle").focus(); });
  $("nav-toggle").addEventListener("click", () => setNavOpen(!document.body.classList.contains("nav-open")));
  $("backdrop").addEventListener("click", () => { setNavOpen(false); if (!WIDE.matches) setSettingsOpen(false); });
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    const inSettings = $("settings").contains(document.activeElement);
    if (!$("settings").hidden && (!WIDE.matches || inSettings)) { setSettingsOpen(false); $("settings-toggle").focus(); }
    if (document.body.classList.contains("nav-open")) { setNavOpen(false); $("nav-toggle").focus(); }
  });
  NARROW.addEventListener("change", layoutChanged);
  WIDE.addEventListener("change", layoutChanged);
  window.addEventListener("hashchange", () => { if (state.session) route(); });
  window.addEventListener("popstate", () => { if (state.session) route(); });
}

wire();
boot();
