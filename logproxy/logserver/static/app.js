// logproxy web UI: a live list of captures and a detail view. No framework, no build step.
// Captured data is untrusted: it only ever reaches the page through textContent / DOM nodes.
"use strict";

const $ = (sel) => document.querySelector(sel);
const TOKEN = new URLSearchParams(location.search).get("token") || "";
const FILTERS = ["route", "model", "status", "method", "since", "until", "q"];
const PAGE = 50;
const BODY_LIMIT = 2 * 1024 * 1024; // bytes of a body fetched for display
const state = { rows: new Map(), cursor: null, loading: null, filters: {}, facets: { routes: new Set(), models: new Set() } };
const detail = { id: null, gen: 0, abort: null, tailing: false, fromList: false };

// ------------------------------------------------------------------ DOM and formatting

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
const fmtInt = (v) => (num(v) == null ? "" : v.toLocaleString("en-US"));
function fmtMs(v) {
  if (num(v) == null) return "";
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60000) return `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`;
  return `${Math.floor(v / 60000)} min ${Math.round((v % 60000) / 1000)} s`;
}
function fmtBytes(v) {
  if (num(v) == null) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}
function fmtTime(iso, full) {
  const d = new Date(iso);
  if (!iso || isNaN(d)) return "";
  const t = d.toLocaleTimeString("en-GB", { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  return full || d.toDateString() !== new Date().toDateString() ? `${d.toLocaleDateString("sv-SE")} ${t}` : t;
}
function pathOf(url) {
  try { const u = new URL(url); return u.pathname + u.search; } catch { return url || ""; }
}
const statusClass = (code) => (num(code) ? `s${String(code)[0]}` : "");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ API

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
async function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  if (TOKEN) headers.set("Authorization", `Bearer ${TOKEN}`);
  const r = await fetch(path, { ...opts, headers });
  if (r.status === 401) { showAuth(); throw new HttpError(401, "a token is needed"); }
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { const j = await r.json(); if (j && j.error) msg = j.error.message || String(j.error); } catch { /* not JSON */ }
    throw new HttpError(r.status, msg);
  }
  return r;
}
const getJSON = async (path, opts) => (await api(path, opts)).json();
const withToken = (p) => (TOKEN ? `${p}${p.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}` : p);
const reqPath = (id, rest = "") => `/api/requests/${encodeURIComponent(id)}${rest}`;

function showAuth() {
  $("#auth").hidden = false;
  $("#auth-form strong").textContent = TOKEN
    ? "The token in the URL was not accepted (401). Enter the logging server's token:"
    : "This logging server needs a token (401). Enter it to continue:";
  $("main").hidden = true;
  $("#live").textContent = "locked";
  $("#live").className = "live off";
  $("#auth-form input").focus();
}
function showMessage(text) {
  $("#message").textContent = text || "";
  $("#message").hidden = !text;
}

// A list item (response metadata document + index summary) flattened for the table.
function norm(it) {
  const m = it.metadata || {}, s = it.summary || {}, l = it.llm || {}, u = l.usage || {};
  const started = m.request_started_at || s.started_at || it.started_at;
  const done = it.stream_type === "response" && it.completed_at != null;
  const inflight = s.in_flight ?? (!done && it.error == null);
  let duration = s.duration_ms;
  if (duration == null && done && started) duration = Date.parse(it.completed_at) - Date.parse(started);
  return {
    id: it.id || m.id || s.id, started, startedMs: Date.parse(started) || 0, inflight,
    method: m.method || s.method, route: m.route ?? s.route, url: m.source_url || s.source_url,
    status: m.response_status_code ?? s.status, error: it.error ?? s.error,
    model: l.model || s.model, responseModel: l.response_model || s.response_model,
    inTokens: u.input_tokens ?? s.input_tokens, outTokens: u.output_tokens ?? s.output_tokens,
    cached: u.cached_input_tokens, duration, ttft: l.ttft_ms ?? s.ttft_ms,
  };
}

// ------------------------------------------------------------------ the list

function filterParams() {
  const qs = new URLSearchParams();
  for (const k of FILTERS) if (state.filters[k]) qs.set(k, state.filters[k]);
  return qs;
}
function readFiltersFromURL() {
  const p = new URLSearchParams(location.search), form = $("#filters");
  for (const k of FILTERS) {
    state.filters[k] = (p.get(k) || "").trim();
    if (form.elements[k]) form.elements[k].value = state.filters[k];
  }
}
function applyFilters() {
  const form = $("#filters");
  for (const k of FILTERS) if (form.elements[k]) state.filters[k] = form.elements[k].value.trim();
  const qs = filterParams();
  if (TOKEN) qs.set("token", TOKEN);
  const search = qs.toString();
  history.replaceState(history.state, "", `${location.pathname}${search ? "?" + search : ""}${location.hash}`);
  if (detail.id) { history.pushState(null, "", location.pathname + location.search); route(); } // show the list
  listed = true;
  loadList(true);
}

