"use strict";
// Helpers shared by every tab. Text from the run is LLM- and tool-written: it only ever reaches the
// page through textContent (el() below) or DOM properties, never through innerHTML.

const INDEX = JSON.parse(document.getElementById("index").textContent);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "data") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "style") node.style.cssText = value;
      else if (key in node) node[key] = value;
      else node.setAttribute(key, value);
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function clear(node, ...children) { node.replaceChildren(); node.append(...children.flat(Infinity).filter(c => c != null && c !== false)); return node; }
function fmt(n) { return typeof n === "number" ? n.toLocaleString("en-US") : (n ?? ""); }
function score(s) { return typeof s === "number" ? s.toFixed(2) : "–"; }
function badge(text, cls, title) { return el("span", { class: "badge " + (cls || ""), title }, text); }

function keptBadge(k) {
  if (k === true) return badge("kept", "ok");
  if (k === false) return badge("dropped", "bad");
  return badge("not judged", "muted");
}

function json(value, indent = 1) {
  try { return JSON.stringify(value, null, indent); } catch (e) { return String(value); }
}

function pre(value, cls) { return el("pre", { class: cls || "" }, typeof value === "string" ? value : json(value)); }

// A value of a field this viewer does not know: shown as text, or as JSON when it is structured.
function generic(value) {
  if (value === null || value === undefined) return el("span", { class: "muted" }, "null");
  if (typeof value === "object") return pre(value, "generic");
  return el("span", null, String(value));
}

function fieldTable(obj, skip) {
  const rows = Object.entries(obj || {}).filter(([k]) => !(skip && skip.has(k)));
  if (!rows.length) return null;
  return el("table", { class: "kv" }, rows.map(([k, v]) => el("tr", null, el("th", null, k), el("td", null, generic(v)))));
}

function section(title, body, open = true, extra) {
  return el("details", { class: "sect", open }, el("summary", null, title, extra ? el("span", { class: "muted" }, " ", extra) : null), body);
}

// gzip'd JSON blobs in <script type="application/gzip+base64"> elements, inflated on first use.
const blobCache = new Map();
function blob(id) {
  if (!blobCache.has(id)) blobCache.set(id, whenParsed().then(() => inflate(document.getElementById(id).textContent)));
  return blobCache.get(id);
}
async function inflate(base64) {
  const binary = atob(base64.trim());
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}
// The chunks follow the script in the document: a click during parsing waits for them.
function whenParsed() {
  return document.readyState === "loading"
    ? new Promise(resolve => document.addEventListener("DOMContentLoaded", resolve, { once: true }))
    : Promise.resolve();
}
async function trajectoryDetail(i) {
  const size = INDEX.chunk;
  const details = await blob("chunk-" + Math.floor(i / size));
  return details[i % size];
}
const tables = () => blob("tables");

// A pager over a filtered list: renders one page of rows only, however long the list.
function pager(container, pageSize, renderRow, onPage) {
  let items = [], page = 0;
  const info = el("span", { class: "muted" });
  const prev = el("button", { type: "button", onclick: () => show(page - 1) }, "‹ prev");
  const next = el("button", { type: "button", onclick: () => show(page + 1) }, "next ›");
  const controls = el("div", { class: "pager" }, prev, info, next);
  function show(p) {
    const pages = Math.max(1, Math.ceil(items.length / pageSize));
    page = Math.max(0, Math.min(p, pages - 1));
    const start = page * pageSize;
    clear(container, items.slice(start, start + pageSize).map(renderRow));
    info.textContent = items.length ? `${fmt(start + 1)}–${fmt(Math.min(start + pageSize, items.length))} of ${fmt(items.length)} · page ${page + 1}/${pages}` : "none match";
    prev.disabled = page === 0; next.disabled = page >= pages - 1;
    if (onPage) onPage();
  }
  return {
    controls,
    set(list, keepPage) { items = list; show(keepPage ? page : 0); },
    showIndex(index) { show(Math.floor(index / pageSize)); },
    items: () => items,
  };
}

function options(select, values, allLabel) {
  clear(select, el("option", { value: "" }, allLabel), values.map(([v, n]) => el("option", { value: v }, n === undefined ? v : `${v} (${fmt(n)})`)));
}

function counts(rows, pick) {
  const m = new Map();
  for (const r of rows) for (const v of [].concat(pick(r))) if (v !== "" && v != null) m.set(v, (m.get(v) || 0) + 1);
  return [...m.entries()].sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0])));
}