// Does a live item belong in the list under the active filters? (`q` is the server's job.)
function glob(p) { // fnmatch, as the server matches `model`
  try { return new RegExp(`^${p.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`); } catch { return { test: (v) => v === p }; }
}
function matches(n) {
  const f = state.filters;
  if (f.route && (f.route === "-" ? n.route != null : n.route !== f.route)) return false;
  if (f.model && !(typeof n.model === "string" && glob(f.model).test(n.model))) return false;
  if (f.method && n.method !== f.method.toUpperCase()) return false;
  if (f.until) return false;
  if (!f.status) return true;
  return f.status.split(",").some((s) => {
    s = s.trim().toLowerCase();
    if (s === "inflight") return n.inflight;
    if (s === "error") return n.error != null;
    if (/^\dxx$/.test(s)) return num(n.status) != null && Math.floor(n.status / 100) === +s[0];
    return n.status === +s;
  });
}

function fillRow(tr, n) {
  tr.dataset.id = n.id;
  tr.dataset.state = n.inflight ? "inflight" : n.error != null ? "error" : "done";
  tr._n = n;
  const status = n.inflight
    ? h("span", { class: "badge inflight", title: "in flight" }, n.status ? `${n.status} ` : "", "streaming")
    : h("span", { class: `badge ${statusClass(n.status)}${n.error != null ? " err" : ""}`, title: n.error ?? null },
        n.status ?? "—", n.error != null ? " ✕" : "");
  const tokens = n.inTokens != null || n.outTokens != null ? `${fmtInt(n.inTokens) || "–"} / ${fmtInt(n.outTokens) || "–"}` : "";
  tr.replaceChildren(
    h("td", { class: "time", title: fmtTime(n.started, true) }, fmtTime(n.started)),
    h("td", { class: "method" }, n.method || ""),
    h("td", null, n.route ?? h("span", { class: "muted" }, "—")),
    h("td", { class: "path" }, h("a", { href: `#/requests/${n.id}`, title: n.url || "" }, pathOf(n.url) || n.id)),
    h("td", null, status),
    h("td", { class: "model", title: n.responseModel || null }, n.model || ""),
    h("td", { class: "num", title: n.cached ? `${n.cached} cached` : null }, tokens),
    h("td", { class: "num dur" }, n.inflight ? fmtMs(Date.now() - n.startedMs) : fmtMs(n.duration)),
    h("td", { class: "num" }, fmtMs(n.ttft)),
  );
  if (n.route) state.facets.routes.add(n.route);
  if (n.model) state.facets.models.add(n.model);
}

function addRow(n, live) {
  const existing = state.rows.get(n.id);
  if (existing) return existing._n.inflight || !n.inflight ? fillRow(existing, n) : undefined; // never back in time
  const tr = h("tr");
  fillRow(tr, n);
  state.rows.set(n.id, tr);
  const body = $("#rows");
  if (live) { // keep newest first: before the first row that started earlier
    const next = [...body.rows].find((r) => r._n.startedMs <= n.startedMs);
    if (!next && state.cursor) { state.rows.delete(n.id); return; } // belongs to a later page
    body.insertBefore(tr, next || null);
    tr.classList.add("new");
  } else body.append(tr);
  updateEmpty();
}

function updateEmpty() {
  const empty = $("#empty");
  empty.hidden = state.rows.size > 0 || !!state.loading;
  empty.textContent = filterParams().toString()
    ? "No captures match these filters."
    : "No captures yet. Requests sent through the proxy appear here as they happen.";
  for (const [id, set] of [["#routes", state.facets.routes], ["#models", state.facets.models]]) {
    const list = $(id);
    if (list.options.length !== set.size) {
      list.replaceChildren(...[...set].sort().map((v) => h("option", { value: v }, v === "-" ? "(no route matched)" : null)));
    }
  }
}

async function loadList(reset) {
  if (reset) {
    if (state.loading) state.loading.abort();
    state.rows.clear();
    state.cursor = null;
    $("#rows").replaceChildren();
  } else if (state.loading) return;
  const ctrl = (state.loading = new AbortController());
  const qs = filterParams();
  qs.set("limit", PAGE);
  if (!reset && state.cursor) qs.set("cursor", state.cursor);
  $("#more").disabled = true;
  try {
    const data = await getJSON(`/api/requests?${qs}`, { signal: ctrl.signal });
    for (const it of data.items || []) addRow(norm(it), false);
    state.cursor = data.next_cursor || null;
    showMessage("");
  } catch (e) {
    if (e.name !== "AbortError" && e.status !== 401) showMessage(`Cannot list captures: ${e.message}`);
  } finally {
    if (state.loading === ctrl) {
      state.loading = null;
      const more = $("#more");
      more.hidden = !state.cursor;
      more.disabled = false;
      updateEmpty();
      // still in view after this page (a tall window): the observer will not fire again
      if (state.cursor && !$("#list-view").hidden && more.getBoundingClientRect().top < innerHeight + 300) setTimeout(() => loadList(false));
    }
  }
}

// With a text search active, live captures are checked by asking the server again.
let refreshTimer = null;
function refreshTop() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    const qs = filterParams();
    qs.set("limit", PAGE);
    try {
      const data = await getJSON(`/api/requests?${qs}`);
      for (const it of (data.items || []).reverse()) addRow(norm(it), true);
    } catch { /* the next event retries */ }
  }, 400);
}

// ------------------------------------------------------------------ live events

// The first page is listed once the event stream is open, so that nothing falls in between.
let listed = false;
const firstList = () => { if (!listed) { listed = true; loadList(true); } };

function connectEvents() {
  const live = $("#live");
  const es = new EventSource(withToken("/api/events"));
  let dropped = false;
  es.onopen = () => {
    live.textContent = "● live";
    live.className = "live on";
    firstList();
    if (dropped) { dropped = false; state.filters.q ? refreshTop() : loadList(true); }
  };
  es.onerror = () => {
    dropped = true;
    firstList();
    if (!$("#auth").hidden) { es.close(); return; } // locked: the token form reloads the page
    live.textContent = "reconnecting…";
    live.className = "live off";
    if (es.readyState === EventSource.CLOSED) { es.close(); setTimeout(connectEvents, 3000); }
  };
  for (const kind of ["start", "progress", "end"]) {
    es.addEventListener(kind, (e) => {
      let item;
      try { item = JSON.parse(e.data); } catch { return; }
      const n = norm(item);
      if (!n.id) return;
      if (state.rows.has(n.id)) addRow(n, true);
      else if (state.filters.q) { if (kind !== "progress") refreshTop(); }
      else if (matches(n)) addRow(n, true);
      if (kind === "end" && n.id === detail.id && !detail.tailing) openDetail(n.id, true);
    });
  }
}

setInterval(() => { // elapsed time of the requests in flight
  for (const tr of state.rows.values()) {
    if (tr._n.inflight) tr.querySelector(".dur").textContent = fmtMs(Date.now() - tr._n.startedMs);
  }
}, 1000);

// ------------------------------------------------------------------ capture bodies

function splitBin(buf) {
  const b = new Uint8Array(buf);
  let i = -1;
  for (let k = 0; k + 3 < b.length; k++) {
    if (b[k] === 13 && b[k + 1] === 10 && b[k + 2] === 13 && b[k + 3] === 10) { i = k; break; }
  }
  const lines = new TextDecoder().decode(i < 0 ? b : b.subarray(0, i)).split("\r\n");
  const headers = lines.slice(1).filter(Boolean).map((l) => {
    const j = l.indexOf(":");
    return j < 0 ? [l, ""] : [l.slice(0, j), l.slice(j + 1).trim()];
  });
  return { start: lines[0], headers, body: i < 0 ? new Uint8Array() : b.subarray(i + 4) };
}
const header = (bin, name) => (bin?.headers.find(([k]) => k.toLowerCase() === name) || [])[1];
function decodeText(bytes) {
  try { return new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch { return null; }
}

async function fetchBin(id, kind, limit = BODY_LIMIT) {
  const r = await api(reqPath(id, `/${kind}`), limit ? { headers: { Range: `bytes=0-${limit - 1}` } } : {});
  const bin = splitBin(await r.arrayBuffer());
  const range = r.headers.get("Content-Range"); // "bytes 0-99/1234"
  bin.total = range ? +range.split("/")[1] || null : null;
  bin.partial = r.status === 206 && bin.total != null && bin.total > limit;
  return bin;
}

function jsonEl(v, indent = "") {
  if (v === null || typeof v !== "object") {
    const cls = typeof v === "string" ? "j-str" : typeof v === "number" ? "j-num" : "j-lit";
    return h("span", { class: cls }, JSON.stringify(v));
  }
  const arr = Array.isArray(v), entries = arr ? v.map((x, i) => [i, x]) : Object.entries(v);
  if (!entries.length) return arr ? "[]" : "{}";
  const inner = indent + "  ", out = [arr ? "[" : "{"];
  entries.forEach(([k, x], i) => {
    out.push("\n" + inner);
    if (!arr) out.push(h("span", { class: "j-key" }, JSON.stringify(k)), ": ");
    out.push(jsonEl(x, inner), i < entries.length - 1 ? "," : "");
  });
  out.push("\n" + indent + (arr ? "]" : "}"));
  return out;
}
const parseJSON = (text) => { try { return { value: JSON.parse(text) }; } catch { return null; } };
const prettyText = (v) => {
  if (typeof v !== "string") return JSON.stringify(v, null, 2);
  const p = parseJSON(v);
  return p && typeof p.value === "object" && p.value ? JSON.stringify(p.value, null, 2) : v;
};

function sseEvents(text) {
  return text.split(/\r?\n\r?\n/).filter((b) => b.trim()).map((block) => {
    let event = "", data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      else if (line.startsWith(":")) event = event || "comment";
    }
    return { event, data: data.join("\n") };
  });
}

function bodyEl(bin, kind) {
  if (!bin) return h("p", { class: "muted" }, `The ${kind} body is not available.`);
  const size = bin.body.length;
  if (!size) return h("p", { class: "muted" }, "(empty body)");
  const note = bin.partial ? h("p", { class: "muted" }, `Showing the first ${fmtBytes(size)} of ${fmtBytes(bin.total)}. `,
    h("a", { href: withToken(reqPath(detail.id, `/${kind}`)), target: "_blank" }, "Open the whole file")) : null;
  const text = decodeText(bin.body) ?? (bin.partial ? new TextDecoder().decode(bin.body) : null);
  if (text == null) return h("p", { class: "muted" }, `Binary body, ${fmtBytes(size)}.`);
  const ctype = (header(bin, "content-type") || "").toLowerCase();
  if (ctype.includes("event-stream") || /^(data|event):/.test(text)) {
    const events = sseEvents(text);
    return [note, h("ol", { class: "sse" }, events.slice(0, 5000).map((e) =>
      h("li", null, e.event ? h("span", { class: "ev" }, e.event) : null, h("code", null, e.data))))];
  }
  const parsed = !bin.partial && size < 512 * 1024 ? parseJSON(text) : null;
  return [note, h("pre", { class: "code" }, parsed ? jsonEl(parsed.value) : text)];
}

// ------------------------------------------------------------------ the conversation

function blocksOf(c) {
  if (c == null) return [];
  if (typeof c === "string") return [{ kind: "text", text: c }];
  if (!Array.isArray(c)) return [{ kind: "json", value: c }];
  return c.map((p) => {
    if (typeof p === "string") return { kind: "text", text: p };
    switch (p && p.type) {
      case "text": case "input_text": case "output_text": return { kind: "text", text: p.text };
      case "thinking": return { kind: "text", text: p.thinking, cls: "thinking" };
      case "refusal": return { kind: "text", text: p.refusal, cls: "thinking" };
      case "tool_use": case "server_tool_use": return { kind: "call", name: p.name, id: p.id, args: p.input };
      case "tool_result": return { kind: "result", id: p.tool_use_id, error: p.is_error, blocks: blocksOf(p.content) };
      case "image_url": return { kind: "media", text: `image ${String(p.image_url?.url ?? p.image_url).slice(0, 80)}` };
      case "image": case "input_image": case "document": case "input_file": case "input_audio":
        return { kind: "media", text: `${p.type} ${p.source?.media_type || p.source?.type || ""}` };
      default: return { kind: "json", value: p };
    }
  });
}

function messageTurn(m) {
  if (!m || typeof m !== "object") return { role: "?", blocks: blocksOf(m) };
  const blocks = blocksOf(m.content);
  for (const tc of m.tool_calls || []) blocks.push({ kind: "call", name: tc.function?.name ?? tc.name, id: tc.id, args: tc.function?.arguments ?? tc.arguments });
  if (m.function_call) blocks.push({ kind: "call", name: m.function_call.name, args: m.function_call.arguments });
  if (m.role === "tool") for (const b of blocks) if (b.kind === "text" && prettyText(b.text) !== b.text) Object.assign(b, { text: prettyText(b.text), cls: "mono" });
  return { role: m.role || "?", name: m.name, ref: m.tool_call_id, blocks };
}

function conversation(req, api) {
  const turns = [];
  if (!req || typeof req !== "object" || Array.isArray(req)) return turns;
  if (req.system != null) turns.push({ role: "system", blocks: blocksOf(req.system) });
  if (typeof req.instructions === "string") turns.push({ role: "system", name: "instructions", blocks: blocksOf(req.instructions) });
  if (Array.isArray(req.messages)) turns.push(...req.messages.map(messageTurn));
  if (req.prompt != null) turns.push({ role: "user", name: "prompt", blocks: blocksOf(req.prompt) });
  if (req.input != null) {
    if (api === "openai.embeddings" || !Array.isArray(req.input)) turns.push({ role: "user", name: "input", blocks: blocksOf(req.input) });
    else for (const it of req.input) {
      if (it?.type === "function_call") turns.push({ role: "assistant", blocks: [{ kind: "call", name: it.name, id: it.call_id, args: it.arguments }] });
      else if (it?.type === "function_call_output") turns.push({ role: "tool", ref: it.call_id, blocks: blocksOf(it.output) });
      else if (it?.role || it?.type === "message") turns.push(messageTurn(it));
      else turns.push({ role: it?.type || "item", blocks: [{ kind: "json", value: it }] });
    }
  }
  return turns;
}

function blockEl(b) {
  switch (b.kind) {
    case "text": return h("div", { class: `text ${b.cls || ""}` }, b.text ?? "");
    case "call": return h("div", { class: "tool" },
      h("div", { class: "tool-head" }, "→ tool call ", h("code", null, b.name ?? "?"), b.id ? h("span", { class: "muted" }, ` ${b.id}`) : null),
      h("pre", null, prettyText(b.args ?? "")));
    case "result": return h("div", { class: `tool result${b.error ? " err" : ""}` },
      h("div", { class: "tool-head" }, b.error ? "← tool error " : "← tool result ", b.id ? h("span", { class: "muted" }, b.id) : null),
      b.blocks.map(blockEl));
    case "media": return h("div", { class: "media muted" }, `[${b.text.trim()}]`);
    default: return h("pre", null, JSON.stringify(b.value, null, 2));
  }
}

function turnEl(t, extra) {
  const role = String(t.role);
  const el = h("article", { class: `turn role-${role.replace(/[^a-z]/gi, "")} ${extra?.cls || ""}` },
    h("header", null, h("strong", null, role), t.name ? ` · ${t.name}` : "", t.ref ? h("span", { class: "muted" }, ` · ${t.ref}`) : "",
      extra?.note ? h("span", { class: "muted" }, ` · ${extra.note}`) : ""),
    t.blocks.map(blockEl));
  if (t.blocks.some((b) => b.kind === "text" && (b.text || "").length > 3000)) {
    el.classList.add("long");
    el.append(h("button", { type: "button", class: "link", onclick: (e) => { el.classList.remove("long"); e.target.remove(); } }, "Show all"));
  }
  return el;
}

// Reassembled text of an SSE stream, fed incrementally (OpenAI chat/completions, Anthropic, Responses).
function sseText() {
  let buf = "";
  return (chunk) => {
    buf += chunk;
    const lines = buf.split(/\r?\n/);
    buf = lines.pop();
    let out = "";
    for (const line of lines) {
      if (!line.startsWith("data:")) continue;
      const p = parseJSON(line.slice(5).trim());
      const j = p && p.value;
      if (!j || typeof j !== "object") continue;
      const c = j.choices?.[0];
      const piece = c ? c.delta?.content ?? c.text : j.type === "content_block_delta" ? j.delta?.text ?? j.delta?.thinking
        : j.type === "response.output_text.delta" ? j.delta : null;
      if (typeof piece === "string") out += piece;
    }
    return out;
  };
}

// ------------------------------------------------------------------ the detail view

function kv(rows) {
  return h("dl", { class: "kv" }, rows.filter(([, v]) => v != null && v !== "").map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}
function headersEl(bin) {
  if (!bin) return h("p", { class: "muted" }, "Not available.");
  return [h("code", { class: "start" }, bin.start),
    h("table", { class: "headers" }, h("tbody", null, bin.headers.map(([k, v]) =>
      h("tr", null, h("th", { scope: "row" }, k), h("td", { class: /^<redacted>/.test(v) ? "redacted" : null }, v)))))];
}
const section = (title, open, ...content) => h("details", { class: "section", open }, h("summary", null, title), ...content);

async function openDetail(id, quiet) {
  if (detail.abort) detail.abort.abort();
  const gen = ++detail.gen;
  detail.id = id;
  detail.tailing = false;
  $("#list-view").hidden = true;
  const view = $("#detail-view");
  view.hidden = false;
  if (!quiet) view.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  let doc, reqBin, respBin;
  for (let attempt = 0; !doc; attempt++) {
    try {
      doc = await getJSON(reqPath(id));
    } catch (e) { // a capture made a moment ago may not be indexed yet
      if (e.status === 404 && attempt < 10 && gen === detail.gen) { await sleep(300); continue; }
      if (gen === detail.gen) view.replaceChildren(backButton(), h("p", { class: "error" }, `Cannot open ${id}: ${e.message}`));
      return;
    }
  }
  const resp = doc.response || {}, meta = { ...(doc.request?.metadata || {}), ...(resp.metadata || {}) };
  const inflight = resp.completed_at == null && resp.error == null && doc.request?.error == null;
  [reqBin, respBin] = await Promise.all([
    fetchBin(id, "request").catch(() => null),
    inflight ? null : fetchBin(id, "response").catch(() => null),
  ]);
  if (gen !== detail.gen) return;
  renderDetail(view, doc, meta, inflight, reqBin, respBin);
  if (inflight) startTail(id, gen);
}

function backButton() {
  return h("button", { type: "button", class: "back", onclick: () => {
    if (detail.fromList) history.back();
    else { history.pushState(null, "", location.pathname + location.search); route(); }
  } }, "← All requests");
}

function renderDetail(view, doc, meta, inflight, reqBin, respBin) {
  const id = doc.id || meta.id, req = doc.request || {}, resp = doc.response || {};
  const llm = resp.llm || null, usage = llm?.usage || {};
  const error = resp.error ?? req.error;
  const started = meta.request_started_at;
  const total = resp.completed_at && started ? Date.parse(resp.completed_at) - Date.parse(started) : null;
  const reqBody = reqBin && decodeText(reqBin.body);
  const parsedReq = reqBody && !reqBin.partial ? parseJSON(reqBody) : null;
  const turns = conversation(parsedReq?.value, llm?.api);
  const curlOut = h("div", { class: "curl", hidden: true });

  let reply = null;
  if (inflight) {
    reply = turnEl({ role: "assistant", blocks: [] }, { cls: "reply live", note: "streaming…" });
    reply.append(h("div", { class: "text", id: "live-text", "aria-live": "off" }), h("p", { class: "muted", id: "live-info" }, "waiting for the response…"));
  } else if (llm && (llm.output_text || llm.tool_calls?.length)) {
    const blocks = llm.output_text ? [{ kind: "text", text: llm.output_text }] : [];
    for (const tc of llm.tool_calls || []) blocks.push({ kind: "call", name: tc.name, id: tc.id, args: tc.arguments });
    const note = [llm.response_model, llm.finish_reason && `finish: ${llm.finish_reason}`, llm.partial && "partial"].filter(Boolean).join(" · ");
    reply = turnEl({ role: "assistant", blocks }, { cls: `reply${llm.partial ? " partial" : ""}`, note: `reply${note ? " · " + note : ""}` });
  }

  const statusText = inflight ? "in flight" : `${meta.response_status_code ?? "—"} ${(meta.response_status || "").replace(/^\d+\s*/, "")}`;
  document.title = `${meta.method || ""} ${pathOf(meta.source_url)} · logproxy`;
  view.replaceChildren(...[
    h("div", { class: "toolbar" },
      backButton(),
      h("h2", null, h("span", { class: "method" }, meta.method || ""), " ", pathOf(meta.source_url) || id),
      h("span", { class: `badge ${inflight ? "inflight" : statusClass(meta.response_status_code)}${error != null ? " err" : ""}`, id: "detail-status" }, statusText),
      h("span", { class: "spacer" }),
      h("button", { type: "button", id: "copy-curl", onclick: () => copyCurl(id, meta, llm, curlOut) }, "Copy as curl"),
      h("a", { class: "button", href: withToken(reqPath(id, "/request")), target: "_blank" }, "Raw request"),
      h("a", { class: "button", href: withToken(reqPath(id, "/response")), target: "_blank" }, "Raw response")),
    curlOut,
    error != null ? h("p", { class: "banner error" }, `Error: ${error}`) : null,
    h("div", { class: "cards" },
      h("section", { class: "card" }, h("h3", null, "Request"), kv([
        ["ID", h("code", null, id)], ["Route", meta.route != null ? `${meta.route}  (${meta.pattern || ""})` : "none (no route matched)"],
        ["Proxy URL", meta.source_url], ["Target URL", meta.target_url], ["Client", meta.client_address],
        ["Started", fmtTime(started, true)], ["Upstream headers", meta.upstream_header_duration_ms != null ? `after ${fmtMs(meta.upstream_header_duration_ms)}` : null],
        ["Completed", resp.completed_at ? fmtTime(resp.completed_at, true) : inflight ? "in flight" : null],
        ["Duration", fmtMs(total)], ["Request bytes", fmtBytes(req.bytes_written)], ["Response bytes", fmtBytes(resp.bytes_written)],
        ["Encoding", [meta.request_content_encoding && `request ${meta.request_content_encoding}`, meta.response_content_encoding && `response ${meta.response_content_encoding}`].filter(Boolean).join(", ")],
        ["Flags", [resp.completed === false && !inflight && "incomplete", (req.truncated || resp.truncated) && "truncated", llm?.partial && "partial",
          (resp.decode_error || req.decode_error) && `decode error: ${resp.decode_error || req.decode_error}`].filter(Boolean).join(", ")],
      ])),
      llm ? h("section", { class: "card", id: "usage" }, h("h3", null, "LLM"), kv([
        ["API", llm.api], ["Model", llm.response_model && llm.response_model !== llm.model ? `${llm.model} → ${llm.response_model}` : llm.model],
        ["Stream", llm.stream == null ? null : llm.stream ? "yes" : "no"], ["Finish", llm.finish_reason],
        ["Input tokens", fmtInt(usage.input_tokens) + (usage.cached_input_tokens ? ` (${fmtInt(usage.cached_input_tokens)} cached)` : "")],
        ["Cache write", fmtInt(usage.cache_write_input_tokens)],
        ["Output tokens", fmtInt(usage.output_tokens) + (usage.reasoning_tokens ? ` (${fmtInt(usage.reasoning_tokens)} reasoning)` : "")],
        ["Total tokens", fmtInt(usage.total_tokens)], ["Cost", usage.cost != null ? String(usage.cost) : null],
        ["TTFB", fmtMs(llm.ttfb_ms)], ["TTFT", fmtMs(llm.ttft_ms)],
        ["Error", llm.error == null ? null : typeof llm.error === "string" ? llm.error : JSON.stringify(llm.error)],
      ])) : null),
    turns.length || reply ? section("Conversation", true, h("div", { class: "chat" }, turns.map((t) => turnEl(t)), reply)) : null,
    section("Request headers", false, headersEl(reqBin)),
    section("Request body", !turns.length, bodyEl(reqBin, "request")),
    section("Response headers", false, inflight ? h("p", { class: "muted" }, "Shown when the response has ended.") : headersEl(respBin)),
    section("Response body", !reply && !inflight, inflight ? h("p", { class: "muted" }, "Shown when the response has ended.") : bodyEl(respBin, "response")),
  ].filter(Boolean));
}

async function startTail(id, gen) {
  const text = $("#live-text"), info = $("#live-info");
  const ctrl = (detail.abort = new AbortController());
  detail.tailing = true;
  let bytes = 0, mode = null, raw = "";
  const feed = sseText(), dec = new TextDecoder();
  for (let attempt = 0; gen === detail.gen; attempt++) {
    try {
      const r = await api(reqPath(id, "/tail"), { signal: ctrl.signal });
      const reader = r.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== detail.gen) break;
        bytes += value.length;
        const chunk = dec.decode(value, { stream: true });
        mode = mode || (/^\s*$/.test(chunk) ? null : /^(data|event|id|retry)?:/.test(chunk.trimStart()) ? "sse" : "raw");
        if (mode === "sse") { const piece = feed(chunk); if (piece) text.append(piece); }
        else if (mode === "raw") { raw = (raw + chunk).slice(-65536); text.textContent = raw; }
        info.textContent = `${fmtBytes(bytes)} received`;
      }
      break;
    } catch (e) {
      if (e.name === "AbortError" || gen !== detail.gen) return;
      if (e.status !== 404 || attempt > 20) { info.textContent = `Live view unavailable: ${e.message}`; break; }
      await sleep(300); // the response stream has not started yet
    }
  }
  // The capture has ended: show the final detail once its metadata says so.
  for (let i = 0; i < 40 && gen === detail.gen; i++) {
    try {
      const doc = await getJSON(reqPath(id));
      if (doc.response?.completed_at != null || doc.response?.error != null) break;
    } catch { /* retry */ }
    await sleep(250);
  }
  if (gen === detail.gen) { detail.tailing = false; openDetail(id, true); }
}

// ------------------------------------------------------------------ copy as curl

const shq = (s) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
const SKIP = new Set(["host", "content-length", "x-proxy-path", "transfer-encoding", "connection", "x-decompression-error"]);

function secretVar(name, route, api) {
  name = name.toLowerCase();
  if (name === "cookie") return "COOKIE";
  if (name === "api-key") return "AZURE_OPENAI_API_KEY";
  if (name === "x-api-key" || /^anthropic/.test(api || "") || /anthropic|claude/i.test(route || "")) return "ANTHROPIC_API_KEY";
  if (name === "authorization" && route && /openrouter/i.test(route)) return "OPENROUTER_API_KEY";
  if (name === "authorization") return "OPENAI_API_KEY";
  return name.toUpperCase().replace(/[^A-Z0-9]/g, "_");
}

function curlCommand(bin, meta, llm) {
  const [method] = (bin.start || "").split(" ");
  const url = header(bin, "x-proxy-path") || meta.source_url;
  const parts = [], notes = [];
  const hasBody = bin.body.length > 0;
  if (method === "HEAD") parts.push("--head");
  else if (method && !((method === "GET" && !hasBody) || (method === "POST" && hasBody))) parts.push(`-X ${shq(method)}`);
  for (const [k, v] of bin.headers) {
    const lower = k.toLowerCase();
    if (SKIP.has(lower)) continue;
    if (lower === "accept-encoding") { if (!/^identity$/i.test(v)) parts.push("--compressed"); continue; }
    if (/^<redacted>/.test(v)) { // a secret: the user supplies it through a variable
      const name = secretVar(k, meta.route, llm?.api);
      notes.push(`${k} was redacted in the capture: export ${name}=… before running it.`);
      const scheme = lower === "authorization" || lower === "proxy-authorization" ? "Bearer " : "";
      parts.push(`-H "${k.replace(/[\\"$`]/g, "\\$&")}: ${scheme}\${${name}:?redacted in the capture, export it first}"`);
    } else parts.push(`-H ${shq(`${k}: ${v}`)}`);
  }
  if (hasBody) {
    const text = decodeText(bin.body);
    if (text != null && !text.includes("\0")) parts.push(`--data-raw ${shq(text)}`);
    else { notes.push("The body is binary: save it as body.bin (the raw request without its header block)."); parts.push("--data-binary @body.bin"); }
  }
  if (llm?.stream) parts.push("--no-buffer");
  return { cmd: [`curl ${shq(url)}`, ...parts].join(" \\\n  "), notes };
}

async function copyCurl(id, meta, llm, out) {
  let cmd, notes;
  try { ({ cmd, notes } = curlCommand(await fetchBin(id, "request", 0), meta, llm)); } catch (e) {
    out.hidden = false;
    out.replaceChildren(h("p", { class: "error" }, `Cannot build the command: ${e.message}`));
    return;
  }
  const status = h("span", { class: "muted", role: "status" });
  const area = h("textarea", { readonly: true, rows: Math.min(20, cmd.split("\n").length + 1), spellcheck: "false", "aria-label": "curl command", id: "curl-text" });
  area.value = cmd;
  out.hidden = false;
  out.replaceChildren(h("div", { class: "curl-head" }, h("strong", null, "curl"), " ", status,
    h("button", { type: "button", class: "link", onclick: () => { out.hidden = true; } }, "Close")),
    ...notes.map((n) => h("p", { class: "note" }, n)), area);
  try { await navigator.clipboard.writeText(cmd); status.textContent = "copied to the clipboard"; } catch {
    area.select();
    status.textContent = document.execCommand("copy") ? "copied to the clipboard" : "select it and copy it";
  }
}

// ------------------------------------------------------------------ routing and start

function route() {
  const m = /^#\/requests\/([^/?#]+)/.exec(location.hash);
  if (m) {
    const id = decodeURIComponent(m[1]);
    return id === detail.id && !$("#detail-view").hidden ? undefined : openDetail(id);
  }
  if (detail.abort) detail.abort.abort();
  detail.id = null;
  detail.gen++;
  detail.fromList = false;
  $("#detail-view").hidden = true;
  $("#detail-view").replaceChildren();
  document.title = "logproxy";
  $("#list-view").hidden = false;
}

function start() {
  $("#auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const p = new URLSearchParams(location.search);
    p.set("token", e.target.elements.token.value);
    location.search = p.toString();
  });
  readFiltersFromURL();
  const form = $("#filters");
  let typing = null;
  form.addEventListener("submit", (e) => { e.preventDefault(); applyFilters(); });
  form.addEventListener("change", (e) => { if (e.target.tagName === "SELECT") applyFilters(); });
  form.addEventListener("input", (e) => {
    if (e.target.tagName !== "INPUT") return;
    clearTimeout(typing);
    typing = setTimeout(applyFilters, 350);
  });
  form.addEventListener("reset", () => setTimeout(applyFilters));
  $("#home").addEventListener("click", (e) => { e.preventDefault(); history.pushState(null, "", location.pathname + location.search); route(); });
  $("#rows").addEventListener("click", (e) => {
    const tr = e.target.closest("tr");
    if (!tr || e.target.closest("a")) { if (tr) detail.fromList = true; return; }
    detail.fromList = true;
    location.hash = `#/requests/${tr.dataset.id}`;
  });
  $("#more").addEventListener("click", () => loadList(false));
  new IntersectionObserver((es) => { if (es.some((e) => e.isIntersecting) && state.cursor) loadList(false); }, { rootMargin: "300px" }).observe($("#more"));
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, textarea, select")) return;
    if (e.key === "/") { e.preventDefault(); form.elements.q.focus(); }
    else if (e.key === "Escape" && detail.id) $(".back")?.click();
  });
  window.addEventListener("hashchange", route);
  const top = document.querySelector("header.top");
  new ResizeObserver(() => document.documentElement.style.setProperty("--hdr", `${top.offsetHeight}px`)).observe(top);
  connectEvents();
  setTimeout(firstList, 2000); // events unavailable or slow: list anyway
  getJSON("/api/facets").then((f) => { // route and model suggestions
    for (const r of f.routes || []) state.facets.routes.add(r);
    if (f.unmatched) state.facets.routes.add("-");
    for (const m of f.models || []) state.facets.models.add(m);
    updateEmpty();
  }, () => {});
  route();
}
start();
